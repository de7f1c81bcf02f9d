"""The reconcile sweep's cost is bounded: the versions created since the last sweep, plus a fixed
number of tag searches for drafts taken in turn (never one search per draft waiting)."""

from __future__ import annotations

import time
import uuid

import mlflow
import pytest
import sqlalchemy as sa

from hokusai_mlflow_plugin.db.models import SweepState, Token
from hokusai_mlflow_plugin.registration.reconcile import WATERMARK, in_turn, reconcile_once
from hokusai_mlflow_plugin.registration.service import RegistrationService
from tests.mlflow_helpers import CountingClient, log_model


def test_drafts_are_taken_in_turn_and_wrap_around():
    drafts = ["A", "B", "C", "D", "E"]
    assert in_turn(drafts, "", 2) == ["A", "B"]
    assert in_turn(drafts, "B", 2) == ["C", "D"]
    assert in_turn(drafts, "D", 2) == ["E", "A"]
    assert in_turn(drafts, "C2", 2) == ["D", "E"]  # a cursor whose draft is gone since
    assert in_turn(drafts, "", 10) == drafts
    assert in_turn([], "X", 3) == []


def test_an_old_version_of_a_draft_is_found_in_turn_with_bounded_searches(stack, monkeypatch, receiver_down, unique_name, token_id):
    """A version whose webhook was lost and that is older than the sweep's window (created before
    its token, or tagged by hand later): only the tag search finds it. With many drafts waiting, each
    sweep searches ``searches`` of them, so its MLflow searches stay bounded, and the version is
    decided within ``drafts / searches`` sweeps."""
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
    with mlflow.start_run():
        mlflow.log_metric("auroc", 0.9)
        version = str(log_model(registered_model_name=unique_name).registered_model_version)
    stack.create_token(token_id)  # the token comes after its version: no webhook decided it
    for _ in range(12):
        stack.create_token(f"RC-{uuid.uuid4().hex[:10].upper()}")  # drafts that wait
    with stack.sessions() as s:
        drafts = s.scalar(sa.select(sa.func.count()).select_from(Token).where(Token.status == "draft"))
    client = CountingClient(stack.client)
    service = RegistrationService(stack.sessions, client)
    searches = 5
    with stack.sessions() as s:
        saved = s.get(SweepState, WATERMARK)
        saved = saved.value if saved else "0"
    try:
        sweep = _sweep_until_decided(stack, service, client, searches, unique_name, version)
    finally:  # the stack is the session's: later tests' sweeps need the real window
        with stack.sessions.begin() as s:
            s.merge(SweepState(key=WATERMARK, value=saved))
    assert stack.registration(unique_name, version).outcome == "registered"
    assert sweep <= drafts // searches + 1, (sweep, drafts)  # each draft once per round


def _sweep_until_decided(stack, service, client, searches, name, version) -> int:
    for sweep in range(200):
        with stack.sessions.begin() as s:  # the version is out of the window of new versions
            s.merge(SweepState(key=WATERMARK, value=str(int(time.time() * 1000) + 3_600_000)))
        client.calls.clear()
        outcomes = reconcile_once(service, searches=searches)
        assert client.count("search_model_versions") <= 1 + searches  # one page of new versions (none), then the drafts' searches
        if any((o.model_name, o.model_version) == (name, version) for o in outcomes):
            return sweep
    raise AssertionError("the tag search never reached the token")


@pytest.mark.parametrize("linger, wait", [(None, 30.0), (45.0, 55.0)], ids=["default", "linger-45s"])
def test_outcome_tags_lost_with_a_receiver_are_written_by_the_sweep(stack, monkeypatch, receiver_down, unique_name, token_id,
                                                                    linger, wait):
    """The receiver writes a decision's outcome tags after its commit, gathered for a moment: a
    receiver killed in between loses them (the chaos run found 30 of 1,000 versions untagged). The
    sweep writes the registration's outcome on a version decided over ``wait`` ago (``retag_after``: 30
    s; an operator's linger of 45 s holds the tags that long, and the sweep waits 10 s more) that
    still has none, and leaves a younger decision's tags to the receiver."""
    from datetime import timedelta

    from hokusai_mlflow_plugin.db.models import Registration
    from hokusai_mlflow_plugin.registration.reconcile import retag_after

    stack.create_token(token_id)
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
    with mlflow.start_run():
        mlflow.log_metric("auroc", 0.9)
        version = str(log_model(registered_model_name=unique_name).registered_model_version)
    killed = RegistrationService(stack.sessions, stack.client, tag_later=lambda flush: None)  # its queue never flushed
    decided = killed.register(unique_name, version)
    assert decided.status == "registered"
    assert "hokusai_status" not in stack.client.get_model_version(unique_name, version).tags

    sweeper = RegistrationService(stack.sessions, stack.client, **({"outcome_tag_linger": linger} if linger else {}))
    assert retag_after(sweeper) == wait

    of_version = sa.select(Registration).where(Registration.model_name == unique_name)
    with stack.sessions() as s:
        at = s.scalars(of_version).one().created_at

    def decided_ago(seconds: float) -> None:
        with stack.sessions.begin() as s:
            s.scalars(of_version).one().created_at = at - timedelta(seconds=seconds)

    for seconds in (0, wait - 5):  # the receiver's tags may still be on their way
        decided_ago(seconds)
        reconcile_once(sweeper)
        assert "hokusai_status" not in stack.client.get_model_version(unique_name, version).tags, seconds

    decided_ago(wait + 5)
    assert reconcile_once(sweeper) == []  # nothing to decide
    written = stack.client.get_model_version(unique_name, version).tags
    assert written["hokusai_status"] == "registered"
    assert written["hokusai_reason"] == decided.reason
    assert stack.token(token_id)["status"] == "registered"
