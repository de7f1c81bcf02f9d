"""The reconcile sweep with nothing new, on a registry of 1,000 and of 10,000 versions (issue 13).

Per registry size: ``--versions`` model versions are made in MLflow's own SQL store (in this
process, before the server starts, which is much faster than over HTTP; then dated an hour ago, as
a registry that has been in use), each with its ``hokusai_token_id`` tag and a registration row in
the token database (PostgreSQL), so that every one is decided; ``--drafts`` more tokens wait as
drafts (their versions were rejected, or never came). The watermark is now. Then ``mlflow server
--workers 1`` starts on that registry and the script times ``--sweeps`` sweeps through it, counting
each sweep's MLflow requests (the server's access log), side by side:

* the sweep as it is: new versions, then ``DRAFT_SEARCHES`` drafts searched in turn;
* for comparison, one search per draft waiting (``searches=len(drafts)``), the sweep before issue 13.

Goal: with nothing new, a sweep on 10,000 versions takes <= 1 s with a bounded number of MLflow calls.

    .venv/bin/python bench/bench_reconcile.py --sizes 1000,10000 --drafts 300 --sweeps 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402


def fill_registry(mlflow_db: str, n: int, tokens: list[str]) -> list[tuple[str, str]]:
    """``n`` versions of 10 registered models in MLflow's SQL store, tagged with ``tokens``."""
    import sqlalchemy as sa
    from mlflow.entities.model_registry import ModelVersionTag
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(mlflow_db)
    names = [f"bench-reconcile-{i}" for i in range(10)]
    for name in names:
        store.create_registered_model(name)
    made = []
    for i in range(n):
        name = names[i % len(names)]
        mv = store.create_model_version(name, f"file:///tmp/model-{i}", tags=[ModelVersionTag("hokusai_token_id", tokens[i])])
        made.append((name, str(mv.version)))
    an_hour_ago = int((time.time() - 3600) * 1000)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE model_versions SET creation_time = :t, last_updated_time = :t"), {"t": an_hour_ago})
    store.engine.dispose()
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--drafts", type=int, default=300)
    parser.add_argument("--sweeps", type=int, default=5)
    args = parser.parse_args()
    print(benchlib.machine_facts(), flush=True)
    results = [run_size(int(size), args) for size in args.sizes.split(",")]
    print()
    for size, rows in results:
        for label, times, calls in rows:
            print(f"{size:>6} versions  {label:<34} median {statistics.median(times):7.3f} s  max {max(times):7.3f} s  "
                  f"MLflow requests per sweep {statistics.median(calls):.0f}")
    print(benchlib.finished())


def run_size(size: int, args) -> tuple[int, list]:
    import sqlalchemy as sa

    from hokusai_mlflow_plugin.db.migrate import upgrade
    from hokusai_mlflow_plugin.db.models import Registration, SweepState, Token
    from hokusai_mlflow_plugin.db.session import dispose, session_factory
    from hokusai_mlflow_plugin.mlflow_io.client import client as mlflow_client
    from hokusai_mlflow_plugin.registration.reconcile import DRAFT_SEARCHES, WATERMARK, reconcile_once
    from hokusai_mlflow_plugin.registration.service import RegistrationService
    from tests.harness import MlflowServer, create_pg_database, drop_pg_database

    workdir = Path(tempfile.mkdtemp(prefix="hokusai-bench-reconcile-"))
    db_url = create_pg_database("hokusai_bench_reconcile")
    server = None
    try:
        upgrade(db_url)
        sessions = session_factory(db_url)
        decided = [f"BR-{uuid.uuid4().hex[:12].upper()}" for _ in range(size)]
        drafts = [f"BD-{uuid.uuid4().hex[:12].upper()}" for _ in range(args.drafts)]
        mlflow_db = f"sqlite:///{workdir / 'mlflow.db'}"
        started = time.perf_counter()
        versions = fill_registry(mlflow_db, size, decided)
        print(f"[{size}] {size} versions in MLflow's store in {time.perf_counter() - started:.0f} s", flush=True)
        now = datetime.now(UTC)
        with sessions.begin() as s:
            s.add_all(Token(token_id=t, status="registered", metric_name="auroc", baseline_value=0.82) for t in decided)
            s.add_all(Token(token_id=t, status="draft", metric_name="auroc", baseline_value=0.82) for t in drafts)
            s.add_all(Registration(model_name=n, model_version=v, token_id=t, outcome="registered", reason="bench",
                                   created_at=now - timedelta(hours=1)) for (n, v), t in zip(versions, decided))
        server = MlflowServer(backend_uri=mlflow_db, workdir=workdir, kind="sqlite").start()
        service = RegistrationService(sessions, mlflow_client(server.url))
        log = server.process.log_path
        rows = []
        for label, searches in ((f"as it is ({DRAFT_SEARCHES} drafts in turn)", DRAFT_SEARCHES),
                                (f"one search per draft ({args.drafts})", args.drafts)):
            times, calls = [], []
            for _ in range(args.sweeps):
                with sessions.begin() as s:
                    s.merge(SweepState(key=WATERMARK, value=str(int(time.time() * 1000))))
                mark = log.stat().st_size
                t0 = time.perf_counter()
                outcomes = reconcile_once(service, searches=searches)
                times.append(time.perf_counter() - t0)
                time.sleep(0.2)  # the access log's last line
                with log.open(errors="replace") as f:
                    f.seek(mark)
                    calls.append(sum(1 for line in f if '"GET /api/' in line or '"POST /api/' in line))
                assert outcomes == [], outcomes
            rows.append((label, times, calls))
            print(f"[{size}] {label}: median {statistics.median(times):.3f} s, {statistics.median(calls):.0f} MLflow requests", flush=True)
        with sessions() as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Registration)) == size
        return size, rows
    finally:
        if server is not None:
            server.stop()
        dispose(db_url)
        drop_pg_database(db_url)


if __name__ == "__main__":
    main()
