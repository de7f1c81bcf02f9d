"""``register(model_name, version)``: the one function that decides a model version.

The receiver, the reconcile sweep and the CLI all call it. MLflow is read before the transaction;
the decision, the token's compare-and-set and the outbox rows commit together in ONE transaction
whose registration row (unique on model name + version) is the idempotency key; the outcome is
tagged on the model version after the commit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from hokusai_mlflow_plugin import mlflow_facts
from hokusai_mlflow_plugin.db.models import (
    DRAFT,
    OUTCOME_REGISTERED,
    OUTCOME_REJECTED,
    REGISTERED,
    OutboxEvent,
    Registration,
    Token,
    utcnow,
)
from hokusai_mlflow_plugin.db.session import read_engine
from hokusai_mlflow_plugin.decision import Decision, decide, token_id_of
from hokusai_mlflow_plugin.events import NOTIFY_CHANNEL, registration_events
from hokusai_mlflow_plugin.mlflow_facts import MlflowUnavailable, VersionNotFound

_logger = logging.getLogger(__name__)

REGISTERED_STATUS, REJECTED_STATUS, DUPLICATE, IGNORED = "registered", "rejected", "duplicate", "ignored"


class Unavailable(Exception):
    """A transient failure (database or MLflow unreachable): nothing was written; try again."""


class BadInput(ValueError):
    """The request holds a value that cannot be decided (nothing was written)."""


@dataclass(frozen=True)
class Outcome:
    status: str  # registered | rejected | duplicate | ignored
    reason: str
    model_name: str
    model_version: str
    token_id: str | None = None
    decision: str | None = None  # for a duplicate: the earlier outcome
    metric_name: str | None = None
    metric_value: float | None = None
    baseline_value: float | None = None
    run_id: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def of(cls, reg: Registration | sa.Row, status: str | None = None) -> "Outcome":
        """The outcome a registration row records (a read row or one about to be written)."""
        return cls(
            status=status or reg.outcome,
            reason=reg.reason,
            model_name=reg.model_name,
            model_version=reg.model_version,
            token_id=reg.token_id,
            decision=reg.outcome,
            metric_name=reg.metric_name,
            metric_value=reg.metric_value,
            baseline_value=reg.baseline_value,
            run_id=reg.mlflow_run_id,
        )


class RegistrationService:
    """Decides model versions. ``after_commit`` callbacks run after a registration commits, with
    the ids of the outbox events it wrote (the events relay's fast path hooks in there)."""

    def __init__(
        self, sessions: sessionmaker[Session], client, after_commit: list[Callable[[list[str]], None]] | None = None
    ):
        self.sessions = sessions
        self.client = client
        self.after_commit = list(after_commit or [])
        self.engine = sessions.kw["bind"]
        self.reads = read_engine(self.engine)

    def register(self, model_name: str, version, *, delivery_id: str | None = None, redecide: bool = False) -> Outcome:
        """Decide ``model_name`` version ``version``. ``redecide`` re-runs an earlier rejection (a
        ``hokusai_token_id`` set later by hand); a registered version is never decided twice."""
        version = str(version)
        earlier = self._guard(self._registration, model_name, version)
        if earlier is not None and not (redecide and earlier.outcome == OUTCOME_REJECTED):
            return Outcome.of(earlier, DUPLICATE)

        try:
            facts = mlflow_facts.fetch(self.client, model_name, version)
        except VersionNotFound:
            return Outcome(IGNORED, f"MLflow has no model '{model_name}' version {version}.", model_name, version)
        except MlflowUnavailable as e:
            raise Unavailable(str(e)) from e

        try:
            outcome, event_ids = self._guard(self._decide_and_record, facts, delivery_id, redecide)
        except IntegrityError:
            # Another delivery of this version committed first: the unique row is the answer,
            # unless this delivery brings a token id set by hand, which re-decides a rejection.
            outcome = None
            if redecide:
                try:
                    outcome, event_ids = self._guard(self._decide_and_record, facts, delivery_id, True)
                except IntegrityError:
                    # A third re-decision of the same version got there between our two tries
                    # (each one deletes the rejected row and inserts its own): its row answers.
                    outcome = None
            if outcome is None:
                earlier = self._guard(self._registration, model_name, version)
                if earlier is None:  # pragma: no cover - the constraint that fired names this row
                    raise
                return Outcome.of(earlier, DUPLICATE)

        if event_ids:
            for callback in self.after_commit:  # the events' fast path first: tagging is slower
                try:
                    callback(event_ids)
                except Exception:
                    _logger.warning("after-commit callback failed", exc_info=True)
        if outcome.status != DUPLICATE:
            mlflow_facts.tag_outcome(self.client, model_name, version, outcome.status, outcome.reason)
        return outcome

    # -- inside the database ------------------------------------------------------------------------
    # SQLAlchemy Core, not the ORM's unit of work: the receiver's own time per delivery is these
    # few statements (issue 3), and the ORM's bookkeeping around them cost more than the database.

    def _registration(self, model_name: str, version: str) -> sa.Row | None:
        """The registration row of this version, if any: one SELECT outside any transaction."""
        with self.reads.connect() as conn:
            return conn.execute(_FIND, {"model_name": model_name, "model_version": version}).one_or_none()

    def _decide_and_record(self, facts, delivery_id: str | None, redecide: bool) -> tuple[Outcome, list[str]]:
        """Decide and write the outcome atomically; the outcome and the committed event ids."""
        if redecide or self.engine.dialect.name != "postgresql":
            with self.engine.begin() as conn:
                return self._decide(conn, facts, delivery_id, redecide)
        # A first decision on PostgreSQL writes with ONE statement (_record's, or the rejection's
        # INSERT), atomic by itself: no transaction around it saves the BEGIN and COMMIT round trips.
        # The token read before it is no weaker than in a transaction (READ COMMITTED, no lock): the
        # claim's compare-and-set is what decides a race.
        with self.reads.connect() as conn:
            return self._decide(conn, facts, delivery_id, False)

    def _decide(self, conn: sa.Connection, facts, delivery_id: str | None, redecide: bool) -> tuple[Outcome, list[str]]:
        if redecide:
            # Lock the earlier (rejected) row, so concurrent re-decisions of one version queue
            # behind each other and the second sees the first one's outcome.
            key = {"model_name": facts.model_name, "model_version": facts.version}
            earlier = conn.execute(_FIND_LOCKED, key).one_or_none()
            if earlier is not None:
                if earlier.outcome != OUTCOME_REJECTED:
                    return Outcome.of(earlier, DUPLICATE), []
                conn.execute(_FORGET, {"earlier_id": earlier.id})  # the new decision replaces it

        token_id, _ = token_id_of(facts)
        decision = decide(facts, _token(conn, token_id))
        while True:
            reg = _registration_of(facts, decision, delivery_id)
            if reg.outcome != OUTCOME_REGISTERED:
                # The unique (model name, version) row: a concurrent twin fails here.
                conn.execute(_INSERT_REGISTRATION, _values(reg))
                return Outcome.of(reg), []
            events = registration_events(reg)
            if _record(conn, reg, events):
                return Outcome.of(reg), [e.event_id for e in events]
            # Another version took the token between our read and our write: decide again
            # against the token as the winner left it (a rejection that names the winner).
            decision = decide(facts, _token(conn, decision.token_id))

    @staticmethod
    def _guard(fn, *args):
        try:
            return fn(*args)
        except (OperationalError, InterfaceError, sa.exc.TimeoutError) as e:
            cause = getattr(e, "orig", None) or e
            raise Unavailable(f"The token database is unreachable: {type(cause).__name__}") from e
        except DataError as e:
            # A value the database cannot store (a NUL byte, an over-long name): the request is bad.
            raise BadInput(f"The token database cannot store this request: {type(e.orig).__name__}") from e


TOKENS, REGISTRATIONS, OUTBOX = Token.__table__, Registration.__table__, OutboxEvent.__table__

# Statements are built once: building one costs more CPU than executing its cached compiled form.
_FIND = sa.select(REGISTRATIONS).where(
    REGISTRATIONS.c.model_name == sa.bindparam("model_name"), REGISTRATIONS.c.model_version == sa.bindparam("model_version")
)
_FIND_LOCKED = _FIND.with_for_update()
_FORGET = sa.delete(REGISTRATIONS).where(REGISTRATIONS.c.id == sa.bindparam("earlier_id"))
_TOKEN = sa.select(TOKENS).where(TOKENS.c.token_id == sa.bindparam("token_id"))
_INSERT_REGISTRATION = sa.insert(REGISTRATIONS)  # the values come with each execution
_INSERT_EVENTS = sa.insert(OUTBOX)

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
    """PostgreSQL's _record in ONE statement of data-modifying CTEs: the claim; the registration
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


def _record(conn: sa.Connection, reg: Registration, events: list[OutboxEvent]) -> bool:
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
    conn.execute(_INSERT_REGISTRATION, values)
    conn.execute(_INSERT_EVENTS, rows)
    return True


def _as_params(values: dict) -> dict:
    # An UPDATE, in a CTE too, executed with a parameter named like one of its table's columns
    # SETs that column as well: the registration's token_id and created_at would land on the token.
    return {f"reg_{k}": v for k, v in values.items()}


def _token(conn: sa.Connection, token_id: str | None) -> sa.Row | None:
    return conn.execute(_TOKEN, {"token_id": token_id}).one_or_none() if token_id else None


def _registration_of(facts, decision: Decision, delivery_id: str | None) -> Registration:
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
