"""The registration service's database part on real SQLite and PostgreSQL: what one decision
writes, the rows it must leave alone, a concurrent twin, a re-decision, a lost race for the token,
reads that take no lock, and a pool whose connections the server killed."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid

import mlflow
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from hokusai_mlflow_plugin.db.migrate import upgrade
from hokusai_mlflow_plugin.db.models import OutboxEvent, Registration, Token
from hokusai_mlflow_plugin.db.session import dispose, get_engine, session_factory
from hokusai_mlflow_plugin.events.envelope import MODEL_REGISTERED, TOKEN_READY
from hokusai_mlflow_plugin.mlflow_io.facts import VersionFacts
from hokusai_mlflow_plugin.core.errors import Unavailable
from hokusai_mlflow_plugin.db.errors import guarded
from hokusai_mlflow_plugin.registration.service import RegistrationService
from tests.mlflow_helpers import CountingClient, log_model, train_and_register


def service_of(url: str) -> RegistrationService:
    return RegistrationService(session_factory(url), client=None)  # no MLflow: the facts are given


def add_token(url: str, token_id: str, status: str = "draft", **fields) -> dict:
    with session_factory(url).begin() as s:
        s.add(Token(token_id=token_id, status=status, metric_name="auroc", baseline_value=0.8, **fields))
    return token(url, token_id)


def token(url: str, token_id: str) -> dict:
    with session_factory(url)() as s:
        return s.get(Token, token_id).to_dict()


def registrations(url: str, name: str) -> list[Registration]:
    with session_factory(url)() as s:
        return list(s.scalars(sa.select(Registration).where(Registration.model_name == name)))


def events(url: str) -> list[OutboxEvent]:
    with session_factory(url)() as s:
        return list(s.scalars(sa.select(OutboxEvent).order_by(OutboxEvent.id)))


def facts(name: str, version: str, token_id: str, auroc: float = 0.9) -> VersionFacts:
    tags = {"hokusai_token_id": token_id}
    return VersionFacts(model_name=name, version=version, source="models:/m-0", run_id="r" * 32, model_id="m-0",
                        version_tags=tags, run_metrics={"auroc": auroc})


def test_a_registration_writes_its_row_the_token_and_two_events_in_order(db_url):
    before = add_token(db_url, "TK-A")
    outcome, event_ids = service_of(db_url).decide_and_record(facts("m", "1", "TK-A"), "delivery-1", False)

    assert (outcome.status, outcome.metric_value, outcome.baseline_value) == ("registered", 0.9, 0.8)
    after = token(db_url, "TK-A")
    assert (after["status"], after["model_name"], after["model_version"], after["mlflow_run_id"]) == ("registered", "m", "1", "r" * 32)
    assert after["metric_value"] == 0.9 and after["created_at"] == before["created_at"]  # nothing else of the token moved
    [reg] = registrations(db_url, "m")
    assert (reg.outcome, reg.token_id, reg.delivery_id, reg.reason) == ("registered", "TK-A", "delivery-1", outcome.reason)
    rows = events(db_url)
    assert [e.event_type for e in rows] == [MODEL_REGISTERED, TOKEN_READY]
    assert [e.event_id for e in rows] == event_ids
    assert rows[1].payload == {"token_id": "TK-A", "mlflow_run_id": "r" * 32, "model_name": "m", "model_version": "1",
                               "metadata": {"metric_name": "auroc", "metric_value": 0.9, "baseline_value": 0.8}}
    assert rows[0].payload["registration"]["delivery_id"] == "delivery-1"


def test_a_rejection_writes_its_row_only(db_url):
    before = add_token(db_url, "TK-B")
    outcome, event_ids = service_of(db_url).decide_and_record(facts("m", "1", "TK-B", auroc=0.7))
    assert outcome.status == "rejected" and "0.7" in outcome.reason and event_ids == []
    assert [r.outcome for r in registrations(db_url, "m")] == ["rejected"]
    assert token(db_url, "TK-B") == before
    assert events(db_url) == []


def test_a_twin_of_a_decided_version_writes_nothing(db_url):
    add_token(db_url, "TK-C")
    service = service_of(db_url)
    service.decide_and_record(facts("m", "1", "TK-C"), "first", False)
    with pytest.raises(IntegrityError):
        service.decide_and_record(facts("m", "1", "TK-C"), "second", False)
    assert [r.delivery_id for r in registrations(db_url, "m")] == ["first"]
    assert len(events(db_url)) == 2


def test_a_redecision_replaces_a_rejection_once(db_url):
    service = service_of(db_url)
    first, _ = service.decide_and_record(facts("m", "1", "TK-D"))
    assert first.status == "rejected" and "Unknown token" in first.reason
    add_token(db_url, "TK-D")

    again, event_ids = service.decide_and_record(facts("m", "1", "TK-D"), "by-hand", True)
    assert again.status == "registered" and len(event_ids) == 2
    [reg] = registrations(db_url, "m")
    assert (reg.outcome, reg.delivery_id) == ("registered", "by-hand")
    assert service.find("m", "1").outcome == "registered"

    third, event_ids = service.decide_and_record(facts("m", "1", "TK-D"), None, True)
    assert (third.status, third.decision, event_ids) == ("duplicate", "registered", [])
    assert len(registrations(db_url, "m")) == 1 and len(events(db_url)) == 2


def _wait_for_lock_wait(url: str, timeout: float = 10.0) -> None:
    """Until some session of this database waits on a row lock."""
    deadline = time.monotonic() + timeout
    with get_engine(url).connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )).scalar()
            conn.rollback()
            if waiting:
                return
            time.sleep(0.01)
    raise AssertionError("nobody waited on the token's row lock")


def _wait_until_gone(url: str, pids: list[int], timeout: float = 10.0) -> None:
    """Until none of the backends ``pids`` is left (pg_terminate_backend signals them: they end a
    moment later)."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(sa.make_url(url).render_as_string(hide_password=False), autocommit=True) as conn:
        while time.monotonic() < deadline:
            if not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError(f"the terminated backends {pids} are still there")


