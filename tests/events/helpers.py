"""What the events tests share: outbox rows written as a registration writes them, and reads of
the deliveries and attempts."""

from __future__ import annotations

import time
import uuid

import sqlalchemy as sa

from hokusai_mlflow_plugin.db.models import Attempt, Delivery, OutboxEvent, utcnow
from hokusai_mlflow_plugin.db.session import session_factory
from hokusai_mlflow_plugin.events.relay import RetryPolicy
from tests.harness import (
    notify,
)

SECRET = "whsec_" + "aG9rdXNhaS1ldmVudHMtdGVzdC1zZWNyZXQtMzJieXRlcyE="
FAST = RetryPolicy(base=0.05, cap=0.2, horizon=60)


def add_events(url: str, n: int = 1, token_id: str | None = None) -> list[str]:
    """Write ``n`` token_ready_for_deploy events the way a registration does (rows + NOTIFY), of
    ``token_id`` (default: T0, T1, ...)."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with session_factory(url).begin() as session:
        session.add_all(
            OutboxEvent(
                event_id=event_id,
                event_type="token_ready_for_deploy",
                payload={"token_id": token_id or f"T{i}", "mlflow_run_id": "r", "model_name": "m", "model_version": str(i + 1),
                         "metadata": {"metric_name": "auroc", "metric_value": 0.9, "baseline_value": 0.8}},
                created_at=utcnow(),
            )
            for i, event_id in enumerate(ids)
        )
        notify(session, ids)
    return ids


def deliveries(url: str) -> list[Delivery]:
    with session_factory(url)() as s:
        return list(s.scalars(sa.select(Delivery).order_by(Delivery.outbox_id)))


def first_status(url: str) -> str | None:
    rows = deliveries(url)
    return rows[0].status if rows else None


def attempts(url: str) -> list[Attempt]:
    with session_factory(url)() as s:
        return list(s.scalars(sa.select(Attempt).order_by(Attempt.id)))


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def headers_of(captured) -> dict:
    return {k.lower(): v for k, v in captured.headers.items()}


