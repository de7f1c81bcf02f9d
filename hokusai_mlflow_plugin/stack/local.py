"""The whole stack on the embedded default (``hokusai up``, ``hokusai demo``): a local MLflow
server on SQLite with the ``hokusai+sqlite`` registry store, the receiver under gunicorn, the
relay and the periodic reconcile, all children of one process that stops them together.

Secrets (the MLflow webhook-secret encryption key and the webhook secret) are generated once and
kept in ``HOKUSAI_HOME/secrets.json`` with mode 0600.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hokusai_mlflow_plugin.core.errors import CONFLICT, HokusaiError
from hokusai_mlflow_plugin.stack.mlflow_server import server_command, server_env, write_ahead_log
from hokusai_mlflow_plugin.stack.process import ManagedProcess


class StackError(HokusaiError):
    """The stack cannot start; the message says why and what to do."""

    kind = CONFLICT


def stack_secrets(home: Path) -> dict:
    """The stack's secrets: generated once, kept with mode 0600, reused by every later start."""
    from cryptography.fernet import Fernet

    from hokusai_mlflow_plugin.mlflow_io.webhooks import new_secret, save_secret

    path = home / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    values = {
        "mlflow_webhook_secret_encryption_key": Fernet.generate_key().decode(),
        "webhook_secret": new_secret(),
    }
    save_secret(path, json.dumps(values), replace=False)
    return values


#: threads per gunicorn worker. A decision mostly waits on MLflow: with one thread, two workers
#: decided 6 versions/s of a burst that MLflow created at 9/s (the lag grew to 16 s); with 8 they
#: keep pace (bench/bench_burst.py, BENCHMARKS.md).
RECEIVER_THREADS = 8


def receiver_command(host: str, port: int, workers: int, threads: int = RECEIVER_THREADS) -> list[str]:
    """gunicorn serving ``webhook_app:create_app()``: the receiver and every HTTP surface, in
    ``workers`` processes of ``threads`` threads (gunicorn's gthread worker)."""
    return [sys.executable, "-m", "gunicorn", "--config", "python:webhook_app.gunicorn_config", "--workers", str(workers),
            "--threads", str(threads), "--bind", f"{host}:{port}", "--access-logfile", "-", "webhook_app:create_app()"]


def gateway_command(host: str, port: int, workers: int) -> list[str]:
    """gunicorn serving ``webhook_app.gateway:create_app()``, the MLflow gateway, in ``workers``
    processes of one event loop each (aiohttp's uvloop worker); with ``PROMETHEUS_MULTIPROC_DIR`` in
    its environment, its /metrics adds up every worker's counters."""
    return [sys.executable, "-m", "gunicorn", "--config", "python:webhook_app.gunicorn_config", "--worker-class",
            "aiohttp.GunicornUVLoopWebWorker", "--workers", str(workers), "--bind", f"{host}:{port}", "--access-logfile", "-",
            "webhook_app.gateway:create_app()"]


