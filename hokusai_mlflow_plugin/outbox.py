"""Operator views of the outbox: what was delivered, what failed, what died; and redelivery.
Functions take a session and never commit."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hokusai_mlflow_plugin.db.models import (
    DELIVERY_STATES,
    PENDING,
    Attempt,
    Delivery,
    OutboxEvent,
    _iso,
    utcnow,
)


class OutboxError(ValueError):
    """An operator request that cannot be carried out; the message says what to do."""


def list_deliveries(session: Session, status: str | None = None, limit: int = 100) -> list[dict]:
    if status and status not in DELIVERY_STATES:
        raise OutboxError(f"Unknown delivery status '{status}': use one of {', '.join(DELIVERY_STATES)}.")
    query = (
        sa.select(Delivery, OutboxEvent.event_type)
        .join(OutboxEvent, OutboxEvent.event_id == Delivery.event_id)
        .order_by(Delivery.outbox_id.desc(), Delivery.sink)
        .limit(limit)
    )
    if status:
        query = query.where(Delivery.status == status)
    rows = session.execute(query).all()
    attempts: dict[int, list[dict]] = {}
    if rows:
        for a in session.scalars(
            sa.select(Attempt).where(Attempt.delivery_id.in_([d.id for d, _ in rows])).order_by(Attempt.id)
        ):
            attempts.setdefault(a.delivery_id, []).append(
                {"at": _iso(a.attempted_at), "status_code": a.status_code, "error": a.error, "latency_ms": round(a.latency_ms, 2)}
            )
    return [
        {
            "event_id": d.event_id,
            "event_type": event_type,
            "sink": d.sink,
            "status": d.status,
            "attempts": d.attempts,
            "next_attempt_at": _iso(d.next_attempt_at) if d.status in (PENDING, "failed") else None,
            "delivered_at": _iso(d.delivered_at),
            "last_error": d.last_error,
            "history": attempts.get(d.id, []),
        }
        for d, event_type in rows
    ]


WATCH_WINDOW = timedelta(minutes=10)  # far longer than any registration transaction


def recent_events(session: Session, window: timedelta = WATCH_WINDOW) -> list[OutboxEvent]:
    """The events created in the last ``window``, oldest first (what a watcher looks at)."""
    since = utcnow() - window
    return list(session.scalars(sa.select(OutboxEvent).where(OutboxEvent.created_at >= since).order_by(OutboxEvent.id)))


def list_events(session: Session, limit: int = 100) -> list[OutboxEvent]:
    return list(session.scalars(sa.select(OutboxEvent).order_by(OutboxEvent.id.desc()).limit(limit)))


def reset_for_redelivery(session: Session, event_id: str) -> int:
    """Make every delivery of ``event_id`` due now, with a fresh retry horizon. The event keeps its
    id, so consumers see the same ``webhook-id`` and can deduplicate. Returns the deliveries reset."""
    if session.scalar(sa.select(OutboxEvent.id).where(OutboxEvent.event_id == event_id)) is None:
        raise OutboxError(f"No event '{event_id}' in the outbox: see 'hokusai events list'.")
    now = utcnow()
    result = session.execute(
        sa.update(Delivery)
        .where(Delivery.event_id == event_id)
        .values(status=PENDING, next_attempt_at=now, horizon_start=now, locked_until=None)
    )
    return result.rowcount
