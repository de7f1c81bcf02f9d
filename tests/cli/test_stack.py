"""``hokusai up``, ``hokusai demo`` and ``hokusai webhook install``, as a user runs them: real
processes, real ports, a clean HOKUSAI_HOME."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from hokusai_mlflow_plugin.cli import main as cli
from hokusai_mlflow_plugin.stack.mlflow_server import server_command
from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port
from tests.harness import TEST_ENCRYPTION_KEY

ROOT = Path(__file__).resolve().parents[2]
HOKUSAI = [sys.executable, "-m", "hokusai_mlflow_plugin"]


def clean_env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "MLFLOW_"))}
    return {**env, "HOKUSAI_HOME": str(home), **extra}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    """Is any process of this group still running (zombies aside)?"""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp
            return True
    return False


@pytest.mark.slow
def test_readme_demo_command_exits_0_on_a_clean_home(tmp_path):
    """`make demo`, the README's first command, in this virtualenv (CI's is fresh), on a clean
    HOKUSAI_HOME: it runs `hokusai demo`."""
    home = tmp_path / "home"
    result = subprocess.run(["make", "--no-print-directory", "demo", f"VENV={sys.prefix}"], env=clean_env(home),
                            capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "is registered" in result.stdout and '"event_type": "token_ready_for_deploy"' in result.stdout
    assert "was rejected" in result.stdout and "below the baseline" in result.stdout
    assert oct((home / "secrets.json").stat().st_mode & 0o777) == "0o600"
    assert not (home / "up.json").exists()


@pytest.mark.slow
def test_up_serves_registers_refuses_a_second_and_stops_every_child(tmp_path):
    home = tmp_path / "home"
    mlflow_port, receiver_port, gateway_port = free_port(), free_port(), free_port()
    env = clean_env(home)
    up = subprocess.Popen(
        [*HOKUSAI, "up", "--mlflow-port", str(mlflow_port), "--receiver-port", str(receiver_port), "--gateway-port", str(gateway_port),
         "--reconcile-interval", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, start_new_session=True,
    )
    output = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line and up.poll() is not None:
                break
            output.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = "".join(output)
        assert "Ctrl-C stops everything" in text, text
        assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{mlflow_port}" in text
        assert requests.get(f"http://127.0.0.1:{mlflow_port}/health", timeout=5).status_code == 200
        assert requests.get(f"http://127.0.0.1:{receiver_port}/ready", timeout=5).json() == {"status": "ready"}
        children = json.loads((home / "up.json").read_text())["children"]
        assert set(children) == {"mlflow", "receiver", "gateway", "relay", "reconcile"}
        with closing(sqlite3.connect(home / "mlflow.db")) as mlflow_db:  # the receiver reads it beside MLflow's commits
            assert mlflow_db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        # the gateway: MLflow for a client with a key, and for no one without
        assert f"MLflow gateway:         http://127.0.0.1:{gateway_port}/mlflow" in text
        created = subprocess.run([*HOKUSAI, "apikey", "create", "laptop", "--scope", "read", "--json"], env=env,
                                 capture_output=True, text=True, cwd=ROOT)
        key = json.loads(created.stdout)["key"]
        search = f"http://127.0.0.1:{gateway_port}/mlflow/api/2.0/mlflow/experiments/search"
        assert requests.get(search, params={"max_results": 1}, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 200
        assert requests.get(search, params={"max_results": 1}, timeout=10).status_code == 401
        # the MLflow UI through the gateway: no session sends a person to the console's sign-in, and back
        ui = f"http://127.0.0.1:{gateway_port}/mlflow/"
        assert f"MLflow UI, signed in:   {ui}" in text
        login = f"http://127.0.0.1:{receiver_port}/console/login"
        page = requests.get(ui, allow_redirects=False, timeout=10)
        assert page.status_code == 302 and page.headers["Location"].startswith(login + "?next=")
        person = requests.Session()
        token = re.search(r'name="csrf_token" value="([^"]+)"', person.get(page.headers["Location"], timeout=10).text).group(1)
        back = person.post(login, data={"key": key, "next": ui, "csrf_token": token}, allow_redirects=False, timeout=10)
        assert back.status_code == 302 and back.headers["Location"] == ui
        assert person.get(ui, allow_redirects=False, timeout=10).status_code == 200

        second = subprocess.run([*HOKUSAI, "up", "--mlflow-port", str(free_port()), "--receiver-port", str(free_port()),
                                 "--gateway-port", str(free_port())],
                                env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert second.returncode == 1 and "already runs" in second.stderr, second.stderr

        # a model sent from a separate process, as a data scientist would
        assert subprocess.run([*HOKUSAI, "token", "create", "xray", "--metric", "auroc", "--baseline", "0.82"],
                              env=env, capture_output=True, text=True, cwd=ROOT).returncode == 0
        train = textwrap.dedent("""
            import mlflow
            from tests.mlflow_helpers import train_and_register
            print(*train_and_register("xray-model", {"auroc": 0.91}))
        """)
        trained = subprocess.run([sys.executable, "-c", train], capture_output=True, text=True, timeout=180, cwd=ROOT,
                                 env={**env, "HOKUSAI_TOKEN_ID": "XRAY", "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}"})
        assert trained.returncode == 0, trained.stderr
        run_id, version = trained.stdout.split()[-2:]
        token = {}
        for _ in range(150):
            token = json.loads(subprocess.run([*HOKUSAI, "token", "show", "XRAY", "--json"], env=env,
                                              capture_output=True, text=True, cwd=ROOT).stdout)
            if token["status"] == "registered":
                break
            time.sleep(0.2)
        assert token["status"] == "registered" and token["mlflow_run_id"] == run_id and token["model_version"] == version
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        finally:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()
            up.stdout.close()
    assert up.returncode == 0
    # Each child leads its own process group (its workers included): every group must be empty.
    deadline = time.monotonic() + 10
    while any(group_alive(pid) for pid in children.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [name for name, pid in children.items() if group_alive(pid)], "processes left behind"
    assert not (home / "up.json").exists()


def test_up_says_when_a_port_is_taken(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["up", "--mlflow-port", str(port), "--receiver-port", str(free_port()), "--gateway-port", str(free_port())],
                                    env={"HOKUSAI_HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert f"Port {port}" in result.output and "--mlflow-port" in result.output


# -- webhook install -------------------------------------------------------------------------------


def test_webhook_install_on_the_stack(stack_sqlite):
    result = CliRunner().invoke(cli, ["--tracking-uri", stack_sqlite.mlflow.url, "webhook", "install",
                                      "--url", stack_sqlite.receiver.url + "/webhooks/mlflow",
                                      "--secret", "receiver-secret-for-tests", "--name", "installed-by-cli"])
    assert result.exit_code == 0, result.output
    assert "Created MLflow webhook 'installed-by-cli'" in result.output
    assert "test delivery reached the receiver" in result.output
    again = CliRunner().invoke(cli, ["--tracking-uri", stack_sqlite.mlflow.url, "webhook", "install",
                                     "--url", stack_sqlite.receiver.url + "/webhooks/mlflow",
                                     "--secret", "receiver-secret-for-tests", "--name", "installed-by-cli"])
    assert again.exit_code == 0 and "Updated" in again.output
    hooks = [w for w in stack_sqlite.client.list_webhooks() if w.name == "installed-by-cli"]
    assert len(hooks) == 1
    stack_sqlite.client.delete_webhook(hooks[0].webhook_id)


def plain_server_env(**webhook_settings: str) -> dict:
    """An MLflow server's environment with MLflow's own webhook defaults, but for ``webhook_settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_WEBHOOK_", "MLFLOW_TRACKING"))}
    return {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **webhook_settings}


