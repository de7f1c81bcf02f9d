"""What the command groups share: stopping on a signal, and numbers that say what to give."""

from __future__ import annotations

import os
import signal

import click
import pytest

from hokusai_mlflow_plugin.cli.common import NUMBER, stop_on_signals, table


@pytest.fixture
def saved_handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_signal_asks_to_stop_and_a_second_one_stops_at_once(saved_handlers):
    stop = stop_on_signals()
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.wait(5)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        signal.sigtimedwait([], 0.5)  # let the handler run


def test_a_number_that_is_not_one_says_what_to_give():
    assert NUMBER.convert("0.82", None, None) == 0.82
    with pytest.raises(click.BadParameter, match="'abc' is not a number: give a decimal such as 0.82."):
        NUMBER.convert("abc", None, None)


def test_a_table_pads_every_column_but_the_last():
    assert table(("A", "REASON"), [("long value", "x"), ("v", "a long reason")]).splitlines() == [
        "A           REASON", "long value  x", "v           a long reason",
    ]


def test_the_commands_service_waits_for_the_receivers_outcome_tags_as_configured(monkeypatch, tmp_path):
    """``hokusai reconcile`` (which ``hokusai up`` runs beside the receiver, with its environment)
    reads HOKUSAI_OUTCOME_TAG_LINGER as the receiver does: its sweep leaves a decision's outcome
    tags to the receiver for that linger plus 10 s, not the default 30 s."""
    from hokusai_mlflow_plugin.cli.common import Context
    from hokusai_mlflow_plugin.registration.reconcile import retag_after

    monkeypatch.setenv("HOKUSAI_OUTCOME_TAG_LINGER", "45")
    monkeypatch.setenv("HOKUSAI_DATABASE_URL", f"sqlite:///{tmp_path / 'hokusai.db'}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    service = Context(None, {}, False).service()
    assert service.outcome_tags.linger == 45.0
    assert retag_after(service) == 55.0