def test_a_version_that_loses_the_race_for_its_token_is_rejected_naming_the_winner(pg_url):
    """The token is in draft when this version reads it; another version's claim commits before
    this one's compare-and-set: the decision is taken again on what won, and nothing of ours lands."""
    add_token(pg_url, "TK-E")
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    result = {}
    try:
        with engine.connect() as winner:
            winner.execute(sa.text(
                "UPDATE hokusai_tokens SET status = 'registered', model_name = 'winner', model_version = '7' WHERE token_id = 'TK-E'"
            ))  # the winner's claim, not committed yet: our read still sees a draft
            thread = threading.Thread(
                target=lambda: result.update(out=service_of(pg_url).decide_and_record(facts("loser", "1", "TK-E")))
            )
            thread.start()
            _wait_for_lock_wait(pg_url)  # our claim waits on the winner's row lock
            winner.commit()
        thread.join(30)
    finally:
        engine.dispose()

    outcome, event_ids = result["out"]
    assert outcome.status == "rejected" and event_ids == []
    assert "already registered to model 'winner' version 7" in outcome.reason
    assert [r.outcome for r in registrations(pg_url, "loser")] == ["rejected"]
    assert (token(pg_url, "TK-E")["model_name"], token(pg_url, "TK-E")["metric_value"]) == ("winner", None)
    assert events(pg_url) == []


