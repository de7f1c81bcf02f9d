"""``hokusai reconcile``: the sweep gives up on an unreachable MLflow in seconds, as the receiver
does, unless the operator chose MLflow's retries himself."""

from __future__ import annotations

import os

from click.testing import CliRunner

from hokusai_mlflow_plugin.cli import main
from hokusai_mlflow_plugin.registration import reconcile

NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing answers
VARIABLES = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")


def unset(monkeypatch, *names):
    """Unset, and put back as they were after the test (the command sets them for its process)."""
    for name in names:
        monkeypatch.setenv(name, "recorded")  # makes monkeypatch remember the original, present or not
        monkeypatch.delenv(name)


def test_the_sweep_worker_fails_fast_on_mlflow(tmp_path, monkeypatch, no_hokusai_settings):
    seen = {}
    unset(monkeypatch, *VARIABLES)
    monkeypatch.setattr(reconcile, "run_forever", lambda service, interval, stop: seen.update(
        {k: os.environ.get(k) for k in VARIABLES}))
    result = CliRunner().invoke(main, ["--database-url", f"sqlite:///{tmp_path / 't.db'}", "--tracking-uri", NOWHERE,
                                       "reconcile", "--interval", "5"])
    assert result.exit_code == 0, result.output
    assert seen == {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def test_the_operators_own_retries_win(tmp_path, monkeypatch, no_hokusai_settings):
    seen = {}
    unset(monkeypatch, *VARIABLES)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    monkeypatch.setattr(reconcile, "run_forever", lambda service, interval, stop: seen.update(
        {k: os.environ.get(k) for k in VARIABLES}))
    CliRunner().invoke(main, ["--database-url", f"sqlite:///{tmp_path / 't.db'}", "--tracking-uri", NOWHERE,
                              "reconcile", "--interval", "5"])
    assert seen == {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
