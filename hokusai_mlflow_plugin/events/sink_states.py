"""Which sinks are switched off. A consumer that answers 410 Gone disables its endpoint, as the
Standard Webhooks spec asks: nothing more is sent to it until an operator enables it again
(``hokusai events enable SINK``). Nothing is lost meanwhile: its deliveries, the 410'd one
included, stay pending, and flow again, oldest first, once it is enabled.

Functions take a session and never commit."""

from __future__ import annotations

import shlex

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hokusai_mlflow_plugin.core.errors import NOT_FOUND
from hokusai_mlflow_plugin.db.models import FAILED, PENDING, Delivery, SinkState, iso, utcnow
from hokusai_mlflow_plugin.events.outbox import OutboxError


def enable_command(sink: str) -> str:
    """The command that enables ``sink`` again, ready to paste into a shell."""
    return f"hokusai events enable {shlex.quote(sink)}"


def disabled(sink: str) -> sa.ColumnElement[bool]:
    """True where ``sink`` is disabled: a clause for the claim's WHERE (one primary-key probe)."""
    return sa.exists(sa.select(SinkState.sink).where(SinkState.sink == sink, SinkState.disabled_at.is_not(None)))


def disable(session: Session, sink: str, reason: str) -> None:
    """Switch ``sink`` off, with the reason an operator reads. Two workers that get a 410 at the
    same moment meet on the primary key; the later reason wins."""
    now = utcnow()
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    values = {"disabled_at": now, "reason": reason, "updated_at": now}
    session.execute(
        insert(SinkState).values(sink=sink, **values).on_conflict_do_update(index_elements=["sink"], set_=values)
    )


def disabled_sinks(session: Session) -> dict[str, dict]:
    """Every disabled sink: since when, why, how many deliveries it holds, and how to enable it."""
    states = list(session.scalars(sa.select(SinkState).where(SinkState.disabled_at.is_not(None)).order_by(SinkState.sink)))
    if not states:
        return {}
    held = dict(session.execute(
        sa.select(Delivery.sink, sa.func.count())
        .where(Delivery.sink.in_([s.sink for s in states]), Delivery.status.in_((PENDING, FAILED)))
        .group_by(Delivery.sink)
    ).all())
    return {
        s.sink: {"sink": s.sink, "disabled_at": iso(s.disabled_at), "reason": s.reason, "held": held.get(s.sink, 0),
                 "enable": enable_command(s.sink)}
        for s in states
    }


def enable(session: Session, sink: str) -> dict:
    """Switch ``sink`` on again: its held deliveries are due now, with a fresh retry horizon (they
    waited, they were not being tried). Returns ``{"sink", "was_disabled", "resumed"}``; a sink
    that is enabled already is left as it is."""
    state = session.get(SinkState, sink)
    if state is None or state.disabled_at is None:
        known = state is not None or session.scalar(sa.select(Delivery.id).where(Delivery.sink == sink).limit(1))
        if not known:
            names = ", ".join(disabled_sinks(session)) or "none"
            raise OutboxError(
                f"No sink '{sink}' has any delivery: give its name as 'hokusai events list' shows it "
                f"(disabled sinks: {names}).",
                NOT_FOUND,
            )
        return {"sink": sink, "was_disabled": False, "resumed": 0}
    now = utcnow()
    state.disabled_at, state.reason, state.updated_at = None, None, now
    resumed = session.execute(
        sa.update(Delivery)
        .where(
            Delivery.sink == sink,
            Delivery.status.in_((PENDING, FAILED)),
            sa.or_(Delivery.locked_until.is_(None), Delivery.locked_until < now),
        )
        .values(next_attempt_at=now, horizon_start=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    return {"sink": sink, "was_disabled": True, "resumed": resumed}
