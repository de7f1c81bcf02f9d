"""Fixtures every test module reuses: real MLflow servers (SQLite and PostgreSQL) and a capture
receiver for their webhooks; and the CI rule: with ``CI`` set true, a skip is a failure."""

from __future__ import annotations

import os
import shutil
import sqlite3
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from hokusai_mlflow_plugin.db.migrate import upgrade
from hokusai_mlflow_plugin.db.session import dispose
from tests.harness import CaptureReceiver, MlflowServer, create_pg_database, drop_pg_database, on_ci

pytest_plugins = ("pytester",)  # tests/test_ci_rule.py runs pytest on the rule below

CAPTURE_SECRET = "capture-secret-for-tests"


# -- the CI rule: every test runs on CI ------------------------------------------------------------
# A test skips where what it needs is missing (PostgreSQL, Redis, Chromium, root for a network
# namespace): on a laptop that is a skip naming what to install; with CI set true (true, 1 or yes)
# it is a failure, so that a CI machine that lost a service cannot go green by running less. The one
# exception is a platform the test cannot run on, listed here with the words its skip says and why.


@dataclass(frozen=True)
class MaySkip:
    where: str  # a test id, or the start of one (a module)
    says: str  # words of the skip's reason: only that skip is allowed
    why: str  # the platform it cannot run on


MAY_SKIP_ON_CI: tuple[MaySkip, ...] = (
    MaySkip("tests/stack/test_process.py::", "reads /proc (Linux)", "the process tree is read from Linux's /proc"),
    MaySkip("tests/stack/test_process.py::test_free_port_is_outside_the_range_given_to_outgoing_connections",
            "no room below it", "a kernel whose ephemeral port range starts at or below 4096 leaves free_port() no "
            "range of its own (net.ipv4.ip_local_port_range)"),
)


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _fail_skip_on_ci(report, nodeid: str) -> None:
    if not report.skipped or hasattr(report, "wasxfail") or not on_ci():
        return
    reason = _skip_reason(report)
    if any(nodeid.startswith(may.where) and may.says in reason for may in MAY_SKIP_ON_CI):
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped with CI={os.environ['CI']}, and CI runs every test: {reason.removeprefix('Skipped: ')}. "
                       "Install or start what it needs on the CI machine; only a platform the test cannot run on may be "
                       "listed in MAY_SKIP_ON_CI (tests/conftest.py), with its reason.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip_on_ci(outcome.get_result(), item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module skipped as a whole at collection (``pytest.skip(allow_module_level=True)``)."""
    outcome = yield
    _fail_skip_on_ci(outcome.get_result(), collector.nodeid + "::")


def pytest_collection_modifyitems(items):
    """The ``slow`` tests first (each stays in its file's order otherwise): under pytest-xdist they
    start at once on every worker, and the many short tests fill in around them, instead of one
    worker still running a minute-long test at the end while the others are done. The same order
    on every worker (xdist requires it): a stable sort on the marker alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _clean_hokusai_env(monkeypatch):
    """Tests start with no Hokusai or MLflow variables from the developer's shell, and with no
    active MLflow experiment: ``mlflow.set_experiment`` is process-wide, and an experiment id of
    one test's server means nothing (or another experiment) on the next test's."""
    for var in ("HOKUSAI_TOKEN_ID", "HOKUSAI_METRIC", "HOKUSAI_BASELINE", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID",
                "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    mlflow.tracking.fluent._active_experiment_id = None
    yield
    mlflow.tracking.fluent._active_experiment_id = None
    for var in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        os.environ.pop(var, None)


@pytest.fixture(scope="session")
def capture():
    receiver = CaptureReceiver().start()
    yield receiver
    receiver.stop()


def _start_server(kind, backend_uri, workdir, capture):
    server = MlflowServer(backend_uri=backend_uri, workdir=workdir, kind=kind).start()
    client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
    client.create_webhook(
        name="capture",
        url=capture.url + "/capture",
        events=["model_version.created"],
        secret=CAPTURE_SECRET,
    )
    return server


@pytest.fixture(scope="session")
def mlflow_sqlite(tmp_path_factory, capture):
    workdir = tmp_path_factory.mktemp("mlflow-sqlite")
    server = _start_server("sqlite", f"sqlite:///{workdir / 'mlflow.db'}", workdir, capture)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_postgres(tmp_path_factory, capture):
    url = create_pg_database("hokusai_mlflow")
    workdir = tmp_path_factory.mktemp("mlflow-postgres")
    server = _start_server("postgresql", url, workdir, capture)
    yield server
    server.stop()
    drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def mlflow_server(request) -> MlflowServer:
    """Each test that takes it runs against both a SQLite- and a PostgreSQL-backed server."""
    return request.getfixturevalue(f"mlflow_{'sqlite' if request.param == 'sqlite' else 'postgres'}")


@pytest.fixture
def tracking(mlflow_server, monkeypatch) -> MlflowClient:
    """Point plain MLflow (fluent API and clients) at the test server, as a user's shell would."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    mlflow.set_tracking_uri(mlflow_server.url)
    yield MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    mlflow.end_run()


