"""The registration stack for integration tests: a real MLflow server whose webhook calls the real
receiver (Flask app over real HTTP on loopback), on a token database of the same kind."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa
from mlflow import MlflowClient
from requests.structures import CaseInsensitiveDict
from werkzeug.serving import make_server

from hokusai_mlflow_plugin.db.migrate import upgrade
from hokusai_mlflow_plugin.db.models import OutboxEvent, Registration, Token
from hokusai_mlflow_plugin.db.session import session_factory
from hokusai_mlflow_plugin.stack.local import gateway_command
from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port
from tests.harness import MlflowServer, ReservedPort
from webhook_app import create_app
from webhook_app.gateway import create_app as create_gateway
from webhook_app.signature import sign

RECEIVER_SECRET = "receiver-secret-for-tests"
OUTCOME_TAG_LINGER = 0.05  # seconds (HOKUSAI_OUTCOME_TAG_LINGER, 1.0 by default) for the stacks' receivers


class ReceiverThread:
    """``webhook_app.create_app()`` served over HTTP on a loopback port reserved for the session;
    stoppable and restartable on that port (a receiver that goes down and comes back). While it is
    down, MLflow's deliveries are refused, and no other program can take the port."""

    def __init__(self, config: dict):
        self.app = create_app(config)
        self._reserved = ReservedPort()
        self.port = self._reserved.port
        self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ReceiverThread":
        # On our own listening socket (fd=): werkzeug's own bind calls sys.exit() when the port
        # is taken, and a SystemExit in a fixture's teardown skips pytest's other finalizers.
        sock = self._reserved.listen()
        try:
            self._server = make_server("127.0.0.1", self.port, self.app, threaded=True, fd=sock.fileno())
        finally:
            sock.close()  # the server holds its own duplicate
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def release(self) -> None:
        """Stop for good: the server, the port, and the app's relay threads (a relay left running
        would go on delivering, or printing to whatever stdout a later test captures)."""
        self.stop()
        self._reserved.release()
        relay = self.app.extensions.get("hokusai_relay")
        if relay is not None:
            relay.stop()


