"""The deliveries store: one row per (outbox event, sink), and every attempt at it.

* Fan-out: an event that no relay has seen gets one delivery row per configured sink.
* Claim: a worker takes the due deliveries of one sink, oldest event first, with
  ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (``BEGIN IMMEDIATE`` serialises it on SQLite), and leases
  them (``locked_until``, ``lease_owner``) so that the HTTP call happens outside any transaction.
  ``renew`` extends the lease of what is still ours; what another worker took over is skipped.
* Record: every attempt is stored with its time, status code or error and latency. 2xx is
  delivered; 410 Gone disables the sink (``events.sink_states``) and keeps the delivery pending;
  anything else is retried with exponential backoff and jitter (``Retry-After`` honoured) until
  the horizon (about 3 days) runs out, then dead. A disabled sink's deliveries are never claimed.
"""

from __future__ import annotations

import hashlib
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from hokusai_mlflow_plugin.db.models import (
    DEAD,
    DELIVERED,
    FAILED,
    PENDING,
    Attempt,
    Delivery,
    OutboxEvent,
    SweepState,
    utcnow,
)
from hokusai_mlflow_plugin.events import sink_states
from hokusai_mlflow_plugin.events.envelope import envelope_json
from hokusai_mlflow_plugin.events.retry import RetryPolicy
from hokusai_mlflow_plugin.events.sinks import Result


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _parse_time(value: str) -> datetime:
    return _aware(datetime.fromisoformat(value))


FANOUT_BATCH = 500
# A registration's transaction commits within seconds; events whose commit is later than this
# behind their created_at would be missed by a sink's cursor. Ten minutes is far beyond any.
FANOUT_LOOKBACK = timedelta(minutes=10)


