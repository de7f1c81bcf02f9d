"""Test harness shared by every test module: services, a real MLflow server, a capture receiver."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hokusai_mlflow_plugin.stack.mlflow_server import server_command, server_env
from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port



def on_ci() -> bool:
    """Whether ``CI`` is set true (``true``, ``1`` or ``yes``, in any case): then tests/conftest.py
    turns every skip into a failure."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


# A fixed Fernet key: every worker of the test server can read the webhook secrets it stored.
TEST_ENCRYPTION_KEY = "aG9rdXNhaS10ZXN0LWZlcm5ldC1rZXktMzJieXRlcyE="

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a service is missing (a failure with CI set: tests/conftest.py)."""
    if not _reachable(host, port):
        pytest.skip(f"{name} is not reachable at {host}:{port}; start it to run this test")


def create_pg_database(prefix: str = "hokusai_test", owner_password: str | None = None, template: str | None = None) -> str:
    """Create a fresh PostgreSQL database and return its SQLAlchemy URL. With ``owner_password``,
    the database belongs to a new role of the same name with that password, and the URL logs in
    as that role (it works with trust and with password authentication alike). With ``template``
    (the URL of a database nobody is connected to), it is a copy of that database, owned by
    ``postgres`` like the tables copied (so not with ``owner_password``)."""
    assert not (template and owner_password), "a copy's tables would not belong to the new role"
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    user = "postgres"
    copy = f' TEMPLATE "{template.rsplit("/", 1)[1]}"' if template else ""
    with _admin_connection() as conn:
        if owner_password is not None:
            user = name
            conn.execute(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{owner_password}'")
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{user}"')
            return f"postgresql://{user}:{owner_password}@{PG_HOST}:{PG_PORT}/{name}"
        conn.execute(f'CREATE DATABASE "{name}"{copy}')
    return f"postgresql://{user}@{PG_HOST}:{PG_PORT}/{name}"


def drop_pg_database(url: str) -> None:
    """Drop the database, and its own role if it has one."""
    name = url.rsplit("/", 1)[1]
    with _admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def _admin_connection():
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", autocommit=True
    )


def respond(handler: BaseHTTPRequestHandler, body: bytes, content_type: str = "application/json") -> None:
    """A stand-in server's 200 with ``body`` (its length given, so the connection may be kept)."""
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@dataclass
class MlflowServer:
    """A real ``mlflow server`` subprocess with the ``hokusai+`` registry store."""

    backend_uri: str
    workdir: Path
    kind: str
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "MlflowServer":
        env = server_env(TEST_ENCRYPTION_KEY, cache_ttl=1)
        for var in ("HOKUSAI_TOKEN_ID", "HOKUSAI_METRIC", "HOKUSAI_BASELINE", "MLFLOW_TRACKING_URI"):
            env.pop(var, None)
        for attempt in range(3):
            cmd = server_command(self.backend_uri, self.workdir / "artifacts", self.host, self.port)
            log = self.workdir / f"mlflow-server-{attempt}.log"  # each attempt's own: "in use" is about this one
            self.process = ManagedProcess(f"mlflow server ({self.kind})", cmd, env, log).start()
            try:
                self.process.wait_http(self.url + "/health", timeout=120)
                return self
            except RuntimeError:
                # Another program (another test session on this machine) took the port between
                # free_port() and the bind: try a new one rather than talk to its server.
                if "in use" not in self.process.tail() or attempt == 2:
                    raise
                self.port = free_port()
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()


@dataclass
class Captured:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def gunicorn_workers(master: int, count: int = 1, timeout: float = 30.0) -> list[int]:
    """The worker processes of the gunicorn ``master``, once ``count`` of them are up."""
    from hokusai_mlflow_plugin.stack.process import processes_where

    deadline = time.monotonic() + timeout
    while len(workers := processes_where(ppid=master)) < count:
        assert time.monotonic() < deadline, f"gunicorn started fewer than {count} workers"
        time.sleep(0.1)
    return workers


class ReservedPort:
    """A loopback port that stays this test session's while its server is down.

    A server that stops and comes back on its port (a consumer that is down for a while) used to
    close the port in between, and an outgoing connection or another program on this shared
    machine could take it: the restart then failed, or worse, our deliveries reached that program.
    The reservation is a bound socket that does not listen: connections to the port are refused,
    as for a server that is down. The kernel gives the port to no outgoing connection, and another
    socket can bind it only if it sets ``SO_REUSEPORT`` too under the same user id, as ``listen()``
    below does (the reservation sets ``SO_REUSEPORT`` without ``SO_REUSEADDR``).
    """

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self._hold = socket.socket()
        self._hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._hold.bind((host, 0))
        self.port = self._hold.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def listen(self) -> socket.socket:
        """A listening socket on the reserved port, for a server that comes up."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT of the last run
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        return sock

    def release(self) -> None:
        self._hold.close()


class _ReservedHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` on a ``ReservedPort``'s listening socket."""

    daemon_threads = True

    def __init__(self, reserved: ReservedPort, handler):
        super().__init__((reserved.host, reserved.port), handler, bind_and_activate=False)
        self.socket.close()
        self.socket = reserved.listen()
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = reserved.host, reserved.port


class CaptureReceiver:
    """A small HTTP server on loopback that records every POST and answers ``status``. Given a
    ``ReservedPort``, it comes up on that port (a consumer that was down comes back)."""

    def __init__(self, port: ReservedPort | None = None):
        self.requests: list[Captured] = []
        self.status = 200
        self.script: list[int | tuple[int, dict]] = []  # answers to give first, in order
        self.delay = 0.0  # seconds to wait before answering
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._cond:
                    receiver.requests.append(Captured(self.path, dict(self.headers), body))
                    answer = receiver.script.pop(0) if receiver.script else receiver.status
                    receiver._cond.notify_all()
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # keep test output quiet
                pass

        self._own_port = port is None
        self.port = port or ReservedPort()
        self.server = _ReservedHTTPServer(self.port, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "CaptureReceiver":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._own_port:
            self.port.release()

    def ids(self) -> list[str]:
        """The ``webhook-id`` of every request received, in order."""
        with self._cond:
            return [{k.lower(): v for k, v in r.headers.items()}.get("webhook-id") for r in self.requests]

    def wait_count(self, n: int, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def wait_for(self, predicate, timeout: float = 15.0) -> list[Captured]:
        """Wait until some captured requests match ``predicate``; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in self.requests if predicate(r)]
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)


def notify(session, event_ids: list[str]) -> None:
    """What a registration sends with its outbox rows on PostgreSQL (``NOTIFY hokusai_events,
    '<event_id>'``, delivered at commit), for tests and benchmarks that write outbox rows directly."""
    import sqlalchemy as sa

    from hokusai_mlflow_plugin.db.models import NOTIFY_CHANNEL

    if session.get_bind().dialect.name != "postgresql":
        return
    for event_id in event_ids:
        session.execute(sa.text("SELECT pg_notify(:channel, :event_id)"), {"channel": NOTIFY_CHANNEL, "event_id": event_id})
