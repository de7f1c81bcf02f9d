"""Operator views of the outbox: what was delivered, what failed, what died; and redelivery.
Functions take a session and never commit."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hokusai_mlflow_plugin.core.errors import INVALID, NOT_FOUND, HokusaiError

from hokusai_mlflow_plugin.db.models import (
    DELIVERY_STATES,
    PENDING,
    Attempt,
    Delivery,
    OutboxEvent,
    iso,
    utcnow,
)


class OutboxError(HokusaiError):
    """An operator request that cannot be carried out; the message says what to do."""


def list_deliveries(session: Session, status: str | None = None, limit: int = 100, event_id: str | None = None) -> list[dict]:
    """Deliveries per sink, newest event first, each with its attempts (of one event if given)."""
    if status and status not in DELIVERY_STATES:
        raise OutboxError(f"Unknown delivery status '{status}': use one of {', '.join(DELIVERY_STATES)}.", INVALID)
    query = (
        sa.select(Delivery, OutboxEvent.event_type)
        .join(OutboxEvent, OutboxEvent.event_id == Delivery.event_id)
        .order_by(Delivery.outbox_id.desc(), Delivery.sink)
        .limit(limit)
    )
    if status:
        query = query.where(Delivery.status == status)
    if event_id:
        query = query.where(Delivery.event_id == event_id)
    rows = session.execute(query).all()
    attempts: dict[int, list[dict]] = {}
    if rows:
        for a in session.scalars(
            sa.select(Attempt).where(Attempt.delivery_id.in_([d.id for d, _ in rows])).order_by(Attempt.id)
        ):
            attempts.setdefault(a.delivery_id, []).append(
                {"at": iso(a.attempted_at), "status_code": a.status_code, "error": a.error, "latency_ms": round(a.latency_ms, 2)}
            )
    return [
        {
            "event_id": d.event_id,
            "event_type": event_type,
            "sink": d.sink,
            "status": d.status,
            "attempts": d.attempts,
            "next_attempt_at": iso(d.next_attempt_at) if d.status in (PENDING, "failed") else None,
            "delivered_at": iso(d.delivered_at),
            "last_error": d.last_error,
            "history": attempts.get(d.id, []),
        }
        for d, event_type in rows
    ]


def deliveries_or_events(session: Session, status: str | None = None, limit: int = 100) -> list[dict]:
    """``list_deliveries``; where no sink has seen anything yet, the outbox's own events, each as a
    row of status ``stored``, so that an operator sees what is waiting."""
    rows = list_deliveries(session, status, limit)
    if rows or status:
        return rows
    return [
        {"event_id": e.event_id, "event_type": e.event_type, "sink": None, "status": "stored", "attempts": 0,
         "last_error": None, "payload": e.payload}
        for e in list_events(session, limit)
    ]


WATCH_WINDOW = timedelta(minutes=10)  # far longer than any registration transaction


def recent_events(session: Session, window: timedelta = WATCH_WINDOW) -> list[OutboxEvent]:
    """The events created in the last ``window``, oldest first (what a watcher looks at)."""
    since = utcnow() - window
    return list(session.scalars(sa.select(OutboxEvent).where(OutboxEvent.created_at >= since).order_by(OutboxEvent.id)))


def list_events(
    session: Session, limit: int = 100, *, event_type: str | None = None, token_id: str | None = None
) -> list[OutboxEvent]:
    """The newest ``limit`` events, of one type and of one token if given."""
    query = sa.select(OutboxEvent).order_by(OutboxEvent.id.desc()).limit(limit)
    if event_type:
        query = query.where(OutboxEvent.event_type == event_type)
    if token_id:
        query = query.where(OutboxEvent.payload["token_id"].as_string() == token_id)
    return list(session.scalars(query))


def reset_for_redelivery(session: Session, event_id: str) -> int:
    """Make every delivery of ``event_id`` due now, with a fresh retry horizon. The event keeps its
    id, so consumers see the same ``webhook-id`` and can deduplicate. Returns the deliveries reset."""
    if session.scalar(sa.select(OutboxEvent.id).where(OutboxEvent.event_id == event_id)) is None:
        raise OutboxError(f"No event '{event_id}' in the outbox: see 'hokusai events list'.", NOT_FOUND)
    now = utcnow()
    result = session.execute(
        sa.update(Delivery)
        .where(Delivery.event_id == event_id)
        .values(status=PENDING, next_attempt_at=now, horizon_start=now, locked_until=None)
    )
    return result.rowcount
