"""The registration's SQL: find a version's row, read a token, and write a decision (the token's
compare-and-set, the registration row and its outbox events) in as few round trips as the
database allows. Functions take a connection and never commit.

SQLAlchemy Core, not the ORM's unit of work: the receiver's own time per delivery is these few
statements (issue 3), and the ORM's bookkeeping around them cost more than the database.
"""

from __future__ import annotations

import time
import uuid
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, sessionmaker

from hokusai_mlflow_plugin.db.models import DRAFT, NOTIFY_CHANNEL, REGISTERED, OutboxEvent, Registration, Token, iso, utcnow
from hokusai_mlflow_plugin.registration.decision import Decision

# The events a registration writes to the outbox, in its own transaction.
TOKEN_READY = "token_ready_for_deploy"
MODEL_REGISTERED = "model_registered"

TOKENS, REGISTRATIONS, OUTBOX = Token.__table__, Registration.__table__, OutboxEvent.__table__

# Statements are built once: building one costs more CPU than executing its cached compiled form.
_FIND = sa.select(REGISTRATIONS).where(
    REGISTRATIONS.c.model_name == sa.bindparam("model_name"), REGISTRATIONS.c.model_version == sa.bindparam("model_version")
)
_FIND_LOCKED = _FIND.with_for_update()
_FORGET = sa.delete(REGISTRATIONS).where(REGISTRATIONS.c.id == sa.bindparam("earlier_id"))
_TOKEN = sa.select(TOKENS).where(TOKENS.c.token_id == sa.bindparam("token_id"))
INSERT_REGISTRATION = sa.insert(REGISTRATIONS)  # the values come with each execution
INSERT_EVENTS = sa.insert(OUTBOX)

# The compare-and-set draft -> registered: the token takes the registration's run, version and
# numbers. Its parameters are the registration row's values, renamed by _as_params.
_CLAIM = (
    sa.update(TOKENS)
    .where(TOKENS.c.token_id == sa.bindparam("reg_token_id"), TOKENS.c.status == DRAFT)
    .values(
        status=REGISTERED,
        metric_name=sa.bindparam("reg_metric_name"),
        baseline_value=sa.bindparam("reg_baseline_value"),
        metric_value=sa.bindparam("reg_metric_value"),
        mlflow_run_id=sa.bindparam("reg_mlflow_run_id"),
        model_name=sa.bindparam("reg_model_name"),
        model_version=sa.bindparam("reg_model_version"),
        updated_at=sa.bindparam("reg_created_at"),
    )
)


def _record_statement() -> sa.Select:
    """PostgreSQL's ``record_registered`` in ONE statement of data-modifying CTEs: the claim; the registration
    row only if the claim took; the events only if the row was written; ``pg_notify`` on
    ``NOTIFY_CHANNEL`` with each event id (delivered at commit, as watchers expect). It returns how many events it wrote: 0 when the claim failed."""
    claim = _CLAIM.returning(TOKENS.c.token_id).cte("claim")
    columns = [c for c in REGISTRATIONS.columns if not c.primary_key]
    row = sa.select(*[sa.bindparam(f"reg_{c.key}", type_=c.type) for c in columns]).where(sa.exists(claim.select()))
    reg = sa.insert(REGISTRATIONS).from_select(columns, row).returning(REGISTRATIONS.c.id).cte("reg")
    columns = [c for c in OUTBOX.columns if not c.primary_key]
    rows = sa.func.unnest(*[sa.bindparam(f"event_{c.key}", type_=ARRAY(c.type)) for c in columns])
    rows = rows.table_valued(*[c.key for c in columns]).render_derived()
    rows = sa.select(*[rows.c[c.key] for c in columns]).where(sa.exists(reg.select()))
    events = sa.insert(OUTBOX).from_select(columns, rows).returning(OUTBOX.c.event_id).cte("events")
    return sa.select(sa.func.count(sa.func.pg_notify(sa.bindparam("channel"), events.c.event_id))).select_from(events)


_RECORD = _record_statement()