def test_the_pre_check_does_not_wait_for_a_writer_on_sqlite(tmp_path):
    """SQLite transactions begin IMMEDIATE (the write lock); the pre-check is a read and must not
    queue behind a writer for the 30 s busy timeout."""
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    upgrade(url)
    service = service_of(url)
    service.decide_and_record(facts("m", "1", "TK-F"))  # a rejected row to find
    writer = sqlite3.connect(tmp_path / "tokens.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        found = {}
        thread = threading.Thread(target=lambda: found.update(row=service.find("m", "1")))
        thread.start()
        thread.join(5)
        assert not thread.is_alive(), "the pre-check waited for the write lock"
        assert found["row"].outcome == "rejected"
    finally:
        writer.rollback()
        writer.close()
        dispose(url)


def test_connections_the_server_killed_cost_exactly_one_unavailable(pg_url):
    """Without a pool pre-ping, a pooled connection that died fails its statement, as Unavailable
    (503 to MLflow, which retries), and SQLAlchemy replaces the whole pool for the next request."""
    service = service_of(pg_url)
    add_token(pg_url, "TK-G")
    service.decide_and_record(facts("m", "1", "TK-G", auroc=0.1))  # a rejection: the pool holds connections
    assert service.find("m", "1") is not None
    admin = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            killed = [pid for pid, done in conn.execute(sa.text(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )) if done]
    finally:
        admin.dispose()
    assert killed
    _wait_until_gone(pg_url, killed)

    with pytest.raises(Unavailable):
        guarded(service.find, "m", "1")  # the one request a dead connection costs (none with pool_pre_ping)
    assert service.find("m", "1").outcome == "rejected"
    outcome, _ = service.decide_and_record(facts("m", "2", "TK-G"))
    assert outcome.status == "registered"


def test_after_commit_callbacks_get_the_committed_event_ids(stack, monkeypatch, receiver_down, unique_name, token_id):
    stack.create_token(token_id)
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
    with mlflow.start_run():
        mlflow.log_metric("auroc", 0.9)
        version = str(log_model(registered_model_name=unique_name).registered_model_version)
    calls = []
    service = RegistrationService(stack.sessions, stack.client, after_commit=[calls.append])

    assert service.register(unique_name, version).status == "registered"
    assert service.register(unique_name, version).status == "duplicate"  # no second call
    written = stack.events(token_id)
    assert calls == [[e.event_id for e in sorted(written, key=lambda e: e.id)]] and len(written) == 2
    assert uuid.UUID(calls[0][0])


def test_a_created_delivery_is_decided_on_its_signed_source_without_reading_the_version_back(
    stack, monkeypatch, receiver_down, unique_name, token_id
):
    """A ``model_version.created`` delivery names the version's source (``models:/m-...``) as
    MLflow resolved it: the decision reads the LoggedModel and the run, never the version; its
    facts are those of a full read (the stamped version tags come from the same two)."""
    from hokusai_mlflow_plugin.mlflow_io import facts as mlflow_facts

    stack.create_token(token_id)
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
    with mlflow.start_run() as run:
        mlflow.log_metric("auroc", 0.9)
        version = str(log_model(registered_model_name=unique_name).registered_model_version)
    mv = stack.client.get_model_version(unique_name, version)
    created = {"name": unique_name, "version": version, "source": mv.source, "run_id": None, "tags": {}, "description": None}

    counting = CountingClient(stack.client)
    fast = mlflow_facts.fetch(counting, unique_name, version, created)
    assert counting.calls == ["get_logged_model", "get_run"]
    full = mlflow_facts.fetch(stack.client, unique_name, version)
    assert (fast.run_id, fast.model_id, fast.metric("auroc")) == (full.run_id, full.model_id, full.metric("auroc")) == (run.info.run_id, mv.source.split("/")[-1], 0.9)
    assert fast.tag("hokusai_token_id") == full.tag("hokusai_token_id") == token_id

    counting.calls.clear()
    tagged = []
    service = RegistrationService(stack.sessions, counting, tag_later=lambda fn, *args: tagged.append((fn, args)))
    outcome = service.register(unique_name, version, created=created)
    assert outcome.status == "registered" and outcome.run_id == run.info.run_id
    assert counting.calls == ["get_logged_model", "get_run"]  # nobody to share reads with: the plain reads; the tags wait for tag_later
    assert "hokusai_status" not in stack.client.get_model_version(unique_name, version).tags
    (fn, args), = tagged
    assert fn(*args) is True
    assert stack.client.get_model_version(unique_name, version).tags["hokusai_status"] == "registered"


def test_a_created_delivery_without_a_logged_model_source_reads_the_version(stack, monkeypatch, receiver_down, unique_name, token_id):
    """A source that names no LoggedModel (``runs:/...``, a path): the version is read back, as
    before, for its model id and stamped tags."""
    from hokusai_mlflow_plugin.mlflow_io import facts as mlflow_facts

    monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
    run_id, version = train_and_register(unique_name, {"auroc": 0.9})
    counting = CountingClient(stack.client)
    created = {"name": unique_name, "version": version, "source": f"runs:/{run_id}/model", "run_id": run_id, "tags": {}}
    facts = mlflow_facts.fetch(counting, unique_name, version, created)
    assert counting.calls[0] == "get_model_version" and facts.tag("hokusai_token_id") == token_id
    # decided, so that no later sweep of this session's stack finds it undecided in its window
    stack.create_token(token_id)
    assert RegistrationService(stack.sessions, stack.client).register(unique_name, version).status == "registered"
