"""The HTTP API against MLflow's own, side by side in one run (issue 10), and the key check.

* Listing: ``GET /api/v1/tokens?limit=100`` over 10,000 tokens (gunicorn, 1 worker, PostgreSQL)
  against MLflow's ``GET /api/2.0/mlflow/registered-models/search?max_results=100`` over 10,000
  registered models (``mlflow server --workers 1``, PostgreSQL), both on this machine. Requests
  alternate between the two servers, one at a time, each with a key or not as it needs; the goal
  is ours / MLflow's <= 1.0 (ratio of medians).
* Auth: ``keys.authenticate`` (one indexed SELECT, SHA-256, constant-time compare) on PostgreSQL,
  in this process, median in microseconds; the goal is under 1 ms.

The 10,000 registered models are inserted into MLflow's own ``registered_models`` table in one
statement (what 10,000 ``create_registered_model`` calls would leave, minutes faster).

    .venv/bin/python bench/bench_api.py --rows 10000 --requests 300 --auth 3000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402  (puts the repository root on sys.path)


def fill_tokens(url: str, n: int) -> None:
    import sqlalchemy as sa

    from hokusai_mlflow_plugin.db.models import Token, utcnow
    from hokusai_mlflow_plugin.db.session import get_engine

    now = utcnow()
    rows = [{"token_id": f"BENCH-{i:06d}", "status": "draft", "metric_name": "auroc", "baseline_value": 0.8,
             "created_at": now, "updated_at": now} for i in range(n)]
    with get_engine(url).begin() as conn:
        conn.execute(sa.insert(Token.__table__), rows)
        conn.exec_driver_sql("ANALYZE hokusai_tokens")


def fill_registered_models(mlflow_db: str, n: int) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(mlflow_db.replace("postgresql://", "postgresql+psycopg://"))
    now = int(time.time() * 1000)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO registered_models (name, creation_time, last_updated_time, description) "
                    "SELECT 'bench-model-' || lpad(g::text, 6, '0'), :now, :now, '' FROM generate_series(1, :n) g"),
            {"now": now, "n": n},
        )
        conn.exec_driver_sql("ANALYZE registered_models")
    engine.dispose()


def timed_gets(session, url: str, headers: dict) -> float:
    started = time.perf_counter()
    response = session.get(url, headers=headers, timeout=60)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}: {response.text[:300]}")
    return elapsed


def listing(args) -> None:
    import requests

    from hokusai_mlflow_plugin.auth import keys
    from hokusai_mlflow_plugin.db.session import session_factory
    from hokusai_mlflow_plugin.stack.local import receiver_command
    from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port

    with benchlib.Backend("postgresql") as b:
        fill_tokens(b.db_url, args.rows)
        fill_registered_models(b.mlflow.backend_uri, args.rows)
        with session_factory(b.db_url).begin() as s:
            key = keys.create(s, "bench", ("read",)).key
        port = free_port()
        env = {**os.environ, "HOKUSAI_DATABASE_URL": b.db_url, "HOKUSAI_WEBHOOK_SECRET": "bench", "MLFLOW_TRACKING_URI": b.mlflow.url}
        api = ManagedProcess("api", receiver_command("127.0.0.1", port, 1), env, b.workdir / "api.log").start()
        try:
            api.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
            ours_url = f"http://127.0.0.1:{port}/api/v1/tokens?limit=100"
            theirs_url = f"{b.mlflow.url}/api/2.0/mlflow/registered-models/search?max_results=100"
            session = requests.Session()
            assert len(session.get(ours_url, headers={"Authorization": f"Bearer {key}"}).json()["items"]) == 100
            assert len(session.get(theirs_url).json()["registered_models"]) == 100
            ours, theirs = [], []
            for i in range(args.warmup + args.requests):
                pair = [(ours, ours_url, {"Authorization": f"Bearer {key}"}), (theirs, theirs_url, {})]
                for bucket, url, headers in (pair if i % 2 == 0 else pair[::-1]):
                    elapsed = timed_gets(session, url, headers)
                    if i >= args.warmup:
                        bucket.append(elapsed)
        finally:
            api.stop()
    o, t = benchlib.summary(ours), benchlib.summary(theirs)
    print(f"\n[listing] first page of 100 over {args.rows} rows, {args.requests} requests each, interleaved (ms)")
    print(benchlib.table([("ours: GET /api/v1/tokens?limit=100 (key checked)", o),
                          ("MLflow: GET .../registered-models/search?max_results=100", t)]))
    print(f"ratio ours / MLflow, medians: {o['median'] / t['median']:.3f}; p99: {o['p99'] / t['p99']:.3f}")


def auth(args) -> None:
    from hokusai_mlflow_plugin.auth import keys
    from hokusai_mlflow_plugin.db.migrate import upgrade
    from hokusai_mlflow_plugin.db.session import dispose, get_engine, read_engine, session_factory
    from tests.harness import create_pg_database, drop_pg_database

    url = create_pg_database("hokusai_bench_auth")
    try:
        upgrade(url)
        with session_factory(url).begin() as s:
            for i in range(1000):  # a table of keys, not one row
                keys.create(s, f"other-{i}", ("read",))
            key = keys.create(s, "bench", ("read",)).key
        engine = read_engine(get_engine(url))
        spent = []
        for i in range(args.auth + 200):
            started = time.perf_counter()
            with engine.begin() as conn:
                keys.authenticate(conn, key)
            if i >= 200:
                spent.append((time.perf_counter() - started) * 1e6)
    finally:
        dispose(url)
        drop_pg_database(url)
    print(f"\n[auth] keys.authenticate on PostgreSQL (1,001 keys), {args.auth} checks after 200 warm-up (µs)")
    print(f"median {statistics.median(spent):.0f} µs, p99 {benchlib.pct(spent, 99):.0f} µs, min {min(spent):.0f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--auth", type=int, default=3000)
    args = parser.parse_args()
    print(benchlib.machine_facts())
    listing(args)
    auth(args)
    print(benchlib.finished())


if __name__ == "__main__":
    main()
