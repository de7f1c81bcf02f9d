"""The reconcile sweep: decide the model versions of draft tokens that no webhook decided (MLflow
fires webhooks once, fire-and-forget; a receiver that was down loses them).

It looks at (1) the versions found by ``tags.hokusai_token_id`` for each draft token, and (2) the
versions created since the last sweep (newest first, with an overlap), whose LoggedModel or run may
carry the tag although the version does not. Its cost grows with the versions created since the
last sweep, not with the size of the registry.
"""

from __future__ import annotations

import json
import logging
import threading

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
LAST_SWEEP = "reconcile.last_sweep"  # JSON: when the last sweep ended, and how many it decided
OVERLAP_MS = 5 * 60 * 1000  # versions created while the last sweep ran, clocks a little apart
PAGE = 200


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


def _drafts_and_watermark(sessions) -> tuple[set[str], int]:
    with sessions() as session:
        drafts = set(session.scalars(sa.select(Token.token_id).where(Token.status == DRAFT)))
        state = session.get(SweepState, WATERMARK)
        return drafts, int(state.value) if state else 0


def _undecided_of(sessions, found, recent):
    with sessions() as session:
        return _undecided(session, recent - found), _undecided(session, found)


def _save_watermark(sessions, newest: int) -> None:
    with sessions.begin() as session:
        state = session.get(SweepState, WATERMARK)
        if state is None:
            session.add(SweepState(key=WATERMARK, value=str(newest)))
        elif int(state.value) < newest:
            state.value = str(newest)


def reconcile_once(service: RegistrationService) -> list[Outcome]:
    client, sessions = service.client, service.sessions
    drafts, since = guarded(_drafts_and_watermark, sessions)
    if not drafts:
        guarded(_save_last_sweep, sessions, 0)
        return []

    try:
        found: set[tuple[str, str]] = set()
        for token_id in sorted(drafts):
            # ILIKE: a tag typed by hand in the UI may be 'xray' for token XRAY
            for mv in _search(client, f"tags.{tags.TOKEN_ID} ILIKE '{token_id}'"):
                found.add((mv.name, str(mv.version)))

        newest = since
        recent: set[tuple[str, str]] = set()
        for mv in _search(client, None, ["creation_timestamp DESC"]):
            if mv.creation_timestamp < since - OVERLAP_MS:
                break
            newest = max(newest, mv.creation_timestamp)
            recent.add((mv.name, str(mv.version)))

        recent, found = guarded(_undecided_of, sessions, found, recent)
        for name, version in sorted(recent):
            try:
                facts = mlflow_facts.fetch(client, name, version)
            except MlflowNotFound:
                continue  # deleted since it was listed
            token_id, _ = token_id_of(facts)
            if token_id in drafts:
                found.add((name, version))
    except MlflowUnavailable as e:
        raise MlflowUnavailable(f"reconcile could not read MLflow: {e}") from e

    outcomes = []
    for name, version in sorted(found, key=lambda k: (k[0], tags.version_key(k[1]))):
        outcome = service.register(name, version)
        _logger.info("reconcile: model %r version %s -> %s", name, version, outcome.status)
        outcomes.append(outcome)

    guarded(_save_watermark, sessions, newest)
    guarded(_save_last_sweep, sessions, len(outcomes))
    RECONCILE_SWEEPS.labels("ok").inc()
    for outcome in outcomes:
        RECONCILE_DECIDED.labels(outcome.status).inc()
    return outcomes


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