class GatewayThread:
    """``webhook_app.gateway.create_app(config)`` on its own event loop in a thread of this
    process, on a reserved loopback port (for a gateway in front of a test's own MLflow stand-in).
    ``access_log``: the logger of its access log (none by default)."""

    def __init__(self, config: dict, access_log=None):
        self.app = create_gateway(config)
        self.access_log = access_log
        self._reserved = ReservedPort()
        self.port = self._reserved.port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "GatewayThread":
        from aiohttp import web

        started = threading.Event()

        def serve():
            self._loop = loop = asyncio.new_event_loop()
            runner = web.AppRunner(self.app, access_log=self.access_log)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, self._reserved.listen()).start())
            started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="hokusai-test-gateway", daemon=True)
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError("the gateway did not start in 30 s")
        return self

    def release(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop = None
        self._reserved.release()


@contextmanager
def gateway_in_front_of(handler, db_url: str, **config):
    """A ``GatewayThread`` in front of ``handler``, an ``http.server`` handler standing where MLflow
    does (for what a real MLflow cannot be made to do on cue)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gateway = GatewayThread({"internal_uri": f"http://127.0.0.1:{server.server_port}", "database_url": db_url, **config}).start()
    try:
        yield gateway
    finally:
        gateway.release()
        server.shutdown()
        server.server_close()


def gateway_process(db_url: str, internal_uri: str, log: Path, **env) -> tuple[ManagedProcess, str]:
    """``hokusai gateway serve``'s gunicorn (one aiohttp worker) in front of ``internal_uri``; its
    base URL. Stop the process when done."""
    port = free_port()
    environ = {**os.environ, "HOKUSAI_DATABASE_URL": db_url, "HOKUSAI_MLFLOW_INTERNAL_URI": internal_uri,
               "HOKUSAI_LOG_LEVEL": "WARNING", **env}
    process = ManagedProcess("gateway", gateway_command("127.0.0.1", port, 1), environ, log).start()
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_http(url + "/health", timeout=60)
    except BaseException:
        process.stop()
        raise
    return process, url


@dataclass
class Stack:
    kind: str
    mlflow: MlflowServer
    db_url: str
    receiver: ReceiverThread = None
    webhook_id: str = ""
    client: MlflowClient = field(init=False)
    _gateway: tuple | None = None

    def __post_init__(self):
        self.client = MlflowClient(tracking_uri=self.mlflow.url, registry_uri=self.mlflow.url)
        self.sessions = session_factory(self.db_url)

    @property
    def receiver_config(self) -> dict:
        return {
            "HOKUSAI_WEBHOOK_SECRETS": (RECEIVER_SECRET,),
            "HOKUSAI_DATABASE_URL": self.db_url,
            "MLFLOW_TRACKING_URI": self.mlflow.url,
            # The outcome tags gather for OUTCOME_TAG_LINGER, not the default 1 s: these tests wait
            # for one version's tags at a time (the gathering itself: tests/mlflow_io/test_outcome_tags.py).
            "HOKUSAI_OUTCOME_TAG_LINGER": OUTCOME_TAG_LINGER,
        }

    def start(self) -> "Stack":
        upgrade(self.db_url)
        self.receiver = ReceiverThread(self.receiver_config).start()
        hook = self.client.create_webhook(
            name="hokusai-receiver",
            url=self.receiver.url + "/webhooks/mlflow",
            events=["model_version.created", "model_version_tag.set"],
            secret=RECEIVER_SECRET,
        )
        self.webhook_id = hook.webhook_id
        return self

    def replica(self) -> ReceiverThread:
        """Another receiver on the stack's database, on its own port, which MLflow does not call."""
        return ReceiverThread(self.receiver_config).start()

    @property
    def gateway_url(self) -> str:
        """The stack's MLflow gateway (``hokusai gateway serve``, a process of its own), started at
        first use: its base URL, ``/mlflow`` not included."""
        if self._gateway is None:
            self._gateway = gateway_process(self.db_url, self.mlflow.url, self.mlflow.workdir / "gateway.log")
        return self._gateway[1]

    def stop(self) -> None:
        if self.receiver:
            self.receiver.release()
        if self._gateway is not None:
            self._gateway[0].stop()

    # -- the token database ---------------------------------------------------------------------

    def api_key(self, *scopes: str, name: str = "test") -> str:
        """A new API key on the stack's database (the whole key, as shown once)."""
        from hokusai_mlflow_plugin.auth import keys

        with self.sessions.begin() as s:
            return keys.create(s, name, scopes or ("read",)).key

    def own(self, kind: str, object_id, user: str = "test") -> None:
        """Record the user ``user`` (made if missing) as the owner of an experiment (id) or
        registered model (name) that a test made on MLflow directly, as the gateway records one
        made through it (``auth.mlflow_objects``): its keys then reach it with ownership on."""
        from hokusai_mlflow_plugin.auth import principals
        from hokusai_mlflow_plugin.core import tags
        from hokusai_mlflow_plugin.db.models import REGISTERED_MODEL, MlflowObject

        with self.sessions.begin() as s:
            who = principals.user_named(s, user).id
            s.merge(MlflowObject(kind=kind, object_id=str(object_id), owner_id=who, creator_id=who, key_id="test"))
        if kind == REGISTERED_MODEL:  # and its owner's tag, as the gateway writes it
            self.client.set_registered_model_tag(str(object_id), tags.OWNER, str(who))

    def create_token(self, token_id: str, metric: str | None = "auroc", baseline: float | None = 0.82, status: str = "draft",
                     owner: str | None = None) -> None:
        """A token, owned by the user or team ``owner`` (made as a user if missing)."""
        from hokusai_mlflow_plugin.auth import principals

        with self.sessions.begin() as s:
            who = None
            if owner is not None:
                try:
                    who = principals.find(s, owner)
                except principals.PrincipalError:
                    who = principals.user_named(s, owner)
            s.add(Token(token_id=token_id, status=status, metric_name=metric, baseline_value=baseline, owner=who))

    def token(self, token_id: str) -> dict:
        with self.sessions() as s:
            return s.get(Token, token_id).to_dict()

    def registration(self, name: str, version) -> Registration | None:
        with self.sessions() as s:
            return s.scalars(
                sa.select(Registration).where(Registration.model_name == name, Registration.model_version == str(version))
            ).one_or_none()

    def registrations(self, name: str) -> list[Registration]:
        with self.sessions() as s:
            return list(s.scalars(sa.select(Registration).where(Registration.model_name == name)))

    def events(self, token_id: str, event_type: str | None = None) -> list[OutboxEvent]:
        with self.sessions() as s:
            rows = s.scalars(sa.select(OutboxEvent).order_by(OutboxEvent.id)).all()
        return [e for e in rows if e.payload.get("token_id") == token_id and (event_type is None or e.event_type == event_type)]

    def wait_decided(self, name: str, version, timeout: float = 30.0) -> Registration:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reg = self.registration(name, version)
            if reg is not None:
                return reg
            time.sleep(0.05)
        raise AssertionError(f"{name} v{version} was not decided within {timeout:.0f}s")

    def created_body(self, name: str, version) -> bytes:
        """The ``model_version.created`` delivery MLflow sent for this version: its source and run
        as MLflow resolved them (the receiver trusts a signed delivery's source)."""
        mv = self.client.get_model_version(name, str(version))
        return created_body(name, str(version), source=mv.source, run_id=mv.run_id or None)

    def wait_tag(self, name: str, version, key: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.client.get_model_version(name, str(version)).tags.get(key)
            if value is not None:
                return value
            time.sleep(0.1)
        raise AssertionError(f"{name} v{version} has no tag {key} after {timeout:.0f}s")


# -- MLflow's deliveries, as its server signs them ----------------------------------------------------


def created_body(name: str, version: str, source: str = "models:/m-0", run_id=None) -> bytes:
    """A ``model_version.created`` body; for a version that exists, ``Stack.created_body``."""
    return json.dumps(
        {
            "entity": "model_version",
            "action": "created",
            "timestamp": "2026-11-23T00:00:00+00:00",
            "data": {"name": name, "version": version, "source": source, "run_id": run_id, "tags": {}, "description": None},
        }
    ).encode()


def signed_headers(body: bytes, delivery_id: str | None = None, ts: int | None = None, secret: str = RECEIVER_SECRET) -> dict:
    delivery_id = delivery_id or str(uuid.uuid4())
    ts = int(time.time()) if ts is None else ts
    return {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": str(ts),
        "X-MLflow-Signature": sign(secret, delivery_id, ts, body),
    }


class MlflowUi:
    """People in the MLflow UI through the gateway, on a stack: the console (a receiver of its own on
    the stack's database, no relay) and a gateway process, each told the other's URL as ``hokusai
    up`` tells them (two origins on one host, as on a laptop). ``stop()`` when done."""

    def __init__(self, stack: Stack, **gateway_env):
        self.stack = stack
        self.console = ReceiverThread({**stack.receiver_config, "HOKUSAI_RELAY": False}).start()
        self._process, self.gateway = gateway_process(
            stack.db_url, stack.mlflow.url, stack.mlflow.workdir / f"gateway-ui-{uuid.uuid4().hex[:6]}.log",
            HOKUSAI_CONSOLE_URL=self.console.url + "/console", **gateway_env)
        self.console.app.config["HOKUSAI_GATEWAY_PUBLIC_URL"] = self.gateway + "/mlflow"
        self.ui = self.gateway + "/mlflow/"

    def stop(self) -> None:
        self._process.stop()
        self.console.release()


def raw_request(base: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None = None) -> requests.Response:
    """``method path`` sent byte for byte as written (http.client: no dot segment removed, no escape
    undone, as requests and urllib3 2.x would), with ``headers`` exactly as listed (a name twice is
    sent twice); its answer as a ``requests.Response``."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        answer = conn.getresponse()
        response = requests.Response()
        response.status_code, response.headers, response._content = answer.status, CaseInsensitiveDict(answer.getheaders()), answer.read()
        return response
    finally:
        conn.close()
