"""From ``create_model_version`` returning to the token being ``registered`` in the database,
through the real path (issue 3, target: p99 under 250 ms on this machine).

Run by hand, from the repository root, never in the test suite::

    .venv/bin/python bench/bench_registration_latency.py --n 200 --receiver gunicorn

Per kind (``--kinds sqlite,postgresql``): a real ``mlflow server`` (harness ``MlflowServer``:
``hokusai+`` registry store, backend of that kind, ``MLFLOW_WEBHOOK_CACHE_TTL=1``), a migrated token
database of the same kind, and the real receiver over HTTP on loopback:

* ``--receiver gunicorn`` (default): ``gunicorn --workers 2 'webhook_app:create_app()'`` in its own
  process group, as ``hokusai up`` runs it, configured by the environment only;
* ``--receiver thread``: ``tests.live_stack.ReceiverThread`` (werkzeug's threaded server) inside this
  process, as the integration tests run it. Its Python threads share this process's GIL with the
  poller below.

The MLflow webhook (``model_version.created`` and ``model_version_tag.set``, as ``hokusai webhook
install`` makes it) is created, then the script waits 2.5 s, past the cache TTL, and decides
``--warmup`` versions that are not counted. Outside the timed region it prepares one draft token,
run and LoggedModel per registration (``benchlib.prepare``). Per registration:

1. ``t0`` = the moment ``MlflowClient.create_model_version(name, "models:/m-...", model_id=...)``
   returns (what ``log_model(registered_model_name=...)`` sends);
2. the script polls the token row (``SELECT status, updated_at``, plain psycopg / sqlite3 in
   autocommit, no SQLAlchemy) on a fixed 2 ms grid (``--poll-ms``) until it reads ``registered``;
   the latency is the start of that poll minus ``t0``. The true moment lies between the previous
   poll's start and this one: the poll resolution (gap between two poll starts) is reported;
3. independently of polling, ``updated_at`` (the receiver's ``utcnow()`` when it built the token's
   compare-and-set, a few ms before its commit) minus the wall clock at ``t0`` is reported as
   "to the UPDATE";
4. then it waits ``--gap`` seconds, so that the receiver's trailing work (the two outcome tags and the
   ``model_version_tag.set`` deliveries they fire) is over before the next registration.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
import uuid
from datetime import UTC, datetime

import benchlib
from benchlib import (
    Backend,
    create_version,
    ensure_registered_model,
    machine_facts,
    prepare,
    summary,
    table,
)

SECRET = "bench-latency-secret"
TARGET_P99_MS = 250.0


class Receiver:
    """The real receiver over HTTP on loopback: gunicorn in a process group, or a ReceiverThread."""

    def __init__(self, mode: str, b: Backend, workers: int):
        from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port

        self.mode = mode
        self.proc = None
        self.thread = None
        if mode == "thread":
            from tests.live_stack import ReceiverThread

            self.thread = ReceiverThread({
                "HOKUSAI_WEBHOOK_SECRETS": (SECRET,),
                "HOKUSAI_DATABASE_URL": b.db_url,
                "MLFLOW_TRACKING_URI": b.mlflow.url,
                "HOKUSAI_RELAY": False,
            }).start()
            self.url = self.thread.url
        else:
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "MLFLOW_"))}
            env.update({
                "HOKUSAI_HOME": str(b.workdir / "home"),
                "HOKUSAI_DATABASE_URL": b.db_url,
                "HOKUSAI_WEBHOOK_SECRET": SECRET,
                "MLFLOW_TRACKING_URI": b.mlflow.url,
                "HOKUSAI_LOG_LEVEL": "WARNING",
            })
            self.proc = ManagedProcess("receiver (gunicorn)", [
                sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
                "webhook_app:create_app()",
            ], env, b.workdir / "receiver.log").start()
            self.url = f"http://127.0.0.1:{port}"
            self.proc.wait_http(self.url + "/health", timeout=60)

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()
        if self.proc is not None:
            self.proc.stop()


class TokenPoller:
    """``SELECT status, updated_at`` of one token on a plain DB-API connection in autocommit."""

    def __init__(self, kind: str, db_url: str):
        self.kind = kind
        if kind == "postgresql":
            import psycopg

            from hokusai_mlflow_plugin.db.session import libpq_dsn

            self.conn = psycopg.connect(libpq_dsn(db_url), autocommit=True)
            self.sql = "SELECT status, updated_at FROM hokusai_tokens WHERE token_id = %s"
        else:
            path = db_url.split("sqlite:///", 1)[1]
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.sql = "SELECT status, updated_at FROM hokusai_tokens WHERE token_id = ?"

    def read(self, token_id: str):
        return self.conn.execute(self.sql, (token_id,)).fetchone()

    def close(self) -> None:
        self.conn.close()


def as_epoch(value) -> float:
    if isinstance(value, str):  # SQLite hands back text: naive UTC
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:

        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def run_kind(kind: str, args) -> dict:
    with Backend(kind, keep=args.keep) as b:
        total = args.warmup + args.n
        t0 = time.perf_counter()
        prepared = prepare(b.client, b.sessions, total, "bench-latency", tag="BL")
        name = f"bench-latency-{uuid.uuid4().hex[:8]}"
        ensure_registered_model(b.client, name)
        print(f"[{kind}] prepared {total} tokens, runs and LoggedModels in {time.perf_counter() - t0:.1f}s", flush=True)

        receiver = Receiver(args.receiver, b, args.workers)
        poller = TokenPoller(kind, b.db_url)
        try:
            b.client.create_webhook(
                name="hokusai-receiver", url=receiver.url + "/webhooks/mlflow",
                events=["model_version.created", "model_version_tag.set"], secret=SECRET,
            )
            time.sleep(2.5)  # past MLFLOW_WEBHOOK_CACHE_TTL (1 s in the harness)
            latency, to_update, resolution, polls, create = [], [], [], [], []
            step = args.poll_ms / 1000.0
            for i, p in enumerate(prepared):
                c0 = time.perf_counter()
                create_version(b.client, name, p)
                t_create = time.perf_counter()
                wall_create = time.time()
                deadline = t_create + args.timeout
                previous = None
                tick = t_create
                n_polls = 0
                while True:
                    start = time.perf_counter()
                    row = poller.read(p.token_id)
                    n_polls += 1
                    if row is not None and row[0] == "registered":
                        break
                    if start > deadline:
                        raise SystemExit(f"[{kind}] token {p.token_id} not registered {args.timeout:g}s after create; "
                                         f"see {b.workdir} (run with --keep)")
                    previous = start
                    tick += step
                    pause = tick - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    else:
                        tick = time.perf_counter()
                if i >= args.warmup:
                    latency.append((start - t_create) * 1000)
                    to_update.append((as_epoch(row[1]) - wall_create) * 1000)
                    resolution.append((start - (previous if previous is not None else t_create)) * 1000)
                    polls.append(n_polls)
                    create.append((t_create - c0) * 1000)
                time.sleep(args.gap)
        finally:
            poller.close()
            receiver.stop()

        print()
        print(f"[{kind}] {args.n} registrations (after {args.warmup} warm-up), receiver {args.receiver}"
              f"{f' ({args.workers} workers)' if args.receiver == 'gunicorn' else ''}; load average now {benchlib.loadavg()}")
        s = summary(latency)
        print(table([
            ("create_model_version returned -> token registered (poll)", s),
            ("create_model_version returned -> UPDATE built (updated_at)", summary(to_update)),
            ("poll resolution: gap between the two last polls", summary(resolution)),
            ("for reference: create_model_version call itself", summary(create)),
        ]))
        print(f"[{kind}] polls per registration: median {summary(polls)['median']:.0f}; poll grid {args.poll_ms:g} ms")
        return {"kind": kind, "median": s["median"], "p99": s["p99"], "res_p99": summary(resolution)["p99"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="timed registrations per kind (200)")
    parser.add_argument("--warmup", type=int, default=10, help="registrations first, not counted (10)")
    parser.add_argument("--kinds", default="sqlite,postgresql", help="MLflow backend + token database kinds (sqlite,postgresql)")
    parser.add_argument("--receiver", choices=("gunicorn", "thread"), default="gunicorn")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2, as hokusai up)")
    parser.add_argument("--poll-ms", type=float, default=2.0, help="poll grid in ms (2)")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between registrations (0.3)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a registration counts as lost (30)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (server and receiver logs)")
    args = parser.parse_args()

    print(machine_facts(), flush=True)
    results = [run_kind(kind.strip(), args) for kind in args.kinds.split(",") if kind.strip()]
    print()
    for r in results:
        verdict = "met" if r["p99"] < TARGET_P99_MS else "MISSED"
        print(f"target p99 < {TARGET_P99_MS:g} ms, {r['kind']}: {verdict} (median {r['median']:.1f} ms, "
              f"p99 {r['p99']:.1f} ms, poll resolution p99 {r['res_p99']:.2f} ms)")
    print(benchlib.finished())


if __name__ == "__main__":
    main()
