"""Operator views of the outbox: what was delivered, what failed, what died; and redelivery.
Functions take a session and never commit."""

from __future__ import annotations

from datetime import timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hokusai_mlflow_plugin.auth import ownership
from hokusai_mlflow_plugin.auth.keys import Caller
from hokusai_mlflow_plugin.core import cursors
from hokusai_mlflow_plugin.core.errors import INVALID, NOT_FOUND, HokusaiError

from hokusai_mlflow_plugin.db.models import (
    DEAD,
    DELIVERY_STATES,
    FAILED,
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


def page_events(
    session: Session,
    status: str | None = None,
    event_type: str | None = None,
    token_id: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    caller: Caller | None = None,
) -> tuple[list[dict], str | None]:
    """One page of the events ``caller`` may read (None: all), newest first, each with its
    deliveries per sink, and the next page's cursor (or None). ``status`` keeps the events with a
    delivery in that state."""
    if status and status not in DELIVERY_STATES:
        raise OutboxError(f"Unknown delivery status '{status}': use one of {', '.join(DELIVERY_STATES)}.", INVALID)
    limit = cursors.limit_of(limit)
    query = sa.select(OutboxEvent).order_by(OutboxEvent.id.desc()).limit(limit + 1)
    if event_type:
        query = query.where(OutboxEvent.event_type == event_type)
    if token_id:
        query = query.where(OutboxEvent.payload["token_id"].as_string() == token_id)
    if caller is not None and (mine := ownership.visible_events(caller)) is not None:
        query = query.where(mine)
    if status:
        query = query.where(sa.exists(sa.select(Delivery.id).where(Delivery.event_id == OutboxEvent.event_id, Delivery.status == status)))
    after = cursors.decode(cursor, 1)
    if after:
        query = query.where(OutboxEvent.id < int(after[0]))
    found, more = cursors.take(list(session.scalars(query)), limit)
    sinks: dict[str, list[dict]] = {}
    if found:
        rows = session.scalars(sa.select(Delivery).where(Delivery.event_id.in_([e.event_id for e in found])).order_by(Delivery.sink))
        for d in rows:
            sinks.setdefault(d.event_id, []).append(
                {"sink": d.sink, "status": d.status, "attempts": d.attempts, "last_error": d.last_error,
                 "delivered_at": iso(d.delivered_at)}
            )
    items = [{**_event(e), "deliveries": sinks.get(e.event_id, [])} for e in found]
    return items, cursors.encode(found[-1].id) if more else None


def event_detail(session: Session, event_id: str, caller: Caller | None = None) -> dict:
    """One event: its payload, and every sink's delivery with every attempt. An event of a token
    ``caller`` may not read is answered as one that does not exist."""
    query = sa.select(OutboxEvent).where(OutboxEvent.event_id == event_id)
    if caller is not None and (mine := ownership.visible_events(caller)) is not None:
        query = query.where(mine)
    event = session.scalars(query).one_or_none()
    if event is None:
        raise OutboxError(f"No event '{event_id}' in the outbox: see 'hokusai events list'.", NOT_FOUND)
    return {**_event(event), "deliveries": list_deliveries(session, event_id=event_id)}


def reset_all_for_redelivery(session: Session, status: str = DEAD, since=None) -> int:
    """Make every delivery in ``status`` (dead by default), of events created since ``since``, due
    now with a fresh retry horizon: one UPDATE. Returns how many were reset."""
    if status not in (DEAD, FAILED):
        raise OutboxError(f"Only dead or failed deliveries are redelivered in bulk, not '{status}'.", INVALID)
    now = utcnow()
    query = sa.update(Delivery).where(Delivery.status == status)
    if since is not None:
        query = query.where(Delivery.created_at >= since)
    return session.execute(
        query.values(status=PENDING, next_attempt_at=now, horizon_start=now, locked_until=None, lease_owner=None)
        .execution_options(synchronize_session=False)
    ).rowcount


def outbox_health(session: Session) -> dict:
    """What an operator watches: deliveries pending, failed (retrying) and dead, and how long the
    oldest undelivered one has waited. One aggregate query."""
    counts = dict(session.execute(
        sa.select(Delivery.status, sa.func.count()).where(Delivery.status.in_((PENDING, FAILED, DEAD))).group_by(Delivery.status)
    ).all())
    oldest = session.scalar(sa.select(sa.func.min(Delivery.created_at)).where(Delivery.status.in_((PENDING, FAILED))))
    age = None
    if oldest is not None:
        oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=timezone.utc)
        age = max(0.0, (utcnow() - oldest).total_seconds())
    return {"pending": counts.get(PENDING, 0), "failed": counts.get(FAILED, 0), "dead": counts.get(DEAD, 0),
            "oldest_pending_seconds": age}


def _event(event: OutboxEvent) -> dict:
    return {"event_id": event.event_id, "event_type": event.event_type, "created_at": iso(event.created_at),
            "payload": event.payload}
