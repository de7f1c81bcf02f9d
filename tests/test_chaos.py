"""The chaos run of bench/chaos.py, short (about a minute; up to three on a loaded machine): registrations added while the receiver,
a relay, the reconcile worker, MLflow and PostgreSQL are SIGKILLed and restarted; then nothing
lost, nothing decided twice or wrongly, no 500, every forged delivery refused (RELIABILITY.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_chaos():
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # chaos.py imports benchlib beside it
    spec = importlib.util.spec_from_file_location("bench_chaos", BENCH / "chaos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def chaos():
    module = load_chaos()
    try:
        module.prerequisites()
    except module.MissingPrerequisite as e:
        pytest.skip(f"{e}; install PostgreSQL's server package (initdb, postgres) to run the chaos test")
    return module


@pytest.mark.slow
def test_nothing_lost_duplicated_or_500_under_kills(chaos):
    summary = chaos.run([
        "--registrations", "20", "--spread", "15", "--duration", "120", "--kill-interval", "0.5", "--pause", "0.8",
        "--clients", "4", "--settle-timeout", "120", "--seed", "7", "--quiet",
    ])
    report = chaos.report(summary)
    print(report)

    assert summary["ok"], report
    assert summary["not_started"] == 0 and summary["not_created"] == 0, report
    assert summary["lost_decisions"] == 0, report
    assert summary["unexpected_decisions"] == 0, report
    assert summary["duplicate_transitions"] == 0, report
    assert summary["events_lost"] == 0 and summary["unexpected_deliveries"] == 0, report
    assert summary["registered"] == summary["expected_registered"] > 0, report
    assert summary["rejected"] == summary["expected_rejected"] > 0, report
    assert summary["receiver_500s"] == 0 and summary["forger"]["answered_500"] == 0, report
    forger = summary["forger"]
    assert forger["answered"] > 0 and forger["refused"] == forger["answered"], report
    assert all(n >= 1 for n in summary["kills"].values()), report
    assert summary["consumer"]["answered_500"] > 0, report  # the consumer's failures were retried