@pytest.fixture(scope="module")
def strict_mlflow(tmp_path_factory):
    """An MLflow server with MLflow's default webhook policy (https only, public addresses only)."""
    workdir = tmp_path_factory.mktemp("strict-mlflow")
    port = free_port()
    env = plain_server_env(MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY=TEST_ENCRYPTION_KEY)
    process = ManagedProcess("strict mlflow", server_command(f"sqlite:///{workdir / 'm.db'}", workdir / "a", "127.0.0.1", port),
                             env, workdir / "log").start()
    process.wait_http(f"http://127.0.0.1:{port}/health", timeout=120)
    yield f"http://127.0.0.1:{port}"
    process.stop()


@pytest.mark.parametrize(
    "url,variable",
    [("http://127.0.0.1:8787/webhooks/mlflow", "MLFLOW_WEBHOOK_ALLOWED_SCHEMES"),
     ("https://127.0.0.1:8787/webhooks/mlflow", "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS")],
)
def test_webhook_install_names_the_mlflow_variable_to_set(strict_mlflow, url, variable):
    result = CliRunner().invoke(cli, ["--tracking-uri", strict_mlflow, "webhook", "install", "--url", url, "--secret", "s"])
    assert result.exit_code == 1
    assert variable in result.output and "Traceback" not in result.output


