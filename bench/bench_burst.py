"""A burst of registrations: do the decisions keep pace with MLflow? (issue 13)

The shape a new user tried: ``mlflow server --workers 1`` on the ``hokusai+sqlite`` store; the
receiver under gunicorn (2 workers, as ``hokusai up``) on PostgreSQL, with a healthy downstream
webhook (a loopback consumer that answers 204); ``--versions`` draft tokens, each with its run and
finalised LoggedModel (``benchlib.prepare``, outside the timed region); then ``--writers`` client
threads each call ``MlflowClient.create_model_version(...)`` for their own tokens, as a
hyper-parameter sweep registering its candidates does.

Measured side by side in one run:

* MLflow's own rate: versions / (last ``create_model_version`` returned - first one started);
* the decision rate: versions / (last registration row's ``created_at`` - first create started);
* the decision lag per version: its registration row's ``created_at`` - the moment its
  ``create_model_version`` returned (both clocks of this machine);
* the downstream lag: the consumer's arrival of ``token_ready_for_deploy`` - the same moment;
* per version: the MLflow requests (MLflow's access log, by endpoint) and the webhook deliveries
  the receiver answered (gunicorn's access log), over the whole burst including its tail.

Issue 23 added, in the same run, **MLflow alone** as the baseline: the same server (``--workers 1``,
SQLite) with MLflow's plain registry store and no webhook, the same prepared runs and LoggedModels,
the same writers. The rounds alternate (alone, attached, alone, attached, ...) so that both see the
same machine. ``--pin yes``: MLflow on CPU 0, every other process this script starts (the receiver
under gunicorn, the token database's PostgreSQL, the door and the downstream consumer) on CPU 1, in
both runs (``taskset``). The token database is a PostgreSQL server of the run's own (``--token-db
private``, chaos.py's): with the machine's shared server (``--token-db shared``, the earlier
sessions' runs), whose processes are not ours to pin, each decision's writes ran on MLflow's core
too (issue 23, fifth session). ``--pin both`` runs every round unpinned, then pinned.
Since the sixth session the pinned writers run on MLflow's core (``--writers-cpu mlflow``), in
every round alike: there a busy Hokusai core slows only Hokusai, not MLflow's clients, and the
ratio is what Hokusai costs MLflow; ``--writers-cpu hokusai`` is the earlier sessions' placement.

Each round starts its stacks afresh, a minute apart; on a machine whose speed drifts by a third
within minutes, ``--interleave CYCLES`` starts one stack of each kind per pinning mode and runs
their bursts in turn, back and forth (alone, door, attached, attached, door, alone, ...), each on a
new registered model with its own prepared sources, the stacks idle but running between their turns.

Per round it also reports MLflow's side per decided version: its CPU time (its process group in
``/proc``), its requests by route, the webhook deliveries it dispatched (the receiver's access log),
and the database writes it made (the write routes; "database is locked" in its log).

Goals (issue 23): MLflow's rate attached >= 0.8 x alone, pinned; decisions >= 0.95 x MLflow's rate;
p99 decision lag < 1 s; at most 3 MLflow requests per decided version.

    .venv/bin/python bench/bench_burst.py --versions 300 --writers 8 --rounds 2 --pin both
    .venv/bin/python bench/bench_burst.py --versions 300 --writers 8 --interleave 8 --pin yes --door --reads store
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

SECRET = "bench-burst-secret"
REQUEST_LINE = re.compile(r'"(GET|POST|PATCH|DELETE|PUT) (/[^ ?"]*)')
LOGGED_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")
WRITE_ROUTES = ("create", "set-tag", "delete-tag", "update")  # the requests that take SQLite's write lock
MLFLOW_CPU, HOKUSAI_CPU = "0", "1"
WRITERS_CPU = {"mlflow": MLFLOW_CPU, "hokusai": HOKUSAI_CPU}  # --writers-cpu


class Consumer(ThreadingHTTPServer):
    """The healthy downstream webhook: 204 to everything, the arrival time of each token's event."""

    daemon_threads = True

    def __init__(self, cpus: set[int] | None = None, delay: float = 0.0):
        self.arrivals: dict[str, float] = {}
        self.deliveries = 0
        self._count = threading.Lock()  # its handler threads count together
        consumer = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as a production endpoint (and the receiver's gunicorn) has it: with
            # HTTP/1.0 every delivery paid a new connection, in MLflow's dispatch to the door and
            # in the receiver's relay (issue 23, third session).
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.time()
                with consumer._count:
                    consumer.deliveries += 1
                try:
                    event = json.loads(body)
                    if event["event_type"] == "token_ready_for_deploy":
                        consumer.arrivals.setdefault(event["payload"]["token_id"], now)
                except (ValueError, KeyError, TypeError):
                    pass
                if delay:  # a door that answers as late as the receiver does (--door-delay)
                    time.sleep(delay)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)

        def serve():
            if cpus:  # a connection's thread, started from this one, inherits its CPUs
                os.sched_setaffinity(0, cpus)
            self.serve_forever()

        threading.Thread(target=serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


def requests_by_endpoint(log: Path, since: int) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    with log.open(errors="replace") as f:
        f.seek(since)
        for line in f:
            m = REQUEST_LINE.search(line)
            if m:
                counts[f"{m.group(1)} {LOGGED_MODEL_ID.sub('{model_id}', m.group(2))}"] += 1
    return counts


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in the process group (``/proc``)."""
    from hokusai_mlflow_plugin.stack.process import processes_where

    return benchlib.cpu_seconds(processes_where(pgrp=pgid))


def quiet_tail(log: Path, quiet: float = 2.0, limit: float = 30.0) -> None:
    """Wait until MLflow's access log has not grown for ``quiet`` seconds (at most ``limit``): the
    outcome tags are written after the answer, and a fixed 3 s tail missed some of them under load."""
    deadline, size, since = time.monotonic() + limit, -1, time.monotonic()
    while time.monotonic() < deadline:
        now = log.stat().st_size
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.2)


def wait_for_outcome_tags(backend: str, name: str, versions: int, deadline: float) -> tuple[int, float]:
    """(versions of ``name`` with their ``hokusai_status`` tag, when the count was last seen): read in
    MLflow's database itself (``backend``, its SQLAlchemy URL), so that the wait asks MLflow's server nothing."""
    import sqlite3
    from contextlib import closing

    import psycopg

    from hokusai_mlflow_plugin.db.session import libpq_dsn

    query = "SELECT count(*) FROM model_version_tags WHERE name = %s AND key = 'hokusai_status'"
    if backend.startswith("sqlite:///"):
        connection = closing(sqlite3.connect(f"file:{backend.removeprefix('sqlite:///')}?mode=ro", uri=True, timeout=5))
        query = query.replace("%s", "?")
    else:
        connection = psycopg.connect(libpq_dsn(backend), autocommit=True)
    with connection as conn:
        while True:
            tagged = conn.execute(query, (name,)).fetchone()[0]
            if tagged >= versions or time.time() > deadline:
                return tagged, time.time()
            time.sleep(0.1)


def set_affinity(pids: list[int], cpus: set[int]) -> None:
    for pid in pids:
        try:
            os.sched_setaffinity(pid, cpus)
        except ProcessLookupError:
            pass


@contextlib.contextmanager
def private_postgres(prefix: str):
    """A PostgreSQL server of this run's own (chaos.py's), stopped and its files removed at the end,
    however the run ends: (its child, its port, the URL of its database ``hokusai``)."""
    import tempfile

    import chaos

    workdir, started = Path(tempfile.mkdtemp(prefix=prefix)), []
    try:
        yield chaos.start_private_postgres(workdir, spawn=lambda child: started.append(child) or child.start())
    finally:
        for child in started:
            child.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def shared_database():
    """A fresh database on the machine's PostgreSQL server, dropped at the end: (None, None, its URL)."""
    from tests.harness import create_pg_database, drop_pg_database

    url = create_pg_database("hokusai_bench_burst")
    try:
        yield None, None, url
    finally:
        drop_pg_database(url)


