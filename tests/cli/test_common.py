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
