"""The reconcile sweep: decide the model versions of draft tokens that no webhook decided (MLflow
fires webhooks once, fire-and-forget; a receiver that was down loses them).

It looks at (1) the versions created since the last sweep (newest first, with an overlap), whose
version, LoggedModel or run carries a draft's token id, and (2) the versions found by
``tags.hokusai_token_id`` for up to ``DRAFT_SEARCHES`` draft tokens, taken in turn from one sweep to
the next: a version tagged by hand long after its creation, or created before its token, whose
webhook was lost. Its cost grows with the versions created since the last sweep, plus a bounded
number of searches, never with the size of the registry nor with the drafts waiting (a token whose
versions were all rejected stays a draft: there may be thousands).

It also writes the outcome tags that a decision lost: the receiver writes them after its commit
(gathered until a burst pauses, ``outcome_tags.MOST`` at most), and a receiver killed in between loses them. A
version of (1) decided more than ``retag_after`` ago (30 s by default) and still without ``hokusai_status`` gets its
registration row's outcome, so the MLflow UI shows every decision.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta

import sqlalchemy as sa

from hokusai_mlflow_plugin.core import tags
from hokusai_mlflow_plugin.core.errors import MlflowUnavailable, Unavailable
from hokusai_mlflow_plugin.db.errors import guarded
from hokusai_mlflow_plugin.db.models import DRAFT, Registration, SweepState, Token, iso, utcnow
from hokusai_mlflow_plugin.mlflow_io import facts as mlflow_facts
from hokusai_mlflow_plugin.mlflow_io.client import MlflowNotFound, call, pages
from hokusai_mlflow_plugin.monitoring import RECONCILE_DECIDED, RECONCILE_SWEEPS
from hokusai_mlflow_plugin.registration.decision import token_id_of
from hokusai_mlflow_plugin.registration.service import Outcome, RegistrationService

_logger = logging.getLogger(__name__)

WATERMARK = "reconcile.newest_creation_ms"
DRAFT_CURSOR = "reconcile.draft_cursor"  # the last draft searched by tag: the next sweep goes on after it
DRAFT_SEARCHES = 20  # drafts searched by tag per sweep: each is one MLflow search
LAST_SWEEP = "reconcile.last_sweep"  # JSON: when the last sweep ended, and how many it decided
OVERLAP_MS = 5 * 60 * 1000  # versions created while the last sweep ran, clocks a little apart
PAGE = 200
#: seconds beyond the receiver's longest wait for a burst's pause (``outcome_tags.MOST``, 20 s, or a
#: longer ``HOKUSAI_OUTCOME_TAG_LINGER``) before the sweep writes a decision's outcome tags itself:
#: the flush's own time
RETAG_MARGIN = 10.0


def retag_after(service: RegistrationService) -> float:
    """Seconds after a decision before the sweep writes its lost outcome tags: the receiver's longest
    wait plus ``RETAG_MARGIN`` (30 s by default), so that it never writes tags the receiver still
    holds. The sweep reads the same setting as the receiver."""
    return service.outcome_tags.most + RETAG_MARGIN


def _search(client, filter_string: str | None, order_by: list[str] | None = None):
    return pages(lambda **kw: call(client.search_model_versions, filter_string, order_by=order_by, **kw), page_size=PAGE)


def _undecided(session, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
    if not keys:
        return set()
    pairs = sa.tuple_(Registration.model_name, Registration.model_version)
    decided = set(
        session.execute(
            sa.select(Registration.model_name, Registration.model_version).where(pairs.in_(sorted(keys)))
        ).tuples()
    )
    return keys - decided


def _drafts_and_state(sessions) -> tuple[list[str], int, str]:
    with sessions() as session:
        drafts = sorted(session.scalars(sa.select(Token.token_id).where(Token.status == DRAFT)))
        watermark, cursor = session.get(SweepState, WATERMARK), session.get(SweepState, DRAFT_CURSOR)
        return drafts, int(watermark.value) if watermark else 0, cursor.value if cursor else ""


def in_turn(drafts: list[str], cursor: str, limit: int) -> list[str]:
    """The ``limit`` drafts after ``cursor`` in order, wrapping around: every draft is searched
    once in ``len(drafts) / limit`` sweeps."""
    after = [t for t in drafts if t > cursor]
    return (after + [t for t in drafts if t <= cursor])[:limit]


def _undecided_of(sessions, keys):
    with sessions() as session:
        return _undecided(session, keys)


def _save_state(sessions, newest: int, cursor: str | None) -> None:
    with sessions.begin() as session:
        state = session.get(SweepState, WATERMARK)
        if state is None:
            session.add(SweepState(key=WATERMARK, value=str(newest)))
        elif int(state.value) < newest:
            state.value = str(newest)
        if cursor is not None:
            session.merge(SweepState(key=DRAFT_CURSOR, value=cursor))


def _recent(client, since: int) -> tuple[set[tuple[str, str]], set[tuple[str, str]], int]:
    """The versions created since ``since`` (less the overlap), those of them without an outcome
    tag, and the newest creation time."""
    newest, recent, untagged = since, set(), set()
    for mv in _search(client, None, ["creation_timestamp DESC"]):
        if mv.creation_timestamp < since - OVERLAP_MS:
            break
        newest = max(newest, mv.creation_timestamp)
        recent.add((mv.name, str(mv.version)))
        if not (mv.tags or {}).get(tags.STATUS):
            untagged.add((mv.name, str(mv.version)))
    return recent, untagged, newest


def _lost_outcomes(sessions, keys: set[tuple[str, str]], after: float) -> dict[str, dict[str, tuple[str, str]]]:
    """model -> version -> (outcome, reason): the versions among ``keys`` decided over ``after``
    seconds ago (their outcome tags are no longer on their way)."""
    if not keys:
        return {}
    before = utcnow() - timedelta(seconds=after)
    pairs = sa.tuple_(Registration.model_name, Registration.model_version)
    lost: dict[str, dict[str, tuple[str, str]]] = {}
    with sessions() as session:
        rows = session.execute(
            sa.select(Registration.model_name, Registration.model_version, Registration.outcome, Registration.reason)
            .where(pairs.in_(sorted(keys)), Registration.created_at < before)
        ).tuples()
        for name, version, outcome, reason in rows:
            lost.setdefault(name, {})[version] = (outcome, reason)
    return lost


def _retag(service, untagged: set[tuple[str, str]]) -> None:
    """Write the outcome tags that decisions lost (an undecided version has no row: not here)."""
    for name, outcomes in sorted(guarded(_lost_outcomes, service.sessions, untagged, retag_after(service)).items()):
        if mlflow_facts.tag_outcomes(service.reader, name, outcomes):
            _logger.info("reconcile: model %r versions %s had lost their outcome tags; written again", name,
                         ", ".join(sorted(outcomes, key=tags.version_key)))


def _found(service, drafts: list[str], since: int, cursor: str, searches: int):
    """The undecided versions of draft tokens this sweep finds, the recent versions without an
    outcome tag, the new watermark and cursor."""
    client, sessions = service.reader, service.sessions  # MLflow's database itself, when the service reads there
    draft_set, found = set(drafts), set()
    recent, untagged, newest = _recent(client, since)
    for name, version in sorted(guarded(_undecided_of, sessions, recent)) if drafts else []:
        try:
            facts = mlflow_facts.fetch(client, name, version)
        except MlflowNotFound:
            continue  # deleted since it was listed
        if token_id_of(facts)[0] in draft_set:
            found.add((name, version))
    searched = in_turn(drafts, cursor, searches)
    for token_id in searched:
        # ILIKE: a tag typed by hand in the UI may be 'xray' for token XRAY
        for mv in _search(client, f"tags.{tags.TOKEN_ID} ILIKE '{token_id}'"):
            found.add((mv.name, str(mv.version)))
    return guarded(_undecided_of, sessions, found), untagged, newest, (searched[-1] if searched else None)


def reconcile_once(service: RegistrationService, searches: int = DRAFT_SEARCHES) -> list[Outcome]:
    """One sweep; ``searches``: how many drafts to search by tag (``DRAFT_SEARCHES``)."""
    sessions = service.sessions
    drafts, since, cursor = guarded(_drafts_and_state, sessions)
    if not drafts and not guarded(_decided_lately, sessions, retag_after(service)):
        guarded(_save_last_sweep, sessions, 0)
        return []
    try:
        found, untagged, newest, cursor = _found(service, drafts, since, cursor, searches)
    except MlflowUnavailable as e:
        raise MlflowUnavailable(f"reconcile could not read MLflow: {e}") from e
    _retag(service, untagged)

    outcomes = []
    for name, version in sorted(found, key=lambda k: (k[0], tags.version_key(k[1]))):
        outcome = service.register(name, version)
        _logger.info("reconcile: model %r version %s -> %s", name, version, outcome.status)
        outcomes.append(outcome)

    guarded(_save_state, sessions, newest, cursor)
    guarded(_save_last_sweep, sessions, len(outcomes))
    RECONCILE_SWEEPS.labels("ok").inc()
    for outcome in outcomes:
        RECONCILE_DECIDED.labels(outcome.status).inc()
    return outcomes


def _decided_lately(sessions, retag: float) -> bool:
    """Was a version decided within the overlap window (whose outcome tags the sweep may have to write)?"""
    since = utcnow() - timedelta(milliseconds=OVERLAP_MS + retag * 1000)
    with sessions() as session:
        return session.scalar(sa.select(Registration.id).where(Registration.created_at >= since).limit(1)) is not None


def _save_last_sweep(sessions, decided: int) -> None:
    value = json.dumps({"at": iso(utcnow()), "decided": decided})
    with sessions.begin() as session:
        state = session.get(SweepState, LAST_SWEEP)
        if state is None:
            session.add(SweepState(key=LAST_SWEEP, value=value))
        else:
            state.value = value


def last_sweep(session) -> dict | None:
    """When the last reconcile sweep ended and how many versions it decided, or None."""
    state = session.get(SweepState, LAST_SWEEP)
    return json.loads(state.value) if state else None


def run_forever(service: RegistrationService, interval: float, stop: threading.Event | None = None) -> None:
    """Sweep every ``interval`` seconds until ``stop`` is set; a failed sweep (MLflow or the
    database away, or anything else) is logged and tried again, so the worker outlives the outage."""
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            reconcile_once(service)
        except Unavailable as e:
            RECONCILE_SWEEPS.labels("unavailable").inc()
            _logger.warning("reconcile: %s; trying again in %ss", e, interval)
        except Exception:
            RECONCILE_SWEEPS.labels("failed").inc()
            _logger.exception("reconcile: the sweep failed; trying again in %ss", interval)
        stop.wait(interval)
