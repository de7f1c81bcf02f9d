"""The token's life after registration, on real SQLite and PostgreSQL: deploy, the same call again,
another version or target refused, undeploy, archive for good, the history with who acted, and 20
deployers at once leaving exactly one transition."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from hokusai_mlflow_plugin.auth import principals
from hokusai_mlflow_plugin.auth.keys import Caller
from hokusai_mlflow_plugin.core.errors import CONFLICT, FORBIDDEN, INVALID, NOT_FOUND, HokusaiError
from hokusai_mlflow_plugin.db.migrate import upgrade
from hokusai_mlflow_plugin.db.models import TEAM, USER, OutboxEvent, Registration, Token, TokenTransition, utcnow
from hokusai_mlflow_plugin.db.session import dispose, session_factory
from hokusai_mlflow_plugin.registration import lifecycle, tokens
from tests.harness import create_pg_database, drop_pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'tokens.db'}" if request.param == "sqlite" else create_pg_database("hokusai_lifecycle")
    upgrade(url)
    sessions = session_factory(url)
    with sessions.begin() as s:
        ids = {name: principals.create(s, name, USER).id for name in ("alice", "carol", "mallory")}
        principals.create(s, "vision", TEAM)
        principals.add_member(s, "vision", "alice")
        principals.add_member(s, "vision", "carol")
        token = tokens.create(s, "XRAY", "auroc", 0.8, owner="vision")
        token.status, token.model_name, token.model_version, token.mlflow_run_id, token.metric_value = (
            "registered", "xray-model", "3", "r" * 32, 0.9)
        s.add(Registration(model_name="xray-model", model_version="3", token_id="XRAY", outcome="registered",
                           reason="auroc 0.9 >= baseline 0.8.", metric_name="auroc", metric_value=0.9, baseline_value=0.8,
                           mlflow_run_id="r" * 32, created_at=utcnow()))
    callers = {
        "deployer": Caller("kdeploy0", "ci-deploy", ("deploy",), user_id=ids["alice"]),
        "carol": Caller("kcarol00", "carol-laptop", ("register",), user_id=ids["carol"]),
        "register_only": Caller("kalice00", "alice-laptop", ("register",), user_id=ids["alice"]),
        "stranger": Caller("kmallory", "mallory-deploy", ("deploy",), user_id=ids["mallory"]),
        "admin": Caller("kadmin00", "ops", ("admin",)),
    }
    yield sessions, callers
    dispose(url)
    if request.param == "postgresql":
        drop_pg_database(url)


def raises(kind: str, words: str, fn, *args):
    with pytest.raises(HokusaiError) as e:
        fn(*args)
    assert e.value.kind == kind and words in str(e.value), str(e.value)


def events(sessions, event_type: str) -> list[OutboxEvent]:
    with sessions() as s:
        return list(s.scalars(sa.select(OutboxEvent).where(OutboxEvent.event_type == event_type)))


def test_deploy_then_the_same_call_again_changes_nothing(db):
    sessions, who = db
    with sessions.begin() as s:
        change = lifecycle.deploy(s, who["deployer"], "xray", "xray-model", "3", "production")
        assert change.moved and change.token.status == "deployed" and change.token.deployment_target == "production"
    with sessions.begin() as s:
        again = lifecycle.deploy(s, who["deployer"], "XRAY", "xray-model", "3", "production")
        assert not again.moved and again.event_ids == []
    [event] = events(sessions, lifecycle.TOKEN_DEPLOYED)
    assert event.payload["token_id"] == "XRAY" and event.payload["model_version"] == "3"
    assert event.payload["metadata"]["target"] == "production" and event.payload["metadata"]["by"] == "alice"


def test_another_version_or_target_or_state_is_a_conflict_that_names_why(db):
    sessions, who = db
    with sessions.begin() as s:
        raises(CONFLICT, "its registered version is 'xray-model' version 3", lifecycle.deploy, s, who["deployer"], "XRAY",
               "xray-model", "4", "production")
        raises(INVALID, "not a deployment target", lifecycle.deploy, s, who["deployer"], "XRAY", "xray-model", "3", "latest")
        lifecycle.deploy(s, who["deployer"], "XRAY", "xray-model", "3", "production")
    with sessions.begin() as s:
        raises(CONFLICT, "deployed to 'production' already", lifecycle.deploy, s, who["deployer"], "XRAY", "xray-model", "3",
               "staging")
    with sessions.begin() as s:
        assert lifecycle.undeploy(s, who["deployer"], "XRAY").token.status == "registered"
    with sessions.begin() as s:
        assert not lifecycle.undeploy(s, who["deployer"], "XRAY").moved  # not deployed: nothing to end
        assert lifecycle.archive(s, who["carol"], "XRAY", "superseded by XRAY2").token.status == "archived"
    with sessions.begin() as s:
        raises(CONFLICT, "never deployed nor un-archived; make a new token", lifecycle.deploy, s, who["deployer"], "XRAY",
               "xray-model", "3", "production")
        assert not lifecycle.archive(s, who["admin"], "XRAY").moved
    assert [len(events(sessions, t)) for t in (lifecycle.TOKEN_DEPLOYED, lifecycle.TOKEN_UNDEPLOYED, lifecycle.TOKEN_ARCHIVED)] == [1, 1, 1]


def test_rights_a_register_key_cannot_deploy_a_stranger_sees_nothing_a_grantee_cannot_archive(db):
    sessions, who = db
    with sessions.begin() as s:
        raises(NOT_FOUND, "Unknown token 'XRAY'", lifecycle.deploy, s, who["stranger"], "XRAY", "xray-model", "3", "production")
        raises(NOT_FOUND, "Unknown token 'XRAY'", lifecycle.archive, s, who["stranger"], "XRAY")
        raises(NOT_FOUND, "Unknown token 'XRAY'", lifecycle.history, s, who["stranger"], "XRAY")
        tokens.grant(s, "XRAY", "mallory", "register")
    with sessions.begin() as s:  # a register grant deploys, but archiving is the owner's
        assert lifecycle.deploy(s, who["stranger"], "XRAY", "xray-model", "3", "production").moved
        raises(FORBIDDEN, "Only token 'XRAY''s owner or an admin may archive it", lifecycle.archive, s, who["stranger"], "XRAY")
    with sessions() as s:
        assert s.get(Token, "XRAY").status == "deployed"


def test_the_history_names_who_did_what_oldest_first(db):
    sessions, who = db
    with sessions.begin() as s:
        lifecycle.deploy(s, who["deployer"], "XRAY", "xray-model", "3", "production")
    with sessions.begin() as s:
        lifecycle.undeploy(s, who["carol"], "XRAY")
    with sessions.begin() as s:
        lifecycle.archive(s, who["admin"], "XRAY", "retired")
    with sessions() as s:
        entries = lifecycle.history(s, who["carol"], "XRAY")
    assert [(e["from"], e["to"], e["actor"]) for e in entries] == [
        ("draft", "registered", "mlflow"), ("registered", "deployed", "alice"), ("deployed", "registered", "carol"),
        ("registered", "archived", "key ops")]
    assert entries[1]["target"] == "production" and entries[1]["model_version"] == "3" and entries[3]["reason"] == "retired"


def test_twenty_deployers_at_once_leave_exactly_one_transition(db):
    sessions, who = db
    barrier = threading.Barrier(20)
    answers: list[str] = []

    def acknowledge(i: int):
        target = "production" if i % 2 else f"edge-{i}"  # half agree, half want a target of their own
        barrier.wait()
        try:
            with sessions.begin() as s:
                change = lifecycle.deploy(s, who["deployer"], "XRAY", "xray-model", "3", target)
                answers.append("moved" if change.moved else "same")
        except HokusaiError as e:
            answers.append(e.kind)
        except Exception as e:  # SQLite's writer lock, said as the database's busy error
            answers.append(type(e).__name__)

    threads = [threading.Thread(target=acknowledge, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers.count("moved") == 1, answers
    assert set(answers) <= {"moved", "same", CONFLICT}, answers
    with sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(TokenTransition)) == 1
    assert len(events(sessions, lifecycle.TOKEN_DEPLOYED)) == 1
