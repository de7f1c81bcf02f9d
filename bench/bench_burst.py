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

Goals: decision rate >= 0.9 x MLflow's rate; p99 decision lag < 2 s.

    .venv/bin/python bench/bench_burst.py --versions 300 --writers 8
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
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


class Consumer(ThreadingHTTPServer):
    """The healthy downstream webhook: 204 to everything, the arrival time of each token's event."""

    daemon_threads = True

    def __init__(self):
        self.arrivals: dict[str, float] = {}
        self.deliveries = 0
        consumer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.time()
                consumer.deliveries += 1
                try:
                    event = json.loads(body)
                    if event["event_type"] == "token_ready_for_deploy":
                        consumer.arrivals.setdefault(event["payload"]["token_id"], now)
                except (ValueError, KeyError, TypeError):
                    pass
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--versions", type=int, default=300)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of the receiver (2)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for every decision")
    args = parser.parse_args()

    import psycopg
    from mlflow import MlflowClient

    from hokusai_mlflow_plugin.db.migrate import upgrade
    from hokusai_mlflow_plugin.db.session import dispose, session_factory
    from hokusai_mlflow_plugin.db.session import libpq_dsn
    from hokusai_mlflow_plugin.stack.local import receiver_command
    from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port
    from tests.harness import MlflowServer, create_pg_database, drop_pg_database

    print(benchlib.machine_facts(), flush=True)
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="hokusai-bench-burst-"))
    db_url = create_pg_database("hokusai_bench_burst")
    mlflow = receiver = None
    consumer = Consumer()
    try:
        upgrade(db_url)
        sessions = session_factory(db_url)
        mlflow = MlflowServer(backend_uri=f"sqlite:///{workdir / 'mlflow.db'}", workdir=workdir, kind="sqlite").start()
        client = MlflowClient(tracking_uri=mlflow.url, registry_uri=mlflow.url)
        t0 = time.perf_counter()
        prepared = benchlib.prepare(client, sessions, args.versions, "bench-burst", tag="BB")
        name = f"bench-burst-{uuid.uuid4().hex[:8]}"
        benchlib.ensure_registered_model(client, name)
        print(f"prepared {args.versions} tokens, runs and LoggedModels in {time.perf_counter() - t0:.1f} s", flush=True)

        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "MLFLOW_"))}
        env.update({
            "HOKUSAI_HOME": str(workdir / "home"), "HOKUSAI_DATABASE_URL": db_url, "HOKUSAI_WEBHOOK_SECRET": SECRET,
            "MLFLOW_TRACKING_URI": mlflow.url, "HOKUSAI_LOG_LEVEL": "WARNING",
            "HOKUSAI_EVENT_WEBHOOK_URL": consumer.url, "HOKUSAI_EVENT_WEBHOOK_SECRET": "whsec_" + "YmVuY2gtYnVyc3Qtc2VjcmV0LWtleQ==",
        })
        receiver_log = workdir / "receiver.log"
        receiver = ManagedProcess("receiver (gunicorn)", receiver_command("127.0.0.1", port, args.workers), env, receiver_log).start()
        receiver.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        client.create_webhook(name="hokusai-receiver", url=f"http://127.0.0.1:{port}/webhooks/mlflow",
                              events=["model_version.created", "model_version_tag.set"], secret=SECRET)
        time.sleep(2.5)  # past MLFLOW_WEBHOOK_CACHE_TTL (1 s in the harness)
        mlflow_log = mlflow.process.log_path
        mlflow_mark, receiver_mark = mlflow_log.stat().st_size, receiver_log.stat().st_size

        returned: dict[str, float] = {}
        slices = [prepared[i::args.writers] for i in range(args.writers)]

        def writer(mine):
            own = MlflowClient(tracking_uri=mlflow.url, registry_uri=mlflow.url)
            for p in mine:
                benchlib.create_version(own, name, p)
                returned[p.token_id] = time.time()

        threads = [threading.Thread(target=writer, args=(s,)) for s in slices]
        started = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        created = max(returned.values())

        conn = psycopg.connect(libpq_dsn(db_url), autocommit=True)
        deadline = time.time() + args.timeout
        while time.time() < deadline:
            n = conn.execute("SELECT count(*) FROM hokusai_registrations WHERE token_id LIKE 'BB-%'").fetchone()[0]
            if n >= args.versions and len(consumer.arrivals) >= args.versions:
                break
            time.sleep(0.05)
        rows = conn.execute("SELECT token_id, outcome, created_at FROM hokusai_registrations WHERE token_id LIKE 'BB-%'").fetchall()
        time.sleep(3.0)  # the tail: the outcome tags and the deliveries they fire
        mlflow_calls = requests_by_endpoint(mlflow_log, mlflow_mark)
        receiver_calls = requests_by_endpoint(receiver_log, receiver_mark)
        conn.close()
    finally:
        if receiver is not None:
            receiver.stop()
        if mlflow is not None:
            mlflow.stop()
        consumer.shutdown()
        dispose(db_url)
        drop_pg_database(db_url)

    decided_at = {t: (c if c.tzinfo else c.replace(tzinfo=UTC)).timestamp() for t, _, c in rows}
    outcomes = collections.Counter(o for _, o, _ in rows)
    lag = [(decided_at[t] - returned[t]) * 1000 for t in decided_at if t in returned]
    downstream = [(consumer.arrivals[t] - returned[t]) * 1000 for t in consumer.arrivals if t in returned]
    mlflow_rate = args.versions / (created - started)
    decision_rate = len(rows) / (max(decided_at.values()) - started) if rows else 0.0
    n = args.versions
    print(f"\n{n} versions by {args.writers} writers; decided {len(rows)} ({dict(outcomes)}), events downstream {len(consumer.arrivals)}")
    print(f"MLflow created   {mlflow_rate:6.1f} versions/s ({created - started:.1f} s)")
    print(f"receiver decided {decision_rate:6.1f} versions/s   ratio {decision_rate / mlflow_rate:.2f} (goal >= 0.9)")
    print(benchlib.table([("decision lag: create returned -> registration row", benchlib.summary(lag)),
                          ("downstream lag: create returned -> event at the consumer", benchlib.summary(downstream))],
                         cols=("median", "p90", "p99", "max"), digits=0))
    print(f"p99 decision lag {benchlib.pct(lag, 99):.0f} ms (goal < 2000 ms)")
    print(f"\nMLflow requests per version (the burst and its tail; {sum(mlflow_calls.values()) / n:.2f} in all):")
    for endpoint, count in mlflow_calls.most_common():
        print(f"  {count / n:6.2f}  {endpoint}")
    print(f"receiver requests per version ({sum(receiver_calls.values()) / n:.2f} in all):")
    for endpoint, count in receiver_calls.most_common():
        print(f"  {count / n:6.2f}  {endpoint}")
    print(benchlib.finished())


if __name__ == "__main__":
    main()