@pytest.fixture
def unique_name():
    return f"model-{uuid.uuid4().hex[:8]}"


# -- the registration stack: MLflow server -> webhook -> receiver -> token database ---------------


@pytest.fixture(scope="session")
def stack_sqlite(tmp_path_factory):
    from tests.live_stack import Stack

    workdir = tmp_path_factory.mktemp("stack-sqlite")
    server = MlflowServer(backend_uri=f"sqlite:///{workdir / 'mlflow.db'}", workdir=workdir, kind="sqlite").start()
    stack = Stack("sqlite", server, f"sqlite:///{workdir / 'hokusai.db'}").start()
    yield stack
    stack.stop()
    server.stop()


@pytest.fixture(scope="session")
def stack_postgres(tmp_path_factory):
    from tests.live_stack import Stack

    mlflow_url = create_pg_database("hokusai_stack_mlflow")
    # owned by a role of its own with a password, so that tests can check it never reaches a log
    tokens_url = create_pg_database("hokusai_stack_tokens", owner_password="stack-db-password")
    workdir = tmp_path_factory.mktemp("stack-postgres")
    server = MlflowServer(backend_uri=mlflow_url, workdir=workdir, kind="postgresql").start()
    stack = Stack("postgresql", server, tokens_url).start()
    yield stack
    stack.stop()
    server.stop()
    from hokusai_mlflow_plugin.db.session import dispose

    dispose(tokens_url)
    drop_pg_database(mlflow_url)
    drop_pg_database(tokens_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def stack(request, monkeypatch):
    """Each test that takes it runs on SQLite and on PostgreSQL (MLflow and token database alike),
    with plain MLflow in this process pointed at the stack's server."""
    s = request.getfixturevalue("stack_sqlite" if request.param == "sqlite" else "stack_postgres")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", s.mlflow.url)
    mlflow.set_tracking_uri(s.mlflow.url)
    yield s
    mlflow.end_run()


@pytest.fixture
def pg_stack(stack_postgres, monkeypatch):
    """The PostgreSQL stack alone, with plain MLflow in this process pointed at its server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack_postgres.mlflow.url)
    mlflow.set_tracking_uri(stack_postgres.mlflow.url)
    yield stack_postgres
    mlflow.end_run()


@pytest.fixture
def token_id():
    """A fresh token id per test, so tests on one database never see each other's tokens."""
    return f"TK-{uuid.uuid4().hex[:10].upper()}"


# -- a token database alone (no MLflow) ------------------------------------------------------------


# Each test's token database is a copy of one migrated once per session (per xdist worker): the
# migrations cost 0.2-0.5 s a database, a copy 0.01-0.1 s. tests/db/test_migrations.py still runs
# the migrations themselves on empty databases, and checks they build exactly the models' schema.


@pytest.fixture(scope="session")
def _migrated_pg_template():
    """A PostgreSQL token database migrated to head, that nobody connects to (a template)."""
    url = create_pg_database("hokusai_template")
    upgrade(url)
    dispose(url)  # CREATE DATABASE ... TEMPLATE refuses a template with connections
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="session")
def _migrated_sqlite_template(tmp_path_factory) -> Path:
    """A SQLite token database file migrated to head, checkpointed whole into its one file."""
    path = tmp_path_factory.mktemp("template") / "tokens.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    dispose(url)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.fixture
def pg_url(_migrated_pg_template):
    """A fresh, migrated token database on the local PostgreSQL, dropped afterwards."""
    url = create_pg_database("hokusai_tokens", template=_migrated_pg_template)
    yield url
    dispose(url)
    drop_pg_database(url)


@pytest.fixture
def sqlite_url(_migrated_sqlite_template, tmp_path):
    """A fresh, migrated SQLite token database (a copy of the session's migrated file)."""
    path = tmp_path / "tokens.db"
    shutil.copyfile(_migrated_sqlite_template, path)
    url = f"sqlite:///{path}"
    yield url
    dispose(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request):
    """A fresh, migrated token database: SQLite, then PostgreSQL."""
    yield request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def receiver_down(stack):
    """The stack's own receiver stopped, so only what the test drives decides a version. MLflow
    retries a refused delivery for about 8 s (urllib3, backoff 1, 2, 4 s): were the test to bring
    that receiver back for its own deliveries, a retry could land first. The test posts to the
    replica this fixture yields instead: the same app and database, on a port MLflow does not know
    (as a second replica behind a load balancer)."""
    stack.receiver.stop()
    replica = stack.replica()
    yield replica
    replica.release()
    stack.receiver.start()
