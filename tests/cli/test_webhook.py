"""``hokusai webhook serve``: the receiver under gunicorn with the CLI's settings, and what it says
when a setting it needs is missing."""

from __future__ import annotations

import os
import sys

import requests
from click.testing import CliRunner

from hokusai_mlflow_plugin.cli import main
from hokusai_mlflow_plugin.db.migrate import upgrade
from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port


def test_serve_without_a_secret_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("HOKUSAI_WEBHOOK_SECRET", raising=False)
    result = CliRunner().invoke(main, ["--database-url", f"sqlite:///{tmp_path / 't.db'}", "--tracking-uri", "http://127.0.0.1:9",
                                       "webhook", "serve"])
    assert result.exit_code == 1
    assert "HOKUSAI_WEBHOOK_SECRET is not set" in result.output and "Traceback" not in result.output


def test_serve_runs_the_receiver_under_gunicorn_with_the_cli_settings(tmp_path):
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    upgrade(url)
    port = free_port()
    env = {**os.environ, "HOKUSAI_WEBHOOK_SECRET": "serve-test-secret", "HOKUSAI_HOME": str(tmp_path)}
    env.pop("HOKUSAI_DATABASE_URL", None)
    server = ManagedProcess("hokusai webhook serve", [
        sys.executable, "-m", "hokusai_mlflow_plugin", "--database-url", url, "--tracking-uri", "http://127.0.0.1:9",
        "webhook", "serve", "--port", str(port), "--workers", "1",
    ], env, tmp_path / "serve.log").start()
    try:
        server.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        # /ready reads the database that --database-url named: it is migrated, so ready
        assert requests.get(f"http://127.0.0.1:{port}/ready", timeout=5).json() == {"status": "ready"}
        unsigned = requests.post(f"http://127.0.0.1:{port}/webhooks/mlflow", data=b"{}", timeout=5)
        assert unsigned.status_code == 401
    finally:
        server.stop()
    assert "gunicorn" in (tmp_path / "serve.log").read_text().lower()


def test_serve_with_a_misconfigured_sink_says_so_before_starting(tmp_path, monkeypatch):
    monkeypatch.setenv("HOKUSAI_WEBHOOK_SECRET", "serve-test-secret")
    monkeypatch.setenv("HOKUSAI_EVENT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    monkeypatch.delenv("HOKUSAI_EVENT_WEBHOOK_SECRET", raising=False)
    result = CliRunner().invoke(main, ["--database-url", f"sqlite:///{tmp_path / 't.db'}", "--tracking-uri", "http://127.0.0.1:9",
                                       "webhook", "serve"])
    assert result.exit_code == 1
    assert "HOKUSAI_EVENT_WEBHOOK_SECRET is not" in result.output and "Traceback" not in result.output
