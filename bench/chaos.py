"""Chaos, Jepsen set-test style (issue 13): add distinct registrations while components are killed,
heal, wait until settled, read once, and report what was lost, unexpected or duplicated.

Run by hand, from the repository root (results in RELIABILITY.md)::

    .venv/bin/python bench/chaos.py --registrations 1000 --duration 600 --seed 13

It starts everything it needs itself, on loopback only, in a temporary directory it removes
afterwards (``--keep`` keeps it, with every log):

* a private PostgreSQL cluster for the token store (``initdb`` into the directory, ``postgres -p
  <free port> -k <socket dir> -c listen_addresses=127.0.0.1``), as the ``postgres`` user when we run
  as root (PostgreSQL refuses root), restarted after each SIGKILL (it recovers from its WAL);
* an ``mlflow server`` on SQLite with the ``hokusai+sqlite`` registry store (its kills do not touch
  the token store), and the MLflow webhook (``model_version.created``, ``model_version_tag.set``)
  installed to the receiver;
* the receiver (``webhook_app:create_app()`` under gunicorn, 2 workers), ``--relays`` workers of
  ``hokusai events relay`` and one ``hokusai reconcile --interval 2``, all on the private
  PostgreSQL, each in its own process group;
* a downstream consumer in this process (loopback HTTP) that verifies the Standard Webhooks
  signature with the ``standardwebhooks`` library, answers 500 to 30 % of requests at random and
  records every ``webhook-id`` it accepted (and each one it had to deduplicate);
* a forger thread sending forged, stale, unsigned and malformed deliveries to the receiver all
  along: each must be refused (401 or 400), never a 500.

Workload: ``--registrations`` draft tokens; per token, from ``--clients`` threads, one run with its
``auroc`` metric (about a quarter below the 0.82 baseline, so they must be rejected; a few exactly
at it), a finalised LoggedModel with the ``hokusai_*`` tags, and one model version made as
``log_model(registered_model_name=...)`` makes it. The clients retry every MLflow call (MLflow may
be down); before repeating a ``create_model_version`` they look for the token's version, so a
version whose answer was lost is not created twice. Meanwhile a chaos thread SIGKILLs the process
group of the receiver, a relay, the reconcile worker, MLflow or PostgreSQL (shuffled rounds of all
five, so each kind is hit), every ``--kill-interval`` seconds or so, and restarts it after a short
pause. Then it heals (no more kills, everything up), waits until every version is decided and every
event delivered (or ``--settle-timeout``), reads the token store once with plain SQL and MLflow's
versions once, and prints the summary. The exit code is 1 when anything was lost, decided wrongly,
duplicated as a transition, not refused, or answered 500.

Only the processes this script started are ever signalled, by the process groups it created.
"""

from __future__ import annotations

import argparse
import base64
import glob
import json
import os
import pwd
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
import partitions

