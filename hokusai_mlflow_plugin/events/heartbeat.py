"""Relay workers' heartbeats: each worker writes when it last ran a pass, so that an operator (the
console, /metrics) can tell a live relay from a dead one."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from hokusai_mlflow_plugin.db.models import SweepState, iso, utcnow

PREFIX = "relay.heartbeat:"
EVERY = timedelta(seconds=10)  # a worker writes at most this often
STALE = timedelta(seconds=60)  # a worker silent this long is shown as not running


def beat(sessions: sessionmaker[Session], worker_id: str, now: datetime | None = None) -> None:
    """Record that ``worker_id`` is alive now (an upsert of one small row)."""
    now = now or utcnow()
    with sessions.begin() as session:
        row = session.get(SweepState, PREFIX + worker_id)
        if row is None:
            session.add(SweepState(key=PREFIX + worker_id, value=iso(now)))
        else:
            row.value = iso(now)


def heartbeats(session: Session, now: datetime | None = None, limit: int = 50) -> list[dict]:
    """The relay workers seen, newest beat first: ``worker``, ``at``, ``age_seconds``, ``alive``."""
    now = now or utcnow()
    rows = session.scalars(sa.select(SweepState).where(SweepState.key.startswith(PREFIX))).all()
    beats = []
    for row in rows:
        at = datetime.fromisoformat(row.value.replace("Z", "+00:00"))
        at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)
        age = (now - at).total_seconds()
        beats.append({"worker": row.key[len(PREFIX):], "at": row.value, "age_seconds": age, "alive": age < STALE.total_seconds()})
    return sorted(beats, key=lambda b: b["age_seconds"])[:limit]


def forget_older_than(sessions: sessionmaker[Session], age: timedelta = timedelta(days=7)) -> None:
    """Drop the heartbeats of workers gone for ``age`` (workers restart under new ids)."""
    cutoff = iso(utcnow() - age)
    with sessions.begin() as session:
        session.execute(sa.delete(SweepState).where(SweepState.key.startswith(PREFIX), SweepState.value < cutoff))