class DeliveryStore:
    """The deliveries of one relay worker (``worker_id`` owns its leases)."""

    def __init__(self, sessions: sessionmaker[Session], policy: RetryPolicy | None = None, lease: float = 60.0, batch_size: int = 100):
        self.sessions = sessions
        self.policy = policy or RetryPolicy()
        self.lease = lease
        self.batch_size = batch_size
        self.worker_id = uuid.uuid4().hex
        dialect = sessions.kw["bind"].dialect.name
        self._postgresql = dialect == "postgresql"  # SKIP LOCKED, LATERAL
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        self._insert = insert

    @contextmanager
    def _begin(self) -> Iterator[Session]:
        """One transaction. On PostgreSQL the server ends it once it has waited a lease on this
        worker: a worker cut off from the database in the middle of one (a silent partition, a
        host lost) would otherwise hold the rows it locked until the server noticed, two hours
        later by default, and every other worker's claim skips locked rows."""
        with self.sessions.begin() as session:
            if self._postgresql:
                session.execute(sa.text(f"SET LOCAL idle_in_transaction_session_timeout = {max(1, round(self.lease * 1000))}"))
            yield session

    def fan_out(self, sinks: list[str], event_ids: list[str] | None = None) -> int:
        """Give every configured sink a delivery row for each event it has none for, or for
        ``event_ids``. Relays with different sinks share one outbox safely: rows are per sink, and
        two relays making the same row meet on its unique key (ON CONFLICT DO NOTHING).

        Each sink has a cursor (the ``created_at`` up to which it has rows, in ``SweepState``), so a
        pass looks only at the events since then, minus ``FANOUT_LOOKBACK`` for transactions that
        committed late: its cost follows the new events, not the size of the outbox. A sink without
        a cursor (configured later) starts one retry horizon back, not at the start of history."""
        made = 0
        for name in sinks:
            with self._begin() as session:
                made += self._fan_out(session, name, event_ids)
        return made

    def _fan_out(self, session: Session, name: str, event_ids: list[str] | None) -> int:
        """``fan_out`` of one sink, inside ``session``'s transaction."""
        query = self.without_delivery(name)
        now = utcnow()
        key = "fanout:" + hashlib.sha256(name.encode()).hexdigest()[:32]  # sink names are long
        if event_ids is None:
            state = session.get(SweepState, key)
            cursor = _parse_time(state.value) if state else now - timedelta(seconds=self.policy.horizon)
            query = query.where(OutboxEvent.created_at >= cursor - FANOUT_LOOKBACK)
        else:
            query = query.where(OutboxEvent.event_id.in_(event_ids))
        rows = session.execute(query.order_by(OutboxEvent.created_at, OutboxEvent.id).limit(FANOUT_BATCH)).all()
        if rows:
            values = [
                {"event_id": r.event_id, "outbox_id": r.id, "sink": name, "status": PENDING, "attempts": 0,
                 "next_attempt_at": now, "horizon_start": now, "created_at": now}
                for r in rows
            ]
            session.execute(self._insert(Delivery).values(values).on_conflict_do_nothing())
        if event_ids is None:
            # all caught up: the cursor is now; else: up to the last event this pass took
            reached = now if len(rows) < FANOUT_BATCH else _aware(rows[-1].created_at)
            if state is None:
                session.execute(self._insert(SweepState).values(key=key, value=reached.isoformat()).on_conflict_do_nothing())
            elif _parse_time(state.value) < reached:
                state.value = reached.isoformat()
        return len(rows)

    def without_delivery(self, sink: str) -> sa.Select:
        """The outbox events that have no delivery row for ``sink``."""
        return without_delivery(sink, self._postgresql)

    def claim(
        self, sink: str, limit: int | None = None, event_ids: list[str] | None = None, fan_out: list[str] | None = None,
    ) -> list[tuple[int, str, str, str]]:
        """Lease the due deliveries of ``sink`` (of ``event_ids`` only, if given): (delivery id,
        event id, event type, body). ``fan_out``: events just committed, given their delivery rows
        first in the same transaction (the relay's fast path: one transaction fewer per pass)."""
        with self._begin() as session:
            if fan_out:
                self._fan_out(session, sink, fan_out)
            now = utcnow()
            query = (
                sa.select(Delivery.id)
                .where(
                    Delivery.sink == sink,
                    Delivery.status.in_((PENDING, FAILED)),
                    Delivery.next_attempt_at <= now,
                    sa.or_(Delivery.locked_until.is_(None), Delivery.locked_until < now),
                    ~sink_states.disabled(sink),
                )
                .order_by(Delivery.outbox_id)
                .limit(limit or self.batch_size)
            )
            if event_ids is not None:
                query = query.where(Delivery.event_id.in_(event_ids))
            if self._postgresql:
                query = query.with_for_update(skip_locked=True)
            ids = list(session.scalars(query))
            if not ids:
                return []
            session.execute(
                sa.update(Delivery)
                .where(Delivery.id.in_(ids))
                .values(locked_until=now + timedelta(seconds=self.lease), lease_owner=self.worker_id)
            )
            rows = session.execute(
                sa.select(Delivery.id, OutboxEvent).join(OutboxEvent, OutboxEvent.event_id == Delivery.event_id)
                .where(Delivery.id.in_(ids)).order_by(Delivery.outbox_id)
            ).all()
            return [(d_id, ev.event_id, ev.event_type, envelope_json(ev)) for d_id, ev in rows]

    def renew(self, delivery_ids: list[int]) -> set[int]:
        """Extend our lease on ``delivery_ids`` in one statement; returns those still ours (the
        others' lease ran out and another worker claimed them, or they are no longer due)."""
        if not delivery_ids:
            return set()
        ours = (Delivery.id.in_(delivery_ids), Delivery.lease_owner == self.worker_id, Delivery.status.in_((PENDING, FAILED)))
        update = (
            sa.update(Delivery).values(locked_until=utcnow() + timedelta(seconds=self.lease))
            .execution_options(synchronize_session=False)
        )
        with self._begin() as session:
            if session.get_bind().dialect.update_returning:
                return set(session.scalars(update.where(*ours).returning(Delivery.id)))
            # SQLite before 3.35 has no RETURNING; its BEGIN IMMEDIATE keeps other writers out meanwhile
            kept = set(session.scalars(sa.select(Delivery.id).where(*ours)))
            session.execute(update.where(*ours))
            return kept

    def record(self, delivery_id: int, result: Result, latency_ms: float, attempted_at: datetime) -> str:
        """Store the attempt and move the delivery on; returns its new status."""
        with self._begin() as session:
            session.add(Attempt(delivery_id=delivery_id, attempted_at=attempted_at, status_code=result.status_code,
                                error=result.error, latency_ms=latency_ms))
            d = session.scalars(
                sa.select(Delivery).where(Delivery.id == delivery_id, Delivery.lease_owner == self.worker_id).with_for_update()
            ).one_or_none()
            if d is None:  # our lease ran out mid-send and another worker took over: its state wins
                return "superseded"
            d.attempts += 1
            now = utcnow()
            d.locked_until, d.lease_owner = None, None
            if result.ok:
                d.status, d.delivered_at, d.last_error = DELIVERED, now, None
            elif result.gone:  # kept for when the sink is enabled again: pending, due at once
                d.status, d.next_attempt_at = PENDING, now
                d.last_error = f"{result.error} Gone: the sink is disabled, this delivery held until '{sink_states.enable_command(d.sink)}'"
                sink_states.disable(session, d.sink, f"the consumer answered {result.error} Gone to event {d.event_id}")
            else:
                d.last_error = result.error
                when = now + timedelta(seconds=self.policy.delay(d.attempts, result.retry_after))
                if when > _aware(d.horizon_start) + timedelta(seconds=self.policy.horizon):
                    d.status, d.last_error = DEAD, f"{result.error}; retry horizon of {self.policy.horizon:g}s exhausted"
                else:
                    d.status, d.next_attempt_at = FAILED, when
            return d.status

    def release(self, delivery_ids: list[int]) -> None:
        """Give back our lease on ``delivery_ids``, unsent: they stay as they were, due again."""
        if delivery_ids:
            with self._begin() as session:
                session.execute(
                    sa.update(Delivery).where(Delivery.id.in_(delivery_ids), Delivery.lease_owner == self.worker_id)
                    .values(locked_until=None, lease_owner=None).execution_options(synchronize_session=False)
                )

    def record_delivered(self, done: list[tuple[int, Result, float, datetime]]) -> None:
        """Successful attempts ``(delivery id, result, latency ms, attempted at)``, in one
        transaction. A delivery whose lease another worker holds now keeps that worker's state."""
        if not done:
            return
        with self._begin() as session:
            session.execute(sa.insert(Attempt), [
                {"delivery_id": d, "attempted_at": at, "status_code": r.status_code, "error": None, "latency_ms": ms}
                for d, r, ms, at in done
            ])
            session.execute(
                sa.update(Delivery)
                .where(Delivery.id.in_([d for d, *_ in done]), Delivery.lease_owner == self.worker_id)
                .values(attempts=Delivery.attempts + 1, status=DELIVERED, delivered_at=utcnow(), last_error=None,
                        locked_until=None, lease_owner=None)
                .execution_options(synchronize_session=False)
            )