COMPONENTS = ("receiver", "relay", "reconcile", "mlflow", "postgres")
MLFLOW_SECRET = "chaos-mlflow-webhook-secret"
METRIC, BASELINE = "auroc", 0.82
FAIL_RATE = 0.3
FORGER_AGENT = "hokusai-chaos-forger"
ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<code>\d{3}) \S+ "[^"]*" "(?P<agent>[^"]*)"')


class MissingPrerequisite(RuntimeError):
    """The machine lacks something the run needs (PostgreSQL's server binaries, its user)."""


def postgres_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with initdb and postgres, else PATH's."""
    found = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        version = Path(path).parent.name
        if (Path(path) / "initdb").exists() and (Path(path) / "postgres").exists():
            found.append((float(version) if re.fullmatch(r"\d+(\.\d+)?", version) else 0.0, Path(path)))
    if found:
        return max(found)[1]
    initdb, postgres = shutil.which("initdb"), shutil.which("postgres")
    if initdb and postgres and Path(initdb).parent == Path(postgres).parent:
        return Path(initdb).parent
    raise MissingPrerequisite("PostgreSQL's server binaries (initdb, postgres) are neither in /usr/lib/postgresql/*/bin nor on PATH")


def postgres_user() -> pwd.struct_passwd | None:
    """Whom PostgreSQL runs as: the ``postgres`` user when we are root (PostgreSQL refuses root), else us."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise MissingPrerequisite("running as root, and there is no 'postgres' user to run the private PostgreSQL as") from None


def prerequisites() -> tuple[Path, pwd.struct_passwd | None]:
    return postgres_bindir(), postgres_user()


# -- children: one process group each, killed and restarted by group ------------------------------


class Child:
    """A child process leading its own process group; ``kill()`` SIGKILLs that group only."""

    def __init__(self, name: str, cmd: list[str], env: dict, log: Path, user: pwd.struct_passwd | None = None,
                 ready=None, stop_signal: int = signal.SIGTERM):
        self.name, self.cmd, self.env, self.log, self.user = name, cmd, env, log, user
        self.ready = ready  # callable(timeout) that raises when the child does not come up
        self.stop_signal = stop_signal
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def _demote(self) -> None:  # in the child, before exec
        os.setgid(self.user.pw_gid)
        os.initgroups(self.user.pw_name, self.user.pw_gid)
        os.setuid(self.user.pw_uid)

    def start(self, timeout: float = 120.0) -> Child:
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"\n---- chaos: start #{self.starts} at {time.strftime('%H:%M:%S')} ----\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=benchlib.REPO, start_new_session=True, preexec_fn=self._demote if self.user else None)
        if self.ready is not None:
            self.ready(self, timeout)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group (gunicorn's master and its workers, uvicorn's...)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, self.stop_signal)
                self.proc.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:  # whatever of the group outlived its leader
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def children(self) -> list[int]:
        """Our child's own children (Linux /proc), for those that leave its group."""
        from hokusai_mlflow_plugin.stack.process import processes_where

        return processes_where(ppid=self.proc.pid)

    def pids(self) -> list[int]:
        """Our child and its own children (a PostgreSQL server: the postmaster and its backends)."""
        return [self.proc.pid, *self.children()]

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Postgres(Child):
    """The postmaster puts each backend and auxiliary process in a session of its own (setsid), so
    its group is the postmaster alone: a crash of the whole cluster is a SIGKILL of the postmaster
    and of each of its children, taken before it dies."""

    def kill(self) -> None:
        if self.proc is None:
            return
        children = self.children()
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def start(self, timeout: float = 120.0) -> Child:
        # A backend that outlived a kill still holds the shared memory for a moment: start again.
        for attempt in range(10):
            try:
                return super().start(timeout)
            except RuntimeError:
                if attempt == 9:
                    raise
                time.sleep(0.5)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGINT)  # fast shutdown: backends end, a checkpoint
                self.proc.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill()


def start_private_postgres(workdir: Path, spawn=lambda child: child.start()) -> tuple[Postgres, int, str]:
    """A PostgreSQL server of our own under ``workdir`` (initdb, then ``postgres`` on a free loopback
    port), with a database ``hokusai``: (its child, its port, the database's URL). ``spawn`` starts
    the child (chaos.py's keeps it known to close() while it comes up). Also bench_burst.py's."""
    import psycopg

    from hokusai_mlflow_plugin.stack.process import free_port

    bindir, user = prerequisites()
    pg = workdir / "pg"
    (pg / "sock").mkdir(parents=True)
    os.chmod(workdir, 0o755)  # the postgres user walks through it to its own directory
    if user is not None:
        for path in (pg, pg / "sock"):
            os.chown(path, user.pw_uid, user.pw_gid)
    init = Child("initdb", [str(bindir / "initdb"), "-D", str(pg / "data"), "-U", "postgres", "--auth=trust",
                            "-E", "UTF8", "--no-sync"], {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
                 workdir / "initdb.log", user)
    init.start()
    if init.proc.wait(120) != 0:
        raise RuntimeError(f"initdb failed; see {init.log}:\n{init.tail()}")
    port = free_port()
    cmd = [str(bindir / "postgres"), "-D", str(pg / "data"), "-p", str(port), "-k", str(pg / "sock"),
           "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "shared_buffers=64MB"]
    postgres = Postgres("postgres", cmd, {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}, workdir / "postgres.log", user,
                        wait_postgres(port))
    spawn(postgres)
    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE hokusai")
    return postgres, port, f"postgresql://postgres@127.0.0.1:{port}/hokusai"


def wait_http(url: str):
    import requests

    def ready(child: Child, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited with code {child.proc.returncode}; see {child.log}:\n{child.tail()}")
            try:
                if requests.get(url, timeout=1).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{child.name} did not answer {url} within {timeout:.0f}s; see {child.log}")

    return ready


def wait_postgres(port: int):
    import psycopg

    def ready(child: Child, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not child.alive():
                raise RuntimeError(f"postgres exited with code {child.proc.returncode}; see {child.log}:\n{child.tail()}")
            try:
                with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2):
                    return
            except psycopg.Error:
                time.sleep(0.2)
        raise TimeoutError(f"postgres did not accept connections within {timeout:.0f}s; see {child.log}")

    return ready


# -- the downstream consumer and the forger --------------------------------------------------------


class Consumer:
    """A Standard Webhooks consumer on loopback: verifies, fails ``fail_rate`` of requests with a
    500 at random, accepts the rest, deduplicates on ``webhook-id``."""

    def __init__(self, secret: str, fail_rate: float, seed: int):
        from standardwebhooks import Webhook

        self.verifier = Webhook(secret)
        self.fail_rate = fail_rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.accepted: dict[str, dict] = {}
        self.sends: list[tuple[str, str, object]] = []  # (sender: which child, by its connection; webhook-id; when)
        self.senders: partitions.Senders | None = None
        self.requests = self.failed = self.duplicates = self.bad_signature = self.id_mismatch = 0
        consumer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sender = consumer.senders.of(self.client_address[1], self.server.server_address[1]) if consumer.senders else ""
                code = consumer.receive(body, dict(self.headers), sender)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="consumer", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hokusai-events"

    def receive(self, body: bytes, headers: dict, sender: str = "") -> int:
        from standardwebhooks import WebhookVerificationError

        try:
            event = self.verifier.verify(body, headers)
        except WebhookVerificationError:
            with self.lock:
                self.bad_signature += 1
            return 401
        webhook_id = {k.lower(): v for k, v in headers.items()}["webhook-id"]
        with self.lock:
            self.requests += 1
            self.sends.append((sender, webhook_id, partitions.utc(time.time())))
            if self.rng.random() < self.fail_rate:
                self.failed += 1
                return 500
            if event.get("event_id") != webhook_id:
                self.id_mismatch += 1
            if webhook_id in self.accepted:
                self.duplicates += 1
            else:
                self.accepted[webhook_id] = event
        return 204

    def snapshot(self) -> dict[str, dict]:
        with self.lock:
            return dict(self.accepted)

    def start(self) -> Consumer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Forger(threading.Thread):
    """Deliveries the receiver must refuse: a wrong secret, an old timestamp, no signature (401),
    a signed body that is not JSON or lacks its fields (400)."""

    EXPECTED = {"forged": 401, "stale": 401, "unsigned": 401, "malformed_json": 400, "malformed_fields": 400}

    def __init__(self, url: str, secret: str, model_name: str, seed: int, stop: threading.Event):
        super().__init__(name="forger", daemon=True)
        self.url, self.secret, self.model_name, self.stop_event = url, secret, model_name, stop
        self.rng = random.Random(seed)
        self.codes: dict[str, Counter] = defaultdict(Counter)  # kind -> status code (or "unreachable")
        self.wrong: list[str] = []

    def delivery(self, kind: str) -> tuple[bytes, dict]:
        from webhook_app.signature import sign

        version = str(self.rng.randint(1, 50))
        body = benchlib.created_body(self.model_name, version, "models:/m-forged")
        secret, ts = self.secret, int(time.time())
        if kind == "forged":
            secret = "not-" + self.secret
        elif kind == "stale":
            ts -= 3600
        elif kind == "malformed_json":
            body = b'{"entity": "model_version", "action": "created", "data": {'
        elif kind == "malformed_fields":
            body = json.dumps({"entity": "model_version", "action": "created", "timestamp": "2026-01-01T00:00:00Z", "data": {"version": []}}).encode()
        delivery_id = str(uuid.uuid4())
        headers = {"Content-Type": "application/json", "User-Agent": FORGER_AGENT}
        if kind != "unsigned":
            headers.update({"X-MLflow-Delivery-Id": delivery_id, "X-MLflow-Timestamp": str(ts),
                            "X-MLflow-Signature": sign(secret, delivery_id, ts, body)})
        return body, headers

    def run(self) -> None:
        import requests

        session = requests.Session()
        kinds = sorted(self.EXPECTED)
        while not self.stop_event.wait(self.rng.uniform(0.1, 0.4)):
            kind = self.rng.choice(kinds)
            body, headers = self.delivery(kind)
            try:
                code = session.post(self.url, data=body, headers=headers, timeout=10).status_code
            except requests.RequestException:
                self.codes[kind]["unreachable"] += 1  # the receiver is down: nothing was accepted
                continue
            self.codes[kind][code] += 1
            if code != self.EXPECTED[kind]:
                self.wrong.append(f"{kind}: {code}")
        session.close()

    def sent(self) -> int:
        return sum(sum(c.values()) for c in self.codes.values())

    def answered(self) -> int:
        return sum(n for c in self.codes.values() for code, n in c.items() if code != "unreachable")

    def refused(self) -> int:
        return sum(c[self.EXPECTED[kind]] for kind, c in self.codes.items())

    def fives(self) -> int:
        return sum(n for c in self.codes.values() for code, n in c.items() if code == 500)


# -- the workload ----------------------------------------------------------------------------------


@dataclass
class Spec:
    token_id: str
    value: float

    @property
    def expected(self) -> str:
        return "registered" if self.value >= BASELINE else "rejected"


@dataclass
class Done:
    spec: Spec
    versions: list[str] = field(default_factory=list)
    gave_up: str | None = None


class Workload:
    """Client threads that make each token's run, LoggedModel and one version, retrying MLflow."""

    def __init__(self, mlflow_url: str, pg_port: int, model_name: str, exp_id: str, specs: list[Spec], clients: int, spread: float,
                 deadline: float):
        self.mlflow_url, self.pg_port, self.model_name, self.exp_id = mlflow_url, pg_port, model_name, exp_id
        self.specs, self.clients, self.spread, self.deadline = specs, clients, spread, deadline
        self.done: list[Done] = []
        self.retries = Counter()  # call -> failed attempts
        self.lock = threading.Lock()
        self.next = 0
        self.threads: list[threading.Thread] = []
        self.give_up_at = deadline + 120.0

    def start(self) -> Workload:
        self.t0 = time.monotonic()
        for i in range(self.clients):
            t = threading.Thread(target=self._client, name=f"client-{i}", daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def running(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def join(self, timeout: float | None = None) -> None:
        for t in self.threads:
            t.join(timeout)

    def _take(self) -> tuple[int, Spec] | None:
        with self.lock:
            if self.next >= len(self.specs):
                return None
            i, self.next = self.next, self.next + 1
            return i, self.specs[i]

    def _client(self) -> None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.mlflow_url, registry_uri=self.mlflow_url)
        while (taken := self._take()) is not None:
            i, spec = taken
            due = self.t0 + i * self.spread / max(1, len(self.specs))
            if time.monotonic() > self.deadline:
                with self.lock:
                    self.done.append(Done(spec, gave_up="not started: --duration reached"))
                continue
            time.sleep(max(0.0, due - time.monotonic()))
            done = Done(spec)
            try:
                done.versions = self._one(client, spec)
            except TimeoutError as e:
                done.gave_up = str(e)
            with self.lock:
                self.done.append(done)

    def _retry(self, what: str, fn):
        while True:
            try:
                return fn()
            except Exception:  # MLflow down or restarting: connection refused, 5xx, timeouts
                with self.lock:
                    self.retries[what] += 1
                if time.monotonic() > self.give_up_at:
                    raise TimeoutError(f"{what} kept failing") from None
                time.sleep(0.5)

    def _create_token(self, spec: Spec) -> None:
        """What the Hokusai site does before training starts: a draft token (plain SQL)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.pg_port, user="postgres", dbname="hokusai", connect_timeout=3) as conn:
            conn.execute(
                "INSERT INTO hokusai_tokens (token_id, status, metric_name, baseline_value, created_at, updated_at) "
                "VALUES (%s, 'draft', %s, %s, now(), now()) ON CONFLICT (token_id) DO NOTHING",
                (spec.token_id, METRIC, BASELINE),
            )

    def _one(self, client, spec: Spec) -> list[str]:
        from mlflow.entities import Metric

        self._retry("create_token", lambda: self._create_token(spec))
        tags = benchlib.hokusai_tags(spec.token_id)
        run_id = self._retry("create_run", lambda: client.create_run(self.exp_id, tags=tags).info.run_id)
        self._retry("log_batch", lambda: client.log_batch(run_id, metrics=[Metric(METRIC, spec.value, int(time.time() * 1000), 0)]))
        model_id = self._retry("create_logged_model", lambda: client.create_logged_model(self.exp_id, source_run_id=run_id, tags=tags).model_id)
        self._retry("finalize_logged_model", lambda: client.finalize_logged_model(model_id, "READY"))
        prepared = benchlib.Prepared(spec.token_id, run_id, model_id)
        while True:
            # A create whose answer was lost may have happened: look before creating again.
            found = self._retry("search_model_versions", lambda: versions_of(client, self.model_name, spec.token_id))
            if found:
                return found
            try:
                return [benchlib.create_version(client, self.model_name, prepared)]
            except Exception:
                with self.lock:
                    self.retries["create_model_version"] += 1
                if time.monotonic() > self.give_up_at:
                    raise TimeoutError("create_model_version kept failing") from None
                time.sleep(0.5)


def versions_of(client, model_name: str, token_id: str | None = None) -> list[str]:
    filter_string = f"name = '{model_name}'" + (f" and tags.hokusai_token_id = '{token_id}'" if token_id else "")
    return [mv.version for mv in client.search_model_versions(filter_string, max_results=10000)]


def version_statuses(client, model_name: str) -> dict[str, str | None]:
    """Every version of the model and its ``hokusai_status`` tag (None: none yet)."""
    out, token = {}, None
    while True:
        page = client.search_model_versions(f"name = '{model_name}'", max_results=1000, page_token=token)
        out.update({str(mv.version): mv.tags.get("hokusai_status") for mv in page})
        token = page.token
        if not token:
            return out


def all_versions(client, model_name: str) -> dict[str, str | None]:
    """Every version of the model and the token its tags name, page by page."""
    out, token = {}, None
    while True:
        page = client.search_model_versions(f"name = '{model_name}'", max_results=1000, page_token=token)
        for mv in page:
            out[str(mv.version)] = mv.tags.get("hokusai_token_id")
        token = page.token
        if not token:
            return out


# -- the run ---------------------------------------------------------------------------------------


class Chaos:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="hokusai-chaos-"))
        self.children: dict[str, Child] = {}
        self.kills = Counter()
        self.kill_log: list[str] = []
        self.stop_chaos = threading.Event()
        self.stop_forger = threading.Event()
        self.consumer: Consumer | None = None
        self.forger: Forger | None = None
        self.chaos_error: BaseException | None = None
        self.saved_env: dict[str, str | None] = {}
        self.components = COMPONENTS + (("gateway",) if args.partitions else ())
        self.network: partitions.Network | None = None
        self.partitioner: partitions.Partitioner | None = None
        self.prober: partitions.KeyProber | None = None
        self.stop_partitions = threading.Event()

    def log(self, message: str) -> None:
        if not self.args.quiet:
            print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)

    # -- start ------------------------------------------------------------------------------------

    def start_postgres(self) -> None:
        _, self.pg_port, self.db_url = start_private_postgres(self.workdir, self.spawn)

    def through(self, name: str) -> tuple[str, str]:
        """The database URL and MLflow URL that ``name`` uses: through its links with --partitions."""
        db_url, mlflow_url = self.db_url, self.mlflow_url
        if self.network is not None:
            pg_link = {"gateway": "gwpg", "receiver": "rcpg", "relay-1": "r1pg"}.get(name)
            if pg_link:
                db_url = f"postgresql://postgres@{self.network.address(pg_link)}/hokusai"
            if name == "receiver":
                mlflow_url = f"http://{self.network.address('rcml')}"
        return db_url, mlflow_url

    def spawn(self, child: Child, timeout: float = 120.0) -> Child:
        """Start ``child``, known to close() before it starts: one interrupted while it comes up is stopped too."""
        self.children[child.name] = child
        return child.start(timeout)

    def child_env(self, name: str) -> dict:
        """``name``'s environment: its links, and its database sessions named after it (PGAPPNAME:
        the lease log knows who held what)."""
        db_url, mlflow_url = self.through(name)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "MLFLOW_", "PROMETHEUS_", "PGAPPNAME"))}
        env.update({
            "PGAPPNAME": name,
            "HOKUSAI_HOME": str(self.workdir / "home"),
            "HOKUSAI_DATABASE_URL": db_url,
            "HOKUSAI_WEBHOOK_SECRET": MLFLOW_SECRET,
            "MLFLOW_TRACKING_URI": mlflow_url,
            **({"HOKUSAI_MLFLOW_STORE_URI": f"sqlite:///{self.workdir / 'mlflow.db'}"}
               if self.args.reads == "store" and name in ("receiver", "reconcile") else {}),
            "HOKUSAI_EVENT_WEBHOOK_URL": self.consumer.url,
            "HOKUSAI_EVENT_WEBHOOK_SECRET": self.event_secret,
            # Short retries and lease, so that a run settles in seconds, not the production minutes.
            "HOKUSAI_RELAY_RETRY_BASE": str(self.args.retry_base),
            "HOKUSAI_RELAY_RETRY_CAP": str(self.args.retry_cap),
            "HOKUSAI_RELAY_LEASE": str(self.args.lease),
            "HOKUSAI_LOG_LEVEL": "INFO",
            # The children run the code this script imports (a snapshot of a commit, or the tree).
            "PYTHONPATH": os.pathsep.join(filter(None, [str(benchlib.REPO), os.environ.get("PYTHONPATH")])),
        })
        return env

    def start_all(self) -> None:
        from hokusai_mlflow_plugin.db.migrate import upgrade
        from hokusai_mlflow_plugin.db.session import dispose
        from hokusai_mlflow_plugin.stack.local import metrics_dir, receiver_command
        from hokusai_mlflow_plugin.stack.mlflow_server import server_command, server_env, write_ahead_log
        from hokusai_mlflow_plugin.stack.process import free_port
        from tests.harness import TEST_ENCRYPTION_KEY

        t0 = time.monotonic()
        self.log(f"work directory {self.workdir}")
        self.start_postgres()
        upgrade(self.db_url)
        dispose(self.db_url)
        import psycopg

        with psycopg.connect(self.db_url, autocommit=True) as conn:
            partitions.install_lease_log(conn)
        self.log(f"private PostgreSQL on 127.0.0.1:{self.pg_port} (pid {self.children['postgres'].proc.pid}), migrated")

        self.event_secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        self.consumer = Consumer(self.event_secret, FAIL_RATE, self.args.seed + 1).start()
        self.consumer.senders = partitions.Senders(
            lambda: {name: c.proc.pid for name, c in self.children.items() if c.proc is not None and (name == "receiver" or name.startswith("relay-"))})

        mlflow_port = free_port()
        self.mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        if self.args.partitions:
            self.network = partitions.Network(self.workdir, self.pg_port, mlflow_port)
            self.network.start()  # close() removes it, whatever happens from here
            self.log("links " + ", ".join(f"{partitions.LINKS[t]} via {self.network.address(t)} ({link.namespace})"
                                          for t, link in self.network.links.items()))
        base = {k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "MLFLOW_"))}
        base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(benchlib.REPO), os.environ.get("PYTHONPATH")]))
        write_ahead_log(self.workdir / "mlflow.db")  # as `hokusai up` runs it
        self.spawn(Child(
            "mlflow", server_command(f"sqlite:///{self.workdir / 'mlflow.db'}", self.workdir / "artifacts", "127.0.0.1", mlflow_port),
            server_env(TEST_ENCRYPTION_KEY, cache_ttl=1, base=base), self.workdir / "mlflow.log",
            ready=wait_http(self.mlflow_url + "/health"),
        ), timeout=180)
        self.log(f"mlflow server at {self.mlflow_url}")

        receiver_port = free_port()
        self.receiver_url = f"http://127.0.0.1:{receiver_port}"
        prometheus = self.workdir / "prometheus"

        class Receiver(Child):
            def start(self, timeout: float = 120.0):
                metrics_dir(prometheus)  # prometheus-client's multiprocess directory must start empty
                return super().start(timeout)

        self.spawn(Receiver(
            "receiver", receiver_command("127.0.0.1", receiver_port, 2), {**self.child_env("receiver"), "PROMETHEUS_MULTIPROC_DIR": str(prometheus)},
            self.workdir / "receiver.log", ready=wait_http(self.receiver_url + "/health"),
        ))
        module = [sys.executable, "-m", "hokusai_mlflow_plugin"]
        for i in range(1, self.args.relays + 1):
            self.spawn(Child(f"relay-{i}", [*module, "events", "relay"], self.child_env(f"relay-{i}"), self.workdir / f"relay-{i}.log"))
        self.spawn(Child(
            "reconcile", [*module, "reconcile", "--interval", str(self.args.reconcile_interval)], self.child_env("reconcile"),
            self.workdir / "reconcile.log",
        ))
        if self.args.partitions:
            self.start_gateway()
        self.log(f"receiver at {self.receiver_url} (gunicorn, 2 workers), {self.args.relays} relay(s), reconcile every "
                 f"{self.args.reconcile_interval:g}s; consumer at {self.consumer.url}; up in {time.monotonic() - t0:.1f}s")

    def start_gateway(self) -> None:
        from hokusai_mlflow_plugin.stack.local import gateway_command, metrics_dir
        from hokusai_mlflow_plugin.stack.process import free_port

        port = free_port()
        self.gateway_url = f"http://127.0.0.1:{port}/mlflow"
        prometheus = self.workdir / "prometheus-gateway"

        class Gateway(Child):
            def start(self, timeout: float = 120.0):
                metrics_dir(prometheus)
                return super().start(timeout)

        env = {**self.child_env("gateway"), "HOKUSAI_MLFLOW_INTERNAL_URI": self.mlflow_url, "PROMETHEUS_MULTIPROC_DIR": str(prometheus)}
        self.spawn(Gateway("gateway", gateway_command("127.0.0.1", port, 2), env, self.workdir / "gateway.log",
                           ready=wait_http(f"http://127.0.0.1:{port}/health")))
        self.log(f"gateway at {self.gateway_url} (2 workers, the default key lease of 2 s)")

    # -- chaos ------------------------------------------------------------------------------------

    def victims(self):
        """Shuffled rounds of every component kind, so that each kind is hit."""
        while True:
            kinds = list(self.components)
            self.rng.shuffle(kinds)
            yield from kinds

    def chaos(self) -> None:
        try:
            kinds = self.victims()
            while not self.stop_chaos.wait(self.args.kill_interval * self.rng.uniform(0.5, 1.5)):
                kind = next(kinds)
                name = kind if kind != "relay" else f"relay-{self.rng.randint(1, self.args.relays)}"
                child = self.children[name]
                child.kill()
                self.kills[kind] += 1
                down = self.rng.uniform(0.3, self.args.pause)
                self.kill_log.append(f"{time.strftime('%H:%M:%S')} SIGKILL {name} (group {child.proc.pid}), down {down:.1f}s")
                self.log(self.kill_log[-1])
                time.sleep(down)
                child.start()
        except BaseException as e:  # a component that does not come back ends the run
            self.chaos_error = e
            self.stop_chaos.set()

    def heal(self) -> None:
        for child in self.children.values():
            if not child.alive():
                self.log(f"healing: {child.name} was down, starting it")
                child.start()

    # -- reading the outcome -------------------------------------------------------------------------

    def pg(self):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.pg_port, user="postgres", dbname="hokusai", connect_timeout=5)

    def settled(self, mlflow_client, model_name: str) -> tuple[bool, str]:
        versions = all_versions(mlflow_client, model_name)
        with self.pg() as conn:
            decided = {r[0] for r in conn.execute("SELECT model_version FROM hokusai_registrations WHERE model_name = %s", (model_name,))}
            events = {r[0] for r in conn.execute("SELECT event_id FROM hokusai_outbox")}
            open_deliveries = conn.execute("SELECT count(*) FROM hokusai_deliveries WHERE status <> 'delivered'").fetchone()[0]
        undecided = set(versions) - decided
        undelivered = events - set(self.consumer.snapshot())
        state = f"{len(versions) - len(undecided)}/{len(versions)} versions decided, {len(events) - len(undelivered)}/{len(events)} events delivered"
        return not undecided and not undelivered and open_deliveries == 0, state

    def wait_tagged(self, mlflow_client, model_name: str, deadline: float) -> list[str]:
        """The decided versions without ``hokusai_status`` in MLflow, once none is left or at
        ``deadline``: the receiver writes them after its commit, and a receiver killed in between
        loses them until the reconcile sweep writes them (``reconcile.retag_after`` later)."""
        while True:
            untagged = sorted(v for v, status in version_statuses(mlflow_client, model_name).items() if not status)
            if not untagged or time.monotonic() >= deadline:
                if untagged:
                    self.log(f"{len(untagged)} decided versions without outcome tags: {', '.join(untagged[:20])}")
                return untagged
            time.sleep(2.0)

    def read_once(self, mlflow_client, model_name: str) -> dict:
        versions = all_versions(mlflow_client, model_name)
        with self.pg() as conn:
            tokens = {r[0]: r for r in conn.execute(
                "SELECT token_id, status, model_name, model_version, metric_value FROM hokusai_tokens")}
            registrations = conn.execute(
                "SELECT model_name, model_version, token_id, outcome, reason FROM hokusai_registrations WHERE model_name = %s", (model_name,)).fetchall()
            outbox = conn.execute("SELECT event_id, event_type, payload FROM hokusai_outbox").fetchall()
            deliveries = dict(conn.execute("SELECT status, count(*) FROM hokusai_deliveries GROUP BY status").fetchall())
            leases = conn.execute("SELECT delivery_id, event_id, owner, app, locked_until, at FROM chaos_leases").fetchall()
        return {"leases": leases, "versions": versions, "tokens": tokens, "registrations": registrations, "outbox": outbox,
                "deliveries": deliveries, "accepted": self.consumer.snapshot()}

    # -- the whole run ----------------------------------------------------------------------------

    def run(self) -> dict:
        from mlflow import MlflowClient

        args = self.args
        started = time.monotonic()
        # Our MLflow calls fail fast and are retried by the workload, which knows what a retried
        # create means; MLflow's own retries would repeat a POST whose answer was lost.
        for var, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")):
            self.saved_env[var] = os.environ.get(var)
            os.environ[var] = value
        self.start_all()
        client = MlflowClient(tracking_uri=self.mlflow_url, registry_uri=self.mlflow_url)
        model_name = f"chaos-{uuid.uuid4().hex[:8]}"
        benchlib.ensure_registered_model(client, model_name)
        exp_id = client.create_experiment(f"chaos-{uuid.uuid4().hex[:8]}")
        client.create_webhook(name="hokusai-receiver", url=self.receiver_url + "/webhooks/mlflow",
                              events=["model_version.created", "model_version_tag.set"], secret=MLFLOW_SECRET)
        specs = []
        for _ in range(args.registrations):
            roll = self.rng.random()
            value = round(self.rng.uniform(0.5, 0.8199), 4) if roll < 0.25 else BASELINE if roll < 0.30 else round(self.rng.uniform(0.83, 0.99), 4)
            specs.append(Spec(f"CH-{uuid.uuid4().hex[:12].upper()}", value))
        time.sleep(1.5)  # past MLFLOW_WEBHOOK_CACHE_TTL (1 s): MLflow sees the webhook

        self.forger = Forger(self.receiver_url + "/webhooks/mlflow", MLFLOW_SECRET, model_name, args.seed + 2, self.stop_forger)
        self.forger.start()
        chaos_thread = threading.Thread(target=self.chaos, name="chaos", daemon=True)
        t_workload = time.monotonic()
        deadline = t_workload + args.duration
        spread = args.spread if args.spread is not None else args.duration * 0.75
        workload = Workload(self.mlflow_url, self.pg_port, model_name, exp_id, specs, args.clients, spread, deadline).start()
        self.log(f"workload: {args.registrations} registrations from {args.clients} clients over about {spread:.0f}s; "
                 f"kills every ~{args.kill_interval:g}s")
        chaos_thread.start()
        if self.network is not None:
            self.partitioner = partitions.Partitioner(self.network, random.Random(args.seed + 3), args.partition_interval, args.max_cut,
                                                      args.lease, self.pg, self.stop_partitions)
            self.prober = partitions.KeyProber(self.gateway_url, self.db_url, random.Random(args.seed + 4), self.stop_partitions,
                                               self.partitioner.gateway_cut)
            self.partitioner.start()
            self.prober.start()
            self.log(f"partitions every ~{args.partition_interval:g}s of {', '.join(partitions.LINKS.values())}; "
                     "keys revoked and asked through the gateway all along")
        # Kills (and cuts) go on until the workload is done and each kind was killed (each link cut)
        # --min-kills times, or --duration.
        while (workload.running() or min(self.kills[k] for k in self.components) < args.min_kills
               or (self.partitioner is not None and min(self.partitioner.cuts[t] + self.partitioner.flaps[t] for t in partitions.LINKS) < args.min_kills)) \
                and not self.stop_chaos.is_set() and time.monotonic() < deadline:
            workload.join(0.5)
        self.stop_chaos.set()
        self.stop_partitions.set()
        chaos_thread.join()
        for thread in (self.partitioner, self.prober):
            if thread is not None:
                thread.join(60)
        if self.chaos_error is not None:
            raise RuntimeError(f"a component did not come back: {self.chaos_error}") from self.chaos_error
        workload.join()
        workload_time = time.monotonic() - t_workload
        self.log(f"workload done in {workload_time:.1f}s; healing")
        self.heal()
        t_heal = time.monotonic()
        settle_deadline = t_heal + args.settle_timeout
        settled, state = False, ""
        while time.monotonic() < settle_deadline:
            try:
                settled, state = self.settled(client, model_name)
            except Exception as e:  # a component still finding its feet
                state = f"not readable yet: {e}"
            if settled:
                break
            time.sleep(1.0)
        settle_time = time.monotonic() - t_heal
        self.log(f"{'settled' if settled else 'NOT settled'} after {settle_time:.1f}s: {state}")
        untagged = self.wait_tagged(client, model_name, settle_deadline if args.tags else time.monotonic()) if settled else None
        time.sleep(1.0)  # a last second of forgeries against the healed stack
        self.stop_forger.set()
        self.forger.join(15)
        observed = self.read_once(client, model_name)
        summary = analyse(workload.done, observed, self.consumer, self.forger, self.receiver_codes(), model_name)
        if self.network is not None:
            summary["partitions"] = self.partitioner.summary()
            summary["partition_log"] = self.partitioner.log
            summary["revoked_keys"] = self.prober.summary()
            summary["leases"] = partitions.check_leases(self.consumer.sends, observed["leases"],
                                                        {f"relay-{i}" for i in range(1, args.relays + 1)} | {"receiver"})
            summary["thread_errors"] = [f"{t.name}: {t.error!r}" for t in (self.partitioner, self.prober) if t.error is not None]
        summary.update({
            "settled": settled, "settle_state": state, "time_to_settle_s": round(settle_time, 1),
            "without_outcome_tags": untagged, "tags_required": args.tags,
            "workload_s": round(workload_time, 1), "wall_s": round(time.monotonic() - started, 1),
            "kills": {k: self.kills[k] for k in self.components}, "client_retries": dict(workload.retries),
            "tracebacks": self.tracebacks(),
            "seed": args.seed, "workdir": str(self.workdir) if args.keep else None,
        })
        summary["ok"] = verdict(summary) == []
        summary["problems"] = verdict(summary)
        return summary

    def tracebacks(self) -> dict:
        """Tracebacks per component log: expected while a dependency is down (logged and retried);
        read them with --keep."""
        out = {}
        for log in sorted(self.workdir.glob("*.log")):
            n = log.read_text(errors="replace").count("Traceback (most recent call last)")
            if n:
                out[log.stem] = n
        return out

    def receiver_codes(self) -> dict:
        """The receiver's answers by path and status code, from gunicorn's access log (every start)."""
        codes: dict[str, Counter] = defaultdict(Counter)
        try:
            text = (self.workdir / "receiver.log").read_text(errors="replace")
        except OSError:
            return {}
        for m in ACCESS_LINE.finditer(text):
            who = "forger" if m["agent"] == FORGER_AGENT else "mlflow" if m["path"].startswith("/webhooks/") else "other"
            codes[f"{m['method']} {m['path']} ({who})"][m["code"]] += 1
        return {k: dict(v) for k, v in sorted(codes.items())}

    @staticmethod
    def _stop(child: Child) -> None:
        try:
            child.stop(timeout=5.0)
        except Exception as e:  # pragma: no cover - go on stopping the others
            print(f"warning: stopping {child.name}: {e}", file=sys.stderr)

    def close(self) -> None:
        try:
            self._close()
        finally:
            if self.network is not None:
                self.network.close()  # the namespaces, pairs and relays, even after a failure or Ctrl-C

    def _close(self) -> None:
        self.stop_chaos.set()
        self.stop_partitions.set()
        self.stop_forger.set()
        if self.partitioner is not None:
            self.partitioner.heal_all()
        # Everything but PostgreSQL at once (each its own group), then PostgreSQL (fast shutdown).
        stoppers = [threading.Thread(target=self._stop, args=(child,)) for name, child in self.children.items() if name != "postgres"]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        if "postgres" in self.children:
            self._stop(self.children["postgres"])
        if self.consumer is not None:
            self.consumer.stop()
        for var, value in self.saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        if self.args.keep:
            print(f"kept {self.workdir} (logs of every component)", flush=True)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def analyse(done: list[Done], observed: dict, consumer: Consumer, forger: Forger, receiver_codes: dict, model_name: str) -> dict:
    """The set test: what the workload added against what the system holds, read once."""
    not_started = [d for d in done if d.gave_up and d.gave_up.startswith("not started")]
    specs = {d.spec.token_id: d.spec for d in done if d not in not_started}
    versions: dict[str, list[str]] = defaultdict(list)  # token -> its versions, from MLflow
    for version, token_id in observed["versions"].items():
        versions[token_id].append(version)
    rows: dict[str, list] = defaultdict(list)  # version -> its registration rows
    for row in observed["registrations"]:
        rows[row[1]].append(row)
    events_of: dict[tuple[str, str], list[str]] = defaultdict(list)  # (token, type) -> event ids
    outbox_ids = set()
    for event_id, event_type, payload in observed["outbox"]:
        outbox_ids.add(event_id)
        events_of[(payload.get("token_id"), event_type)].append(event_id)
    accepted = observed["accepted"]

    lost, unexpected, dup_transitions, extra_versions, not_created = [], [], [], [], []
    counts, reasons = Counter(), Counter()
    for token_id, spec in specs.items():
        counts[f"expected_{spec.expected}"] += 1
        mine = sorted(versions.get(token_id, []), key=int)
        if not mine:
            not_created.append(token_id)
            continue
        if len(mine) > 1:
            extra_versions.append(f"{token_id}: versions {mine}")
        outcomes = []
        for v in mine:
            r = rows.get(v, [])
            if not r:
                lost.append(f"{model_name} v{v} (token {token_id}, expected {spec.expected}): no decision")
            if len(r) > 1:
                dup_transitions.append(f"{model_name} v{v}: {len(r)} registration rows")
            outcomes += [(v, x[3]) for x in r[:1]]
            for x in r[:1]:
                if x[3] == "rejected":
                    reasons[re.sub(r"-?\d+(\.\d+)?", "N", x[4])[:90]] += 1
                    if spec.expected == "rejected" and len(mine) == 1 and "below the baseline" not in x[4]:
                        unexpected.append(f"{model_name} v{v} (token {token_id}, metric {spec.value}): rejected for another reason: {x[4]}")
        registered = [v for v, o in outcomes if o == "registered"]
        token = observed["tokens"].get(token_id)
        if len(registered) > 1:
            dup_transitions.append(f"token {token_id} registered by versions {registered}")
        decided = len(outcomes) == len(mine)
        if spec.expected == "registered":
            if decided and len(registered) != 1:
                unexpected.append(f"token {token_id}: metric {spec.value} >= {BASELINE} but decisions {outcomes}")
            if registered and (token is None or token[1] != "registered" or token[3] != registered[0]):
                unexpected.append(f"token {token_id}: registration v{registered[0]} but token row {token}")
            if decided and token is not None and token[1] != "registered":
                unexpected.append(f"token {token_id}: metric {spec.value} passes but the token is {token[1]}")
        else:
            if registered:
                unexpected.append(f"token {token_id}: metric {spec.value} < {BASELINE} but registered as v{registered[0]}")
            if token is not None and token[1] != "draft":
                unexpected.append(f"token {token_id}: rejected, but the token is {token[1]}")
        if registered:
            counts["registered"] += 1
        elif decided:
            counts["rejected"] += 1
        # exactly one of each event per registered token; none for a rejected one
        for event_type in ("model_registered", "token_ready_for_deploy"):
            ids = events_of.get((token_id, event_type), [])
            if registered and not ids:
                lost.append(f"token {token_id}: registered without a {event_type} event in the outbox")
            if len(ids) > 1:
                dup_transitions.append(f"token {token_id}: {len(ids)} {event_type} events")
            if not registered and ids:
                unexpected.append(f"token {token_id}: {event_type} event without a registration")

    events_lost = sorted(outbox_ids - set(accepted))
    unexpected_deliveries = sorted(set(accepted) - outbox_ids)
    foreign = sorted(t for t in {p.get("token_id") for _, _, p in observed["outbox"]} if t not in specs)
    return {
        "registrations": len(specs), "not_started": len(not_started),
        "versions_created": sum(len(v) for t, v in versions.items() if t in specs),
        "not_created": len(not_created), "not_created_ids": not_created[:20],
        "registered": counts["registered"], "expected_registered": counts["expected_registered"],
        "rejected": counts["rejected"], "expected_rejected": counts["expected_rejected"],
        "rejection_reasons": dict(reasons.most_common()),
        "lost_decisions": len(lost), "lost": lost[:50],
        "unexpected_decisions": len(unexpected), "unexpected": unexpected[:50],
        "duplicate_transitions": len(dup_transitions), "duplicates": dup_transitions[:50],
        "tokens_with_extra_versions": len(extra_versions), "extra_versions": extra_versions[:20],
        "outbox_events": len(outbox_ids), "events_foreign_tokens": len(foreign),
        "events_lost": len(events_lost), "events_lost_ids": events_lost[:20],
        "unexpected_deliveries": len(unexpected_deliveries),
        "deliveries": observed["deliveries"],
        "consumer": {"requests": consumer.requests, "answered_500": consumer.failed, "accepted": len(accepted),
                     "duplicates_deduped": consumer.duplicates, "bad_signature": consumer.bad_signature,
                     "webhook_id_mismatch": consumer.id_mismatch},
        "forger": {"sent": forger.sent(), "answered": forger.answered(), "refused": forger.refused(), "answered_500": forger.fives(),
                   "not_refused": forger.wrong[:20], "by_kind": {k: {str(c): n for c, n in v.items()} for k, v in sorted(forger.codes.items())}},
        "receiver_codes": receiver_codes,
        "receiver_500s": sum(c.get("500", 0) for c in receiver_codes.values()),
    }


def verdict(s: dict) -> list[str]:
    """Why the run failed; empty when it passed."""
    problems = []
    for key in ("lost_decisions", "unexpected_decisions", "duplicate_transitions", "events_lost", "unexpected_deliveries", "receiver_500s"):
        if s[key]:
            problems.append(f"{key}: {s[key]}")
    if s["forger"]["answered_500"]:
        problems.append(f"forged deliveries answered 500: {s['forger']['answered_500']}")
    if s["forger"]["not_refused"]:
        problems.append(f"forged deliveries not refused: {s['forger']['not_refused']}")
    if s["consumer"]["bad_signature"] or s["consumer"]["webhook_id_mismatch"]:
        problems.append(f"consumer saw bad signatures or mismatched ids: {s['consumer']}")
    if s["deliveries"].get("dead"):
        problems.append(f"dead deliveries: {s['deliveries']['dead']}")
    if "partitions" in s:
        if s["revoked_keys"]["let_in_after_revoke"]:
            problems.append(f"revoked keys let in after their revoke returned: {s['revoked_keys']['let_in_after_revoke']}")
        if not s["revoked_keys"]["keys_revoked"]:
            problems.append("no key was revoked during the run")
        if s["leases"]["sends_outside_a_lease"]:
            problems.append(f"deliveries sent outside their sender's lease: {s['leases']['sends_outside_a_lease']}")
        if s["leases"]["overlapping_leases"]:
            problems.append(f"a delivery claimed before another's lease ran out: {s['leases']['overlapping_leases']}")
        if s["thread_errors"]:
            problems.append(f"partition threads failed: {s['thread_errors']}")
    if not s["settled"]:
        problems.append(f"not settled: {s['settle_state']}")
    if s.get("tags_required") and s.get("without_outcome_tags"):
        problems.append(f"decided versions without outcome tags: {len(s['without_outcome_tags'])}")
    if s["not_created"]:
        problems.append(f"registrations the workload could not create: {s['not_created']}")
    return problems


def report(s: dict) -> str:
    kills = ", ".join(f"{k} {n}" for k, n in s["kills"].items())
    c, f = s["consumer"], s["forger"]
    lines = [
        f"registrations {s['registrations']} (not started within --duration: {s['not_started']})  versions created {s['versions_created']}  not created {s['not_created']}",
        f"registered {s['registered']} (expected {s['expected_registered']})  rejected {s['rejected']} (expected {s['expected_rejected']})",
        f"rejection reasons {s['rejection_reasons']}",
        f"lost decisions {s['lost_decisions']}  unexpected decisions {s['unexpected_decisions']}  duplicate transitions {s['duplicate_transitions']}"
        f"  tokens with a second version (client retries) {s['tokens_with_extra_versions']}",
        f"outbox events {s['outbox_events']}  events lost {s['events_lost']}  unexpected deliveries {s['unexpected_deliveries']}"
        f"  deliveries by state {s['deliveries']}",
        f"consumer: {c['requests']} requests, {c['answered_500']} answered 500 on purpose, {c['accepted']} accepted, "
        f"{c['duplicates_deduped']} duplicates deduped, {c['bad_signature']} bad signatures",
        f"forger: {f['sent']} sent, {f['answered']} answered, {f['refused']} refused as expected, {f['answered_500']} x 500; by kind {f['by_kind']}",
        f"receiver answers (access log): {s['receiver_codes']}",
        f"kills: {kills}",
        f"client retries: {s['client_retries']}",
        f"tracebacks in the logs (logged and retried while a dependency was down): {s['tracebacks']}",
        f"workload {s['workload_s']}s, time to settle {s['time_to_settle_s']}s ({s['settle_state']}), wall {s['wall_s']}s",
        f"decided versions without outcome tags at the end: "
        f"{'-' if s['without_outcome_tags'] is None else len(s['without_outcome_tags'])}"
        f"{' (waited for them: --tags)' if s['tags_required'] else ' (not waited for; --tags waits)'}",
    ]
    for key in ("lost", "unexpected", "duplicates", "extra_versions", "events_lost_ids", "not_created_ids"):
        for line in s[key]:
            lines.append(f"  {key}: {line}")
    if "partitions" in s:
        k, le = s["revoked_keys"], s["leases"]
        lines += [
            "partitions by link: " + "; ".join(f"{link}: {v}" for link, v in s["partitions"].items()),
            f"revoked keys: {k['keys_revoked']} revoked ({k['revokes_begun_while_the_gateway_was_cut_off']} begun while the gateway was cut off, "
            f"{k['revokes_that_waited_for_a_lease']} waited for a lease, {k['revokes_that_failed']} failed"
            f" with PostgreSQL down; revoke took {k['revoke_seconds']}); answers before the revoke returned {k['before_revoke']};"
            f" after it {k['after_revoke']}; LET IN after the revoke returned: {k['let_in_after_revoke']}",
            f"deliveries: {le['sends']} sends; outside their sender's lease {le['sends_outside_a_lease']}; overlapping leases"
            f" {le['overlapping_leases']}; sent by two senders {le['sent_by_two_senders']} (two relay workers"
            f" {le['sent_by_two_relay_workers']}), each deduplicated by webhook-id ({s['consumer']['duplicates_deduped']} duplicates)",
        ]
        for key in ("let_in",):
            for line in k[key]:
                lines.append(f"  {key}: {line}")
        for key in ("outside", "overlapping"):
            for line in le[key]:
                lines.append(f"  {key}: {line}")
    lines.append("PASS" if s["ok"] else "FAIL: " + "; ".join(s["problems"]))
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--registrations", type=int, default=100, help="distinct registrations to add (100; 1000 by hand)")
    p.add_argument("--duration", type=float, default=120.0, help="seconds of workload and kills at most (120); registrations are spread over 3/4 of it")
    p.add_argument("--spread", type=float, default=None, help="seconds the registrations are spread over (3/4 of --duration): a "
                   "shorter spread under a longer --duration lets a slow machine start them all, and a fast one stop early")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--kill-interval", type=float, default=5.0, help="seconds between one restart and the next kill, on average (5)")
    p.add_argument("--min-kills", type=int, default=1, help="kills of each kind before the chaos may stop, within --duration (1)")
    p.add_argument("--pause", type=float, default=2.0, help="a killed component stays down 0.3 s to this many seconds (2)")
    p.add_argument("--clients", type=int, default=4, help="client threads (4)")
    p.add_argument("--relays", type=int, default=2, help="hokusai events relay workers (2)")
    p.add_argument("--reconcile-interval", type=float, default=2.0, help="seconds between reconcile sweeps (2)")
    p.add_argument("--settle-timeout", type=float, default=180.0, help="seconds to wait after healing (180)")
    p.add_argument("--retry-base", type=float, default=0.5, help="HOKUSAI_RELAY_RETRY_BASE (0.5)")
    p.add_argument("--retry-cap", type=float, default=4.0, help="HOKUSAI_RELAY_RETRY_CAP (4)")
    p.add_argument("--lease", type=float, default=5.0, help="HOKUSAI_RELAY_LEASE (5)")
    p.add_argument("--partitions", action="store_true", help="also cut links silently (root: network namespaces): the gateway and the "
                   "receiver from PostgreSQL, relay-1 from PostgreSQL mid-lease, the receiver from MLflow; and revoke keys through the run")
    p.add_argument("--partition-interval", type=float, default=4.0, help="seconds between one healing and the next cut, on average (4)")
    p.add_argument("--max-cut", type=float, default=6.0, help="a cut lasts 1 s to this many seconds (6); relay-1's the lease and 1-3 s more")
    p.add_argument("--reads", choices=("server", "store"), default="server",
                   help="the receiver and the sweep read MLflow through its server (server), or its SQLite database "
                        "directly, HOKUSAI_MLFLOW_STORE_URI, as `hokusai up` runs them (store)")
    p.add_argument("--tags", action="store_true", help="after settling, wait (within --settle-timeout) until every version "
                   "carries its outcome tags, and fail if one does not (the sweep writes lost ones 30 s after the decision)")
    p.add_argument("--keep", action="store_true", help="keep the work directory and its logs")
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def run(argv: list[str]) -> dict:
    """One run with the command line's options; everything started is stopped before it returns."""
    chaos = Chaos(parser().parse_args(argv))
    try:
        return chaos.run()
    finally:
        chaos.close()


def main() -> int:
    args = parser().parse_args()

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)  # also where it was inherited ignored (a background job of a script)
    print(benchlib.machine_facts(), flush=True)
    print("command: " + " ".join(["bench/chaos.py", *sys.argv[1:]]), flush=True)
    try:
        summary = run(sys.argv[1:])
    except MissingPrerequisite as e:
        print(f"cannot run: {e}", file=sys.stderr)
        return 2
    print()
    print(report(summary))
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    print(benchlib.finished())
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
