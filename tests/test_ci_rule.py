"""The CI rule of tests/conftest.py, run on small suites of its own (pytester): with ``CI`` set
true a skip fails, except one listed in ``MAY_SKIP_ON_CI`` for its platform; without it, a skip
is a skip."""

from __future__ import annotations

import pytest

import tests.conftest as conftest

SUITE = """
import pytest

def test_needs_redis():
    pytest.skip("Redis is not reachable at 127.0.0.1:6379; start it to run this test")

def test_on_another_platform():
    pytest.skip("reads /proc (Linux)")

@pytest.fixture
def browser():
    pytest.skip("chromium is missing")

def test_in_a_browser(browser):
    pass

@pytest.mark.skipif(True, reason="a marker's skip")
def test_marked():
    pass

@pytest.mark.xfail(reason="a known failure, not a skip")
def test_known_to_fail():
    assert False

def test_runs():
    pass
"""


@pytest.fixture
def suite(pytester, monkeypatch):
    pytester.makeconftest("from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport\n")
    pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setattr(conftest, "MAY_SKIP_ON_CI", (
        conftest.MaySkip("test_suite.py::test_on_another_platform", "reads /proc", "Linux only"),
        conftest.MaySkip("test_suite.py::test_needs_redis", "reads /proc", "allows another skip, not this one"),
    ))
    return pytester


@pytest.mark.parametrize("value", ["true", "1", "yes", "TRUE", "Yes"])
def test_under_ci_a_skip_fails_and_an_allowed_one_does_not(suite, monkeypatch, value):
    monkeypatch.setenv("CI", value)
    result = suite.runpytest("-rA")
    result.assert_outcomes(passed=1, skipped=1, failed=1, errors=2, xfailed=1)  # a fixture's or marker's skip: at setup
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_suite.py:*: reads /proc (Linux)"])
    result.stdout.fnmatch_lines([
        f"FAILED test_suite.py::test_needs_redis - skipped with CI={value}, and CI runs every test: Redis is not reachable*"])
    failed = {r.nodeid.split("::")[1] for r in result.reprec.getreports("pytest_runtest_logreport") if r.failed}
    assert failed == {"test_needs_redis", "test_in_a_browser", "test_marked"}


@pytest.mark.parametrize("value", [None, "", "false", "0", "no"])
def test_without_ci_a_skip_is_a_skip(suite, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    suite.runpytest().assert_outcomes(passed=1, skipped=4, xfailed=1)


def test_under_ci_a_module_skipped_at_collection_fails(pytester, monkeypatch):
    pytester.makeconftest("from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport\n")
    pytester.makepyfile(test_gone="import pytest\npytest.skip('no GPU here', allow_module_level=True)\n")
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest()
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*skipped with CI=true, and CI runs every test: no GPU here*"])
    monkeypatch.setenv("CI", "false")
    pytester.runpytest().assert_outcomes(skipped=1)


def test_under_ci_a_skip_on_an_xdist_worker_fails_too(suite, monkeypatch):
    """``make test`` runs the suite on pytest-xdist's workers: a skip there reaches the controller
    as a failure, and a module skipped at its collection as an error. (A worker imports the rule
    afresh: the platform's skip is allowed there by the conftest itself; ``suite`` restores it.)"""
    suite.makeconftest(
        "import tests.conftest as rule\n"
        "from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport\n"
        "rule.MAY_SKIP_ON_CI = (rule.MaySkip('test_suite.py::test_on_another_platform', 'reads /proc', 'Linux only'),)\n")
    suite.makepyfile(test_gone="import pytest\npytest.skip('no GPU here', allow_module_level=True)\n")
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-n", "2", "-rA")
    assert result.ret != 0
    result.assert_outcomes(passed=1, skipped=1, failed=1, errors=3, xfailed=1)
    result.stdout.fnmatch_lines(["*FAILED test_suite.py::test_needs_redis - skipped with CI=true, and CI runs every test*"])
    result.stdout.fnmatch_lines(["*ERROR test_gone.py - skipped with CI=true, and CI runs every test: no GPU here*"])
