"""The console's server time per page with 10,000 tokens and 50,000 events on PostgreSQL (issue 12).

The pages are rendered by the app in this process (Flask's test client: server time, no network),
signed in as an admin key; each page N times after warm-up. Goal: p95 under 100 ms for every page.
The data: 10,000 tokens, 20,000 registrations over the last 7 days, 50,000 outbox events, each with
one delivery (a few hundred dead), each delivery with one attempt.

    .venv/bin/python bench/bench_console.py --tokens 10000 --events 50000 --n 50
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402


def fill(url: str, tokens: int, events: int) -> tuple[str, str]:
    import sqlalchemy as sa

    from hokusai_mlflow_plugin.db.models import Attempt, Delivery, OutboxEvent, Registration, Token, utcnow
    from hokusai_mlflow_plugin.db.session import get_engine

    now = utcnow()
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.insert(Token.__table__), [
            {"token_id": f"BENCH-{i:06d}", "status": "registered" if i % 3 == 0 else "draft", "metric_name": "auroc",
             "baseline_value": 0.8, "created_at": now - timedelta(seconds=tokens - i), "updated_at": now} for i in range(tokens)])
        conn.execute(sa.insert(Registration.__table__), [
            {"model_name": f"model-{i % tokens:06d}", "model_version": str(i // tokens + 1), "token_id": f"BENCH-{i % tokens:06d}",
             "outcome": "registered" if i % 3 == 0 else "rejected", "reason": "auroc 0.9 >= baseline 0.8.", "metric_name": "auroc",
             "metric_value": 0.9, "baseline_value": 0.8, "created_at": now - timedelta(minutes=i % (7 * 24 * 60))}
            for i in range(2 * tokens)])
        step = 5000
        for start in range(0, events, step):
            rows = [{"event_id": str(uuid.uuid4()), "event_type": "token_ready_for_deploy",
                     "payload": {"token_id": f"BENCH-{i % tokens:06d}", "model_name": "m", "model_version": "1"},
                     "created_at": now - timedelta(seconds=events - i)} for i in range(start, min(events, start + step))]
            ids = conn.execute(sa.insert(OutboxEvent.__table__).returning(OutboxEvent.id, OutboxEvent.event_id), rows).all()
            deliveries = conn.execute(sa.insert(Delivery.__table__).returning(Delivery.id), [
                {"event_id": event_id, "outbox_id": outbox_id, "sink": "webhook:http://consumer/hook",
                 "status": "dead" if outbox_id % 200 == 0 else "delivered", "attempts": 1, "next_attempt_at": now,
                 "horizon_start": now, "created_at": now} for outbox_id, event_id in ids]).scalars().all()
            conn.execute(sa.insert(Attempt.__table__), [
                {"delivery_id": d, "attempted_at": now, "status_code": 200, "latency_ms": 3.0} for d in deliveries])
        for table in ("hokusai_tokens", "hokusai_registrations", "hokusai_outbox", "hokusai_deliveries", "hokusai_delivery_attempts"):
            conn.exec_driver_sql(f"ANALYZE {table}")
        event_id = conn.scalar(sa.select(OutboxEvent.event_id).order_by(OutboxEvent.id.desc()).limit(1))
    return f"BENCH-{tokens // 2:06d}", event_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=10000)
    parser.add_argument("--events", type=int, default=50000)
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()

    from hokusai_mlflow_plugin.auth import keys
    from webhook_app import create_app

    print(benchlib.machine_facts())
    with benchlib.Backend("postgresql", start_mlflow=False) as b:
        started = time.perf_counter()
        token_id, event_id = fill(b.db_url, args.tokens, args.events)
        print(f"filled in {time.perf_counter() - started:.1f}s")
        with b.sessions.begin() as s:
            key = keys.create(s, "bench", ("admin",)).key
        app = create_app({"HOKUSAI_WEBHOOK_SECRETS": ("bench",), "HOKUSAI_DATABASE_URL": b.db_url,
                          "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "HOKUSAI_RELAY": False})
        client = app.test_client()
        form = client.get("/console/login").get_data(as_text=True)
        csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form) or re.search(r'value="([^"]+)"[^>]*name="csrf_token"', form)
        answer = client.post("/console/login", data={"key": key, "csrf_token": csrf.group(1) if csrf else ""})
        if answer.status_code not in (302, 303):
            raise SystemExit(f"sign-in failed: {answer.status_code} {answer.get_data(as_text=True)[:300]}")
        pages = {
            "overview": "/console/", "tokens": "/console/tokens", "tokens?status=": "/console/tokens?status=registered",
            "tokens?q=": "/console/tokens?q=BENCH-0099", "token": f"/console/tokens/{token_id}", "events": "/console/events",
            "events?status=dead": "/console/events?status=dead", "events?token=": f"/console/events?token={token_id}",
            "event": f"/console/events/{event_id}", "keys": "/console/keys", "redeliver-dead": "/console/events/redeliver-dead",
        }
        rows = []
        for name, path in pages.items():
            spent = []
            for i in range(args.n + 5):
                t0 = time.perf_counter()
                response = client.get(path)
                if response.status_code != 200:
                    raise SystemExit(f"{path}: {response.status_code}")
                if i >= 5:
                    spent.append((time.perf_counter() - t0) * 1000)
            rows.append((f"{name:<20} {path}", benchlib.summary(spent)))
    print(f"\n[console] server time per page, {args.n} renders each, {args.tokens} tokens, {args.events} events (ms)")
    print(benchlib.table(rows, cols=("median", "p95", "p99", "max")))
    print(benchlib.finished())


if __name__ == "__main__":
    main()