def metrics_dir(path: Path) -> Path:
    """An empty directory for prometheus-client's multiprocess mode (it must start empty)."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


def running_stack(home: Path) -> dict | None:
    """The state of a stack that runs from ``home``, if its process is alive."""
    try:
        state = json.loads((home / "up.json").read_text())
        os.kill(state["pid"], 0)
    except (OSError, ValueError, KeyError):
        return None
    return state


@dataclass
class LocalStack:
    home: Path
    database_url: str
    host: str = "127.0.0.1"
    mlflow_port: int = 5000
    receiver_port: int = 8787
    receiver_workers: int = 2
    gateway_port: int | None = None  # the MLflow gateway too (`hokusai up`); None: not started
    reconcile_interval: float = 30.0
    log: Callable[[str], None] = print
    inherit_relay_output: bool = False  # `up` shows events on its terminal
    children: list[ManagedProcess] = field(default_factory=list)

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def receiver_url(self) -> str:
        return f"http://{self.host}:{self.receiver_port}"

    @property
    def gateway_url(self) -> str | None:
        return f"http://{self.host}:{self.gateway_port}/mlflow" if self.gateway_port else None

    @property
    def ui_url(self) -> str | None:
        """The MLflow UI through the gateway: people sign in once, at the console, with an API key."""
        return f"{self.gateway_url}/" if self.gateway_url else None

    @property
    def state_file(self) -> Path:
        return self.home / "up.json"

    # -- start and stop -----------------------------------------------------------------------------

    def start(self) -> "LocalStack":
        self._check_free()
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        keys = stack_secrets(self.home)
        try:
            self._start_all(keys)
        except BaseException:
            self.stop()
            raise
        self.state_file.write_text(json.dumps({
            "pid": os.getpid(), "mlflow_url": self.mlflow_url, "receiver_url": self.receiver_url, "gateway_url": self.gateway_url,
            "children": {c.name: c.pid for c in self.children},
        }))
        return self

    def _check_free(self) -> None:
        if (state := running_stack(self.home)) is not None:
            raise StackError(
                f"A Hokusai stack already runs from {self.home} (pid {state['pid']}): MLflow at "
                f"{state['mlflow_url']}, receiver at {state['receiver_url']}. Stop it first, or use "
                "another HOKUSAI_HOME."
            )
        ports = [("MLflow", self.mlflow_port, "--mlflow-port"), ("receiver", self.receiver_port, "--receiver-port")]
        if self.gateway_port:
            ports.append(("MLflow gateway", self.gateway_port, "--gateway-port"))
        for name, port, option in ports:
            if _port_busy(self.host, port):
                raise StackError(f"Port {port} on {self.host} is in use, so the {name} cannot start there: choose another with {option}.")

    def _start_all(self, keys: dict) -> None:
        from hokusai_mlflow_plugin.db.migrate import upgrade
        from hokusai_mlflow_plugin.mlflow_io import webhooks
        from hokusai_mlflow_plugin.mlflow_io.client import client

        self.log(f"[1/5] Token database: {self.database_url.split('://')[0]} (migrating)")
        upgrade(self.database_url)

        self.log(f"[2/5] Starting MLflow at {self.mlflow_url} (SQLite in {self.home})")
        backend = f"sqlite:///{self.home / 'mlflow.db'}"
        write_ahead_log(self.home / "mlflow.db")  # MLflow's creates and the receiver's reads side by side
        env = server_env(keys["mlflow_webhook_secret_encryption_key"])
        env.pop("MLFLOW_TRACKING_URI", None)
        mlflow = self._spawn("mlflow", server_command(backend, self.home / "artifacts", self.host, self.mlflow_port), env)
        mlflow.wait_http(self.mlflow_url + "/health", timeout=180)

        self.log(f"[3/5] Starting the receiver at {self.receiver_url} (gunicorn, {self.receiver_workers} workers)")
        child_env = {
            **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
            "HOKUSAI_HOME": str(self.home),
            "HOKUSAI_DATABASE_URL": self.database_url,
            "HOKUSAI_WEBHOOK_SECRET": keys["webhook_secret"],
            "MLFLOW_TRACKING_URI": self.mlflow_url,
            # The decisions read MLflow's SQLite and write their outcome tags there, with MLflow's
            # own stores, instead of asking its one server worker (issue 23).
            "HOKUSAI_MLFLOW_STORE_URI": backend,
        }
        receiver_env = {**child_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir(self.home / "prometheus" / "receiver"))}
        if self.gateway_port:
            # Two origins on one host: the console's sign-in may go back to the UI at the gateway's,
            # and the gateway sends people without a session to the console's sign-in.
            receiver_env["HOKUSAI_GATEWAY_PUBLIC_URL"] = self.gateway_url
        receiver = self._spawn("receiver", receiver_command(self.host, self.receiver_port, self.receiver_workers), receiver_env)
        if self.gateway_port:
            self.log(f"      and the MLflow gateway at {self.gateway_url} (API keys)")
            gateway_env = {**child_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir(self.home / "prometheus" / "gateway")),
                           "HOKUSAI_CONSOLE_URL": f"{self.receiver_url}/console"}
            gateway = self._spawn("gateway", gateway_command(self.host, self.gateway_port, 1), gateway_env)
        receiver.wait_http(self.receiver_url + "/health", timeout=60)
        if self.gateway_port:
            gateway.wait_http(f"http://{self.host}:{self.gateway_port}/health", timeout=60)

        self.log("[4/5] Installing the MLflow webhook")
        installed = webhooks.install(client(self.mlflow_url), self.receiver_url + "/webhooks/mlflow", keys["webhook_secret"])
        if not installed.tested:
            raise StackError(f"The MLflow webhook does not reach the receiver: {installed.test_error}")

        self.log(f"[5/5] Starting the event relay and the reconcile sweep (every {self.reconcile_interval:g}s)")
        module = [sys.executable, "-m", "hokusai_mlflow_plugin"]
        self._spawn("relay", [*module, "events", "relay", "--console"], child_env, inherit=self.inherit_relay_output)
        self._spawn("reconcile", [*module, "reconcile", "--interval", str(self.reconcile_interval)], child_env)

    def _spawn(self, name: str, cmd: list[str], env: dict, inherit: bool = False) -> ManagedProcess:
        log_path = None if inherit else self.home / "logs" / f"{name}.log"
        process = ManagedProcess(name, cmd, env, log_path, die_with_parent=True).start()
        self.children.append(process)
        return process

    def dead_child(self) -> ManagedProcess | None:
        return next((c for c in self.children if not c.alive()), None)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        try:
            state = json.loads(self.state_file.read_text())
            if state.get("pid") == os.getpid():
                self.state_file.unlink()
        except (OSError, ValueError):
            pass


def _port_busy(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0