def pinned(cmd: list[str], cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if cpu is not None else cmd


class Stack:
    """MLflow's server and what is attached to it, started once (``start``), then one timed burst
    per ``burst`` call, then stopped (``stop``). ``kind``: ``alone`` is MLflow alone (plain
    registry store, no webhook, no receiver); ``store`` the ``hokusai+`` store with no webhook (its
    stamping alone); ``door`` is the floor of any webhook design: the
    ``hokusai+`` store and the webhook, delivered to a door that answers 204 at once and asks MLflow
    nothing; ``attached`` is Hokusai reading MLflow through its server, ``attached-store`` Hokusai
    reading (and tagging) MLflow's database directly (``HOKUSAI_MLFLOW_STORE_URI``, as ``hokusai up``
    runs it)."""

    def __init__(self, args, db_url: str, kind: str, pin: bool, number: int, postgres=None, mlflow_postgres=None):
        self.args, self.db_url, self.kind, self.pin, self.number = args, db_url, kind, pin, number
        self.postgres = postgres  # the private token database's server (--token-db private), pinned with Hokusai
        self.mlflow_postgres = mlflow_postgres  # (server, port) of MLflow's database (--mlflow-db postgres), pinned with MLflow
        self.attached = kind.startswith("attached")
        self.mlflow = self.receiver = self.consumer = self.door = self.workdir = None
        self.own_affinity = os.sched_getaffinity(0)
        self.bursts = 0

    def cpu_seconds(self) -> tuple[float, float, float, float]:
        """CPU seconds so far of MLflow, the receiver, the private token database and MLflow's own
        PostgreSQL (0 for what this stack has not). Of a private server, the processes alive now: a
        backend that ended between two readings takes its share with it (the receiver's pool, and
        MLflow's, keep theirs open)."""
        mlflow_db = self.mlflow_postgres[0] if self.mlflow_postgres else None
        return (group_cpu_seconds(self.mlflow.pid), group_cpu_seconds(self.receiver.pid) if self.receiver else 0.0,
                benchlib.cpu_seconds(self.postgres.pids()) if self.postgres else 0.0,
                benchlib.cpu_seconds(mlflow_db.pids()) if mlflow_db else 0.0)

    def start(self) -> "Stack":
        import tempfile

        import psycopg
        from mlflow import MlflowClient

        from hokusai_mlflow_plugin.db.session import session_factory
        from hokusai_mlflow_plugin.stack.local import receiver_command
        from hokusai_mlflow_plugin.stack.mlflow_server import server_command, server_env, write_ahead_log
        from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port
        from tests.harness import TEST_ENCRYPTION_KEY

        args = self.args
        self.workdir = workdir = Path(tempfile.mkdtemp(prefix="hokusai-bench-burst-"))
        hokusai_cpus = {int(HOKUSAI_CPU)} if self.pin else None  # the door and the consumer run with Hokusai
        if self.postgres is not None:  # its backends, forked from now on, inherit the postmaster's CPUs
            set_affinity(self.postgres.pids(), {int(HOKUSAI_CPU)} if self.pin else self.own_affinity)
        if self.mlflow_postgres is not None:
            server, pg_port = self.mlflow_postgres
            set_affinity(server.pids(), {int(MLFLOW_CPU)} if self.pin else self.own_affinity)
            with psycopg.connect(host="127.0.0.1", port=pg_port, user="postgres", dbname="postgres", autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE mlflow_r{self.number}")
            self.backend = f"postgresql://postgres@127.0.0.1:{pg_port}/mlflow_r{self.number}"
        else:
            self.backend = f"sqlite:///{workdir / 'mlflow.db'}"
        port = free_port()
        self.url = url = f"http://127.0.0.1:{port}"
        env = server_env(TEST_ENCRYPTION_KEY, cache_ttl=1)
        for var in ("HOKUSAI_TOKEN_ID", "HOKUSAI_METRIC", "HOKUSAI_BASELINE", "MLFLOW_TRACKING_URI"):
            env.pop(var, None)
        if args.journal == "wal" and self.mlflow_postgres is None:  # as `hokusai up` runs it, in every round alike
            write_ahead_log(workdir / "mlflow.db")
        cmd = server_command(self.backend, workdir / "artifacts", "127.0.0.1", port,
                             workers=args.mlflow_workers, hokusai_store=self.kind != "alone")
        self.mlflow = ManagedProcess("mlflow server", pinned(cmd, MLFLOW_CPU if self.pin else None), env,
                                     workdir / "mlflow.log").start()
        self.mlflow.wait_http(url + "/health", timeout=120)
        self.client = client = MlflowClient(tracking_uri=url, registry_uri=url)
        self.sessions = session_factory(self.db_url)
        self.receiver_log = workdir / "receiver.log"
        if self.kind == "door":
            self.door = Consumer(hokusai_cpus, delay=args.door_delay / 1000)
            client.create_webhook(name="door", url=self.door.url, events=["model_version.created", "model_version_tag.set"],
                                  secret=SECRET)
            time.sleep(2.5)  # past MLFLOW_WEBHOOK_CACHE_TTL (1 s here)
        if self.attached:
            self.consumer = Consumer(hokusai_cpus)
            rport = free_port()
            renv = {k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "MLFLOW_"))}
            renv.update({
                "HOKUSAI_HOME": str(workdir / "home"), "HOKUSAI_DATABASE_URL": self.db_url, "HOKUSAI_WEBHOOK_SECRET": SECRET,
                "MLFLOW_TRACKING_URI": url, "HOKUSAI_LOG_LEVEL": "WARNING",
                **({"HOKUSAI_MLFLOW_STORE_URI": self.backend} if self.kind == "attached-store" else {}),
                "HOKUSAI_EVENT_WEBHOOK_URL": self.consumer.url,
                "HOKUSAI_EVENT_WEBHOOK_SECRET": "whsec_" + "YmVuY2gtYnVyc3Qtc2VjcmV0LWtleQ==",
            })
            rcmd = receiver_command("127.0.0.1", rport, args.workers)
            self.receiver = ManagedProcess("receiver (gunicorn)", pinned(rcmd, HOKUSAI_CPU if self.pin else None), renv,
                                           self.receiver_log).start()
            self.receiver.wait_http(f"http://127.0.0.1:{rport}/health", timeout=60)
            client.create_webhook(name="hokusai-receiver", url=f"http://127.0.0.1:{rport}/webhooks/mlflow",
                                  events=["model_version.created", "model_version_tag.set"], secret=SECRET)
            time.sleep(2.5)  # past MLFLOW_WEBHOOK_CACHE_TTL (1 s here)
        return self

    def prepare(self) -> tuple[str, list]:
        """A new registered model and ``--versions`` draft tokens with their runs and LoggedModels
        (outside the timed region): one burst's worth."""
        self.bursts += 1
        prepared = benchlib.prepare(self.client, self.sessions, self.args.versions, "bench-burst",
                                    tag=f"B{self.number}-{self.bursts}", threads=self.args.writers)
        name = f"bench-burst-{uuid.uuid4().hex[:8]}"
        benchlib.ensure_registered_model(self.client, name)
        return name, prepared

    def burst(self, name: str, prepared: list) -> dict:
        """``--writers`` threads create a version for each of ``prepared``; then, attached, wait for
        every decision, its downstream event and its outcome tags, and for MLflow's log to go quiet."""
        import psycopg
        from mlflow import MlflowClient

        from hokusai_mlflow_plugin.db.session import libpq_dsn

        args = self.args
        mlflow_mark = self.mlflow.log_path.stat().st_size
        receiver_mark = self.receiver_log.stat().st_size if self.receiver else 0
        door_mark = self.door.deliveries if self.door is not None else 0
        try:
            if self.pin:  # the writers' threads, started from this one, inherit its CPUs
                os.sched_setaffinity(0, {int(WRITERS_CPU[args.writers_cpu])})
            cpu0 = self.cpu_seconds()

            returned: dict[str, float] = {}
            writers_cpu: list[float] = []
            slices = [prepared[i::args.writers] for i in range(args.writers)]

            def writer(mine):
                own = MlflowClient(tracking_uri=self.url, registry_uri=self.url)
                spent = time.thread_time()
                for p in mine:
                    benchlib.create_version(own, name, p)
                    returned[p.token_id] = time.time()
                writers_cpu.append(time.thread_time() - spent)

            threads = [threading.Thread(target=writer, args=(s,)) for s in slices]
            started = time.time()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            created = max(returned.values())
            if self.door is not None:  # every delivery in (MLflow sends them from a pool, after its answer)
                deadline = time.time() + args.timeout
                while self.door.deliveries - door_mark < args.versions and time.time() < deadline:
                    time.sleep(0.05)
            result = {"kind": self.kind, "attached": self.attached, "pin": self.pin, "mlflow_rate": args.versions / (created - started),
                      "created_s": created - started, "writers_cpu_ms": sum(writers_cpu) * 1000 / args.versions}
            rows = []
            if self.attached:
                ids = [p.token_id for p in prepared]
                with psycopg.connect(libpq_dsn(self.db_url), autocommit=True) as conn:
                    deadline = time.time() + args.timeout
                    query = "SELECT token_id, outcome, created_at FROM hokusai_registrations WHERE token_id = ANY(%s)"
                    while time.time() < deadline:
                        rows = conn.execute(query, (ids,)).fetchall()
                        # this burst's tokens: a backlog of an earlier burst's events may arrive here too
                        if len(rows) >= args.versions and sum(t in self.consumer.arrivals for t in ids) >= args.versions:
                            break
                        time.sleep(0.05)
                result["tagged"], result["tags_s"] = wait_for_outcome_tags(self.backend, name, args.versions,
                                                                           time.time() + args.timeout)
                result["tags_s"] -= created
                quiet_tail(self.mlflow.log_path)  # the tail: the outcome tags and the deliveries they fire
            cpu1 = self.cpu_seconds()
        finally:
            os.sched_setaffinity(0, self.own_affinity)
        result["mlflow_calls"] = requests_by_endpoint(self.mlflow.log_path, mlflow_mark)
        result["receiver_calls"] = requests_by_endpoint(self.receiver_log, receiver_mark) if self.receiver else collections.Counter()
        result["door_deliveries"] = self.door.deliveries - door_mark if self.door is not None else 0
        result["mlflow_cpu_ms"] = (cpu1[0] - cpu0[0]) * 1000 / args.versions
        result["receiver_cpu_ms"] = (cpu1[1] - cpu0[1]) * 1000 / args.versions
        result["postgres_cpu_ms"] = (cpu1[2] - cpu0[2]) * 1000 / args.versions if self.postgres is not None else None
        result["mlflow_db_cpu_ms"] = (cpu1[3] - cpu0[3]) * 1000 / args.versions if self.mlflow_postgres is not None else None
        result["locked"] = self.mlflow.log_path.read_bytes()[mlflow_mark:].count(b"database is locked")  # mark: a byte offset
        if self.attached:
            decided_at = {t: (c if c.tzinfo else c.replace(tzinfo=UTC)).timestamp() for t, _, c in rows}
            result["outcomes"] = dict(collections.Counter(o for _, o, _ in rows))
            result["decided"] = len(rows)
            result["lag"] = [(decided_at[t] - returned[t]) * 1000 for t in decided_at if t in returned]
            # when the slowest 1% of decisions were asked for, in seconds into the burst: a stall shows as one moment
            slowest = sorted((decided_at[t] - returned[t], returned[t] - started) for t in decided_at if t in returned)
            result["slowest_at"] = [at for _, at in slowest[-max(1, len(slowest) // 100):]]
            result["downstream"] = [(self.consumer.arrivals[t] - returned[t]) * 1000 for t in self.consumer.arrivals if t in returned]
            result["decision_rate"] = len(rows) / (max(decided_at.values()) - started) if rows else 0.0
        return result

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
        if self.mlflow is not None:
            self.mlflow.stop()
        for server in (self.consumer, self.door):
            if server is not None:
                server.shutdown()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Stack":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def one_round(args, db_url: str, kind: str, pin: bool, number: int, postgres=None, mlflow_postgres=None) -> dict:
    """A fresh stack of ``kind``, one burst, stopped."""
    with Stack(args, db_url, kind, pin, number, postgres, mlflow_postgres) as stack:
        return stack.burst(*stack.prepare())


def report(r: dict, n: int) -> None:
    label = {"alone": "MLflow alone", "store": "the hokusai+ store alone (no webhook)", "door": "the door (store + webhook, 204 at once)", "attached": "attached, reads through MLflow's server",
             "attached-store": "attached, reads MLflow's database (HOKUSAI_MLFLOW_STORE_URI)"}[r["kind"]]
    label += ", pinned" if r["pin"] else ", unpinned"
    print(f"\n-- {label}: MLflow created {r['mlflow_rate']:.1f} versions/s ({r['created_s']:.1f} s)")
    if r["attached"]:
        print(f"   decided {r['decided']} {r['outcomes']} at {r['decision_rate']:.1f} versions/s, "
              f"ratio {r['decision_rate'] / r['mlflow_rate']:.2f} of MLflow's rate")
        print(benchlib.table([("   decision lag", benchlib.summary(r["lag"])), ("   downstream lag", benchlib.summary(r["downstream"]))],
                             cols=("median", "p90", "p99", "max"), digits=0))
        print(f"   outcome tags in MLflow: {r['tagged']} of {n} versions, {r['tags_s']:.1f} s after the last create returned")
        print(f"   the slowest 1% of decisions: versions created at {', '.join(f'{at:.1f}' for at in sorted(r['slowest_at']))} s into the burst")
    calls = r["mlflow_calls"]
    writes = sum(c for e, c in calls.items() if e.rsplit("/", 1)[-1] in WRITE_ROUTES)
    print(f"   MLflow per version: {sum(calls.values()) / n:.2f} requests, {writes / n:.2f} database writes, "
          f"{r['mlflow_cpu_ms']:.1f} ms CPU" + (f" and its PostgreSQL's {r['mlflow_db_cpu_ms']:.1f} ms" if r["mlflow_db_cpu_ms"] is not None else "")
          + f"; 'database is locked' in its log: {r['locked']}")
    print(f"   the writers (MLflow's clients) per version: {r['writers_cpu_ms']:.1f} ms CPU")
    for endpoint, count in calls.most_common():
        print(f"     {count / n:6.2f}  {endpoint}")
    if r["attached"]:
        print(f"   webhook deliveries MLflow dispatched per version: {sum(r['receiver_calls'].values()) / n:.2f}; "
              f"receiver CPU {r['receiver_cpu_ms']:.1f} ms per version"
              + (f", its token database's {r['postgres_cpu_ms']:.1f} ms" if r["postgres_cpu_ms"] is not None else ""))
    if r["kind"] == "door":
        print(f"   webhook deliveries MLflow dispatched per version: {r['door_deliveries'] / n:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--versions", type=int, default=300)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of the receiver (2)")
    parser.add_argument("--mlflow-workers", type=int, default=1, help="MLflow server workers (1)")
    parser.add_argument("--rounds", type=int, default=1, help="pairs of (alone, attached) per pinning mode")
    parser.add_argument("--pin", choices=("no", "yes", "both"), default="both")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for every decision")
    parser.add_argument("--reads", choices=("server", "store", "both"), default="both",
                        help="the attached rounds' receiver reads MLflow through its server, its database, or a round of each")
    parser.add_argument("--journal", choices=("wal", "delete"), default="wal",
                        help="MLflow's SQLite journal in every round: write-ahead log as `hokusai up` sets it (wal), or SQLite's default (delete)")
    parser.add_argument("--mlflow-db", choices=("sqlite", "postgres"), default="sqlite",
                        help="MLflow's backend: SQLite (the issue's setting, `hokusai up`'s), or a PostgreSQL server this run "
                             "starts, a fresh database each round, pinned with MLflow in pinned rounds")
    parser.add_argument("--token-db", choices=("private", "shared"), default="private",
                        help="the token database: a PostgreSQL server this run starts (chaos.py's), pinned with Hokusai in pinned "
                             "rounds (private), or a database on the machine's server at 127.0.0.1:5432, which runs on any core (shared)")
    parser.add_argument("--writers-cpu", choices=tuple(WRITERS_CPU), default="mlflow",
                        help="in pinned rounds, the writers' core: MLflow's (default), where only MLflow's server and its clients "
                             "share a core and Hokusai has the other to itself, or Hokusai's (the earlier sessions' runs), where a "
                             "busy receiver also slows MLflow's clients")
    parser.add_argument("--interleave", type=int, default=0, metavar="CYCLES",
                        help="instead of --rounds: start one stack of each kind per pinning mode and run CYCLES bursts on each, "
                             "in turn (alone, door, attached, then back), so that a drifting machine touches every kind alike")
    parser.add_argument("--store", action="store_true",
                        help="also a round of the hokusai+ registry store with no webhook: what its stamping costs MLflow")
    parser.add_argument("--door-delay", type=float, default=0.0, metavar="MS",
                        help="the door answers each delivery after this many milliseconds (the receiver's answer time under a "
                             "burst, to tell its cost to MLflow apart from the rest of Hokusai's)")
    parser.add_argument("--door", action="store_true",
                        help="also a round of the webhook design's floor: the store and the webhook, to a door that answers 204")
    args = parser.parse_args()

    from hokusai_mlflow_plugin.db.migrate import upgrade
    from hokusai_mlflow_plugin.db.session import dispose

    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a TERM stops what this run started
    print(benchlib.machine_facts(), flush=True)
    print(f"MLflow's database: {args.mlflow_db}" + (f", journal {args.journal}" if args.mlflow_db == "sqlite" else "")
          + f"; the token database: {args.token_db}; pinned writers on {args.writers_cpu}'s core", flush=True)
    results = []
    with contextlib.ExitStack() as stack:  # unwound in reverse: the token database's pool, MLflow's server, the token server
        postgres, _, db_url = stack.enter_context(private_postgres("hokusai-bench-burst-pg-") if args.token_db == "private"
                                                  else shared_database())
        mlflow_postgres = stack.enter_context(private_postgres("hokusai-bench-burst-mlflow-pg-"))[:2] if args.mlflow_db == "postgres" else None
        stack.callback(dispose, db_url)
        upgrade(db_url)
        attached = {"server": ("attached",), "store": ("attached-store",), "both": ("attached", "attached-store")}[args.reads]
        kinds = ("alone", *(("store",) if args.store else ()), *(("door",) if args.door else ()), *attached)
        number = 0

        def done(r: dict) -> None:
            report(r, args.versions)
            results.append(r)
            sys.stdout.flush()

        for pin in {"no": [False], "yes": [True], "both": [False, True]}[args.pin]:
            if args.interleave:  # one stack of each kind, their bursts in turn: A B C, C B A, A B C, ...
                with contextlib.ExitStack() as running:
                    stacks = {}
                    for kind in kinds:
                        number += 1
                        stacks[kind] = running.enter_context(Stack(args, db_url, kind, pin, number, postgres, mlflow_postgres))
                    for cycle in range(args.interleave):
                        for kind in kinds if cycle % 2 == 0 else kinds[::-1]:
                            done(stacks[kind].burst(*stacks[kind].prepare()))
                continue
            for _ in range(args.rounds):
                for kind in kinds:
                    number += 1
                    done(one_round(args, db_url, kind, pin, number, postgres, mlflow_postgres))

    n = args.versions
    print(f"\n== summary: {n} versions by {args.writers} writers per round")
    print("pin  reads    MLflow alone  attached  ratio  decided/MLflow  p99 lag   req/version  MLflow CPU ms/version (alone, attached)")
    for pin in (False, True):
        alone = [r for r in results if r["pin"] == pin and r["kind"] == "alone"]
        attached = [r for r in results if r["pin"] == pin and r["attached"]]
        doors = [r for r in results if r["pin"] == pin and r["kind"] == "door"]
        for d in doors:
            a = alone[doors.index(d)]
            print(f"{'yes' if pin else 'no':<9} the door alone: {d['mlflow_rate']:.1f}/s, ratio {d['mlflow_rate'] / a['mlflow_rate']:.2f}"
                  f" of MLflow alone; MLflow CPU {d['mlflow_cpu_ms']:.1f} ms/version")
        for kind, reads in (("attached", "server"), ("attached-store", "store")):
            for a, h in zip(alone, [r for r in attached if r["kind"] == kind]):
                print(f"{'yes' if pin else 'no':<4} {reads:<6} {a['mlflow_rate']:9.1f}/s {h['mlflow_rate']:8.1f}/s {h['mlflow_rate'] / a['mlflow_rate']:6.2f}"
                      f" {h['decision_rate'] / h['mlflow_rate']:11.2f} {benchlib.pct(h['lag'], 99):9.0f} ms"
                      f" {sum(h['mlflow_calls'].values()) / n:9.2f} {a['mlflow_cpu_ms']:12.1f}, {h['mlflow_cpu_ms']:.1f}")
        for kind, label in (("store", "the store alone"), ("door", "the door"), ("attached", "attached, server reads"), ("attached-store", "attached, store reads")):
            ratios = [h["mlflow_rate"] / a["mlflow_rate"] for a, h in zip(alone, [r for r in results if r["pin"] == pin and r["kind"] == kind])]
            if ratios:
                print(f"{'yes' if pin else 'no':<4} {label}: median ratio {statistics.median(ratios):.2f} of MLflow alone over {len(ratios)}"
                      f" (min {min(ratios):.2f}, max {max(ratios):.2f})")
    print("goals: attached >= 0.8 x alone (pinned); decided >= 0.95 x MLflow; p99 < 1000 ms; <= 3 requests per version")
    print(benchlib.finished())


if __name__ == "__main__":
    main()