def without_delivery(sink: str, postgresql: bool) -> sa.Select:
    """The outbox events that have no delivery row for ``sink``.

    On PostgreSQL each event probes the unique (event, sink) index once, through a ``LATERAL``
    subquery with ``LIMIT 1`` that the planner cannot turn into a join. A plain ``NOT EXISTS``
    becomes an anti-join whose plan follows the statistics: after a burst that autovacuum has
    not analysed yet, it compared every event of the window with every delivery of the sink
    (10,000 events: 2.4 s a pass; BENCHMARKS.md). In the probe the sink is compared as
    ``sink || ''``, which no index covers: on tables without statistics the planner otherwise
    took the claim's (sink, status, ...) index and read all of the sink's deliveries per event.
    SQLite always probes the unique index."""
    columns = (OutboxEvent.id, OutboxEvent.event_id, OutboxEvent.created_at)
    if not postgresql:
        found = sa.select(Delivery.id).where(Delivery.event_id == OutboxEvent.event_id, Delivery.sink == sink)
        return sa.select(*columns).where(~sa.exists(found))
    found = sa.select(sa.literal(1).label("found")).where(
        Delivery.event_id == OutboxEvent.event_id, Delivery.sink.concat("") == sink
    )
    probe = found.limit(1).lateral("delivered")
    return sa.select(*columns).select_from(OutboxEvent).outerjoin(probe, sa.true()).where(probe.c.found.is_(None))
