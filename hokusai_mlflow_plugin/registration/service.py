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
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hokusai_mlflow_plugin.auth import ownership
from hokusai_mlflow_plugin.db.errors import guarded
from hokusai_mlflow_plugin.db.models import OUTCOME_REGISTERED, OUTCOME_REJECTED, Registration
from hokusai_mlflow_plugin.db.session import read_engine
from hokusai_mlflow_plugin.mlflow_io import facts as mlflow_facts
from hokusai_mlflow_plugin.monitoring import DECISION_SECONDS, REGISTRATIONS
from hokusai_mlflow_plugin.mlflow_io.client import MlflowNotFound, is_store_uri
from hokusai_mlflow_plugin.mlflow_io.outcome_tags import LINGER, PendingOutcomeTags
from hokusai_mlflow_plugin.mlflow_io.shared_reads import SharedLoggedModelReads, SharedRunReads
from hokusai_mlflow_plugin.registration import records
from hokusai_mlflow_plugin.registration.decision import decide, token_id_of

_logger = logging.getLogger(__name__)

REGISTERED_STATUS, REJECTED_STATUS, DUPLICATE, IGNORED = "registered", "rejected", "duplicate", "ignored"


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
    the ids of the outbox events it wrote (the events relay's fast path hooks in there).
    ``tag_later`` (an executor's ``submit``) writes the outcome tags after the answer instead of
    before it: the receiver's, which must not keep MLflow's webhook delivery waiting on MLflow
    writes, and whose tags are written together with those of the decisions around them
    (``outcome_tags.PendingOutcomeTags``); without it (the CLI, the sweep) the tags are written
    before ``register`` returns. ``reader``: a client on MLflow's database (``client.store_client``)
    for the decisions' reads and outcome tags; without it they go to ``client``'s server."""

    def __init__(
        self, sessions: sessionmaker[Session], client, after_commit: list[Callable[[list[str]], None]] | None = None,
        tag_later: Callable | None = None, provenance: str = ownership.OPEN, outcome_tag_linger: float = LINGER,
        reader=None,
    ):
        self.sessions = sessions
        self.provenance = ownership.check_mode(provenance)  # for versions with no recorded maker
        self.client = client
        # What a decision reads of MLflow, and where its outcome tags go: MLflow's database itself
        # when the receiver is given it (HOKUSAI_MLFLOW_STORE_URI), else the server.
        self.reader = reader or client
        if is_store_uri(getattr(self.reader, "tracking_uri", None)):  # a plain read of the database costs MLflow's server nothing
            self.runs = self.models = None
        else:
            self.runs = SharedRunReads(self.reader)  # concurrent decisions read their runs together
            self.models = SharedLoggedModelReads(self.reader)  # and their LoggedModels
        self.after_commit = list(after_commit or [])
        self.tag_later = tag_later
        self.outcome_tags = PendingOutcomeTags(self.reader, linger=outcome_tag_linger)
        self.engine = sessions.kw["bind"]
        self.reads = read_engine(self.engine)

    def register(
        self, model_name: str, version, *, delivery_id: str | None = None, redecide: bool = False, created: dict | None = None
    ) -> Outcome:
        """Decide ``model_name`` version ``version``. ``redecide`` re-runs an earlier rejection (a
        ``hokusai_token_id`` set later by hand); a registered version is never decided twice.
        ``created``: the data of MLflow's ``model_version.created`` delivery (``facts.fetch``)."""
        started = time.perf_counter()
        outcome = self._register(model_name, str(version), delivery_id, redecide, created)
        DECISION_SECONDS.observe(time.perf_counter() - started)
        REGISTRATIONS.labels(outcome.status).inc()
        return outcome

    def _register(self, model_name: str, version: str, delivery_id: str | None, redecide: bool, created: dict | None) -> Outcome:
        earlier = guarded(self.find, model_name, version)
        if earlier is not None and not (redecide and earlier.outcome == OUTCOME_REJECTED):
            return Outcome.of(earlier, DUPLICATE)

        try:
            facts = mlflow_facts.fetch(self.reader, model_name, version, created, self.runs, self.models)  # MlflowUnavailable: try later
        except MlflowNotFound:
            return Outcome(IGNORED, f"MLflow has no model '{model_name}' version {version}.", model_name, version)

        outcome, event_ids = self._record(facts, delivery_id, redecide)
        if event_ids:
            for callback in self.after_commit:  # the events' fast path first: tagging is slower
                try:
                    callback(event_ids)
                except Exception:
                    _logger.warning("after-commit callback failed", exc_info=True)
        if outcome.status != DUPLICATE:
            if self.tag_later is None:
                mlflow_facts.tag_outcome(self.reader, model_name, version, outcome.status, outcome.reason)
            else:  # queued, and written with the outcomes queued by then (one request for a burst's)
                self.outcome_tags.put(model_name, version, outcome.status, outcome.reason)
                self.tag_later(self.outcome_tags.flush)
        return outcome

    def _record(self, facts, delivery_id: str | None, redecide: bool) -> tuple[Outcome, list[str]]:
        """Decide and record; when another delivery of this version committed first, its row."""
        try:
            return guarded(self.decide_and_record, facts, delivery_id, redecide)
        except IntegrityError:
            # Another delivery of this version committed first: the unique row is the answer,
            # unless this delivery brings a token id set by hand, which re-decides a rejection.
            if redecide:
                try:
                    return guarded(self.decide_and_record, facts, delivery_id, True)
                except IntegrityError:
                    # A third re-decision of the same version got there between our two tries
                    # (each one deletes the rejected row and inserts its own): its row answers.
                    pass
            earlier = guarded(self.find, facts.model_name, facts.version)
            if earlier is None:  # pragma: no cover - the constraint that fired names this row
                raise
            return Outcome.of(earlier, DUPLICATE), []

    # -- inside the database ------------------------------------------------------------------------

    def find(self, model_name: str, version: str) -> sa.Row | None:
        """The registration row of this version, if any: one SELECT outside any transaction."""
        with self.reads.connect() as conn:
            return records.find(conn, model_name, str(version))

    def decide_and_record(self, facts, delivery_id: str | None = None, redecide: bool = False) -> tuple[Outcome, list[str]]:
        """Decide ``facts`` and write the outcome atomically; the outcome and the committed event
        ids. ``IntegrityError`` when another decision of the version committed first.

        The database half of ``register()``, for callers that hold the facts already (tests,
        benchmarks). To decide a version, call ``register()``: it also reads MLflow, answers a
        duplicate, kicks the relay and tags the outcome."""
        if redecide or self.engine.dialect.name != "postgresql":
            with self.engine.begin() as conn:
                return self._decide(conn, facts, delivery_id, redecide)
        # A first decision on PostgreSQL writes with ONE statement (record_registered's, or the
        # rejection's INSERT), atomic by itself: no transaction around it saves the BEGIN and COMMIT
        # round trips. The token read before it is no weaker than in a transaction (READ COMMITTED,
        # no lock): the claim's compare-and-set is what decides a race.
        with self.reads.connect() as conn:
            return self._decide(conn, facts, delivery_id, False)

    def _decide(self, conn: sa.Connection, facts, delivery_id: str | None, redecide: bool) -> tuple[Outcome, list[str]]:
        if redecide:
            # Lock the earlier (rejected) row, so concurrent re-decisions of one version queue
            # behind each other and the second sees the first one's outcome.
            earlier = records.find(conn, facts.model_name, facts.version, lock=True)
            if earlier is not None:
                if earlier.outcome != OUTCOME_REJECTED:
                    return Outcome.of(earlier, DUPLICATE), []
                records.forget(conn, earlier.id)  # the new decision replaces it

        token_id, _ = token_id_of(facts)
        token = records.token(conn, token_id)
        not_theirs = None
        if token is not None:
            not_theirs = ownership.provenance_refusal(conn, token.token_id, facts.named_objects(), self.provenance)
        decision = decide(facts, token, not_theirs)
        while True:
            reg = records.registration_of(facts, decision, delivery_id)
            if reg.outcome != OUTCOME_REGISTERED:
                records.insert(conn, reg)  # a concurrent twin fails here, on the unique key
                return Outcome.of(reg), []
            events = records.registration_events(reg)
            if records.record_registered(conn, reg, events):
                return Outcome.of(reg), [e.event_id for e in events]
            # Another version took the token between our read and our write: decide again
            # against the token as the winner left it (a rejection that names the winner).
            decision = decide(facts, records.token(conn, decision.token_id), not_theirs)