def test_webhook_install_after_a_restart_without_an_encryption_key_names_the_variable(tmp_path, capture):
    """MLflow without MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY makes a new key at every start: after a
    restart it cannot read the secrets it stored, and its webhooks API answers 500 with no message.
    The command says what to set instead of "MLflow did not answer"."""
    env = plain_server_env(MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https", MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true")
    for start in ("first", "restart"):  # the same database; the port need not be the same
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        install = ["--tracking-uri", url, "webhook", "install", "--url", capture.url + "/no-key", "--secret", "s"]
        process = ManagedProcess(f"mlflow without a key ({start})", server_command(f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "a", "127.0.0.1", port),
                                 env, tmp_path / f"{start}.log").start()
        try:
            process.wait_http(url + "/health", timeout=120)
            result = CliRunner().invoke(cli, install, env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
        finally:
            process.stop()
        if start == "first":  # it works, until the server restarts
            assert result.exit_code == 0 and "test delivery reached the receiver" in result.output, result.output
    assert result.exit_code == 1, result.output
    assert "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY" in result.output and "webhooks table" in result.output
    assert "Traceback" not in result.output


def test_webhook_install_tells_a_server_error_from_a_connection_failure_and_an_empty_message():
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    from hokusai_mlflow_plugin.mlflow_io import webhooks
    from hokusai_mlflow_plugin.core.errors import MlflowUnavailable

    class Client:
        def __init__(self, error):
            self.error = error

        def list_webhooks(self, **kwargs):
            raise self.error

    def install(error):
        return webhooks.install(Client(error), "https://h.example/hook", "s")

    server_errors = [RestException({"error_code": "INTERNAL_ERROR", "message": ""}),
                     MlflowException("API request to /webhooks failed: ResponseError('too many 500 error responses')")]
    for error in server_errors:
        with pytest.raises(webhooks.WebhookInstallError, match="MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"):
            install(error)
    not_answering = [MlflowException("Max retries exceeded (Caused by NewConnectionError: Connection refused)"),
                     MlflowException("Response body is not JSON: <html>Sign in</html>")]  # a proxy's login page
    for error in not_answering:
        with pytest.raises(MlflowUnavailable):
            install(error)
    with pytest.raises(webhooks.WebhookInstallError, match="MLflow refused the webhook: no reason given"):
        install(MlflowException("", error_code=INVALID_PARAMETER_VALUE))


def test_webhook_install_with_mlflow_down(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    result = CliRunner().invoke(cli, ["--tracking-uri", "http://127.0.0.1:9", "webhook", "install", "--url", "https://x.example/h", "--secret", "s"])
    assert result.exit_code == 1
    assert "unreachable at http://127.0.0.1:9" in result.output
