"""``hokusai gateway serve``: what it needs, said before it starts, and the gateway it runs."""

from __future__ import annotations

import os
import sys

import requests
from click.testing import CliRunner

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.cli import main
from hokusai_mlflow_plugin.db.migrate import upgrade
from hokusai_mlflow_plugin.db.session import session_factory
from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port


def test_serve_without_mlflow_says_what_to_set(tmp_path, monkeypatch):
    for var in ("MLFLOW_TRACKING_URI", "HOKUSAI_MLFLOW_INTERNAL_URI", "HOKUSAI_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(main, ["--database-url", f"sqlite:///{tmp_path / 't.db'}", "gateway", "serve"])
    assert result.exit_code == 1
    assert "--internal-uri" in result.output and "MLFLOW_TRACKING_URI" in result.output and "Traceback" not in result.output


def test_serve_with_a_bad_rate_limit_says_so_before_starting(tmp_path, monkeypatch):
    monkeypatch.setenv("HOKUSAI_GATEWAY_RATE_LIMIT", "lots")
    result = CliRunner().invoke(main, ["--database-url", f"sqlite:///{tmp_path / 't.db'}", "gateway", "serve", "--internal-uri", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "HOKUSAI_GATEWAY_RATE_LIMIT must read like '1200/minute'" in result.output and "Traceback" not in result.output


def test_serve_runs_the_gateway_under_gunicorn_on_the_embedded_default(stack_postgres, tmp_path):
    """SQLite keys (checked on every request), a real MLflow behind it."""
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    upgrade(url)
    with session_factory(url).begin() as s:
        key = keys.create(s, "cli", ("read",)).key
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOKUSAI_")} | {"HOKUSAI_HOME": str(tmp_path)}
    server = ManagedProcess("hokusai gateway serve", [
        sys.executable, "-m", "hokusai_mlflow_plugin", "--database-url", url, "gateway", "serve",
        "--port", str(port), "--internal-uri", stack_postgres.mlflow.url,
    ], env, tmp_path / "serve.log").start()
    search = f"http://127.0.0.1:{port}/mlflow/api/2.0/mlflow/experiments/search"
    try:
        server.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        assert requests.get(search, params={"max_results": 1}, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 200
        assert requests.get(search, params={"max_results": 1}, timeout=10).status_code == 401
        with session_factory(url).begin() as s:
            keys.revoke(s, key[3:11])
        refused = requests.get(search, params={"max_results": 1}, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    finally:
        server.stop()
    log = (tmp_path / "serve.log").read_text()
    assert "gunicorn" in log.lower() and "GunicornUVLoopWebWorker" in log
    assert key not in log and key[12:] not in log  # the secret never reaches a log line