def record_registered(conn: sa.Connection, reg: Registration, events: list[OutboxEvent]) -> bool:
    """Claim the token for ``reg`` (compare-and-set) and, only if the claim took, insert ``reg`` and
    its ``events``. False, with nothing written, when the token is no longer in draft."""
    values, rows = _values(reg), [_values(e) for e in events]
    if conn.dialect.name == "postgresql":
        # One round trip instead of three, and the NOTIFY in it: the receiver's own time per
        # delivery is mostly round trips (issue 3).
        arrays = {f"event_{k}": [row[k] for row in rows] for k in rows[0]}
        return conn.execute(_RECORD, {**_as_params(values), **arrays, "channel": NOTIFY_CHANNEL}).scalar_one() > 0
    if conn.execute(_CLAIM, _as_params(values)).rowcount != 1:
        return False
    conn.execute(INSERT_REGISTRATION, values)
    conn.execute(INSERT_EVENTS, rows)
    return True


def _as_params(values: dict) -> dict:
    # An UPDATE, in a CTE too, executed with a parameter named like one of its table's columns
    # SETs that column as well: the registration's token_id and created_at would land on the token.
    return {f"reg_{k}": v for k, v in values.items()}


def find(conn: sa.Connection, model_name: str, version: str, *, lock: bool = False) -> sa.Row | None:
    """The registration row of this version, if any (locked for update with ``lock``)."""
    key = {"model_name": model_name, "model_version": version}
    return conn.execute(_FIND_LOCKED if lock else _FIND, key).one_or_none()


def forget(conn: sa.Connection, registration_id: int) -> None:
    """Delete a registration row (a rejection that a new decision replaces)."""
    conn.execute(_FORGET, {"earlier_id": registration_id})


def insert(conn: sa.Connection, reg: Registration) -> None:
    """Insert a rejection's row: the unique (model name, version) key makes a concurrent twin fail."""
    conn.execute(INSERT_REGISTRATION, _values(reg))


def token(conn: sa.Connection, token_id: str | None) -> sa.Row | None:
    return conn.execute(_TOKEN, {"token_id": token_id}).one_or_none() if token_id else None


def registration_of(facts, decision: Decision, delivery_id: str | None) -> Registration:
    """The registration row for ``decision``, as a transient object (the Core insert writes it)."""
    return Registration(
        model_name=facts.model_name,
        model_version=facts.version,
        token_id=decision.token_id,
        outcome=decision.outcome,
        reason=decision.reason,
        metric_name=decision.metric_name,
        metric_value=decision.metric_value,
        baseline_value=decision.baseline_value,
        mlflow_run_id=decision.run_id,
        delivery_id=delivery_id,
        created_at=utcnow(),
    )


def _values(obj) -> dict:
    """The column values set on a transient ORM object, as Core parameters."""
    state = vars(obj)
    return {c.key: state[c.key] for c in obj.__table__.columns if c.key in state}


def wait_for_decision(
    sessions: sessionmaker[Session], model_name: str, version: str, timeout: float, poll: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
) -> Registration | None:
    """The registration row the webhook receiver writes for this version, or None after ``timeout``."""
    deadline = clock() + timeout
    query = sa.select(Registration).where(Registration.model_name == model_name, Registration.model_version == str(version))
    while True:
        with sessions() as session:
            reg = session.scalars(query).one_or_none()
        if reg is not None or clock() >= deadline:
            return reg
        time.sleep(poll)


def registration_events(reg: Registration) -> list[OutboxEvent]:
    """``model_registered`` then ``token_ready_for_deploy`` for a registered version."""
    payload = {
        "token_id": reg.token_id,
        "mlflow_run_id": reg.mlflow_run_id,
        "model_name": reg.model_name,
        "model_version": reg.model_version,
        "metadata": {
            "metric_name": reg.metric_name,
            "metric_value": reg.metric_value,
            "baseline_value": reg.baseline_value,
        },
    }
    detail = {
        **payload,
        "registration": {"reason": reg.reason, "delivery_id": reg.delivery_id, "registered_at": iso(reg.created_at)},
    }
    now = utcnow()
    return [
        OutboxEvent(event_id=str(uuid.uuid4()), event_type=MODEL_REGISTERED, payload=detail, created_at=now),
        OutboxEvent(event_id=str(uuid.uuid4()), event_type=TOKEN_READY, payload=payload, created_at=now),
    ]
