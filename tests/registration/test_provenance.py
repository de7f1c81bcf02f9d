"""Provenance in the decision, on real SQLite and PostgreSQL: a model version counts for a token
only if every run and logged model it names was made by someone with ``register`` on that token;
objects with no recorded maker follow ``HOKUSAI_PROVENANCE``. Then once against a real MLflow
server, with ``register()`` reading MLflow."""

from __future__ import annotations

import uuid

import mlflow
import pytest
import sqlalchemy as sa

from hokusai_mlflow_plugin.auth import ownership, principals
from hokusai_mlflow_plugin.auth.keys import Caller
from hokusai_mlflow_plugin.db.models import MADE_LOGGED_MODEL, MADE_RUN, TEAM, USER, OutboxEvent, Registration, Token
from hokusai_mlflow_plugin.db.session import get_engine, session_factory
from hokusai_mlflow_plugin.mlflow_io.facts import VersionFacts
from hokusai_mlflow_plugin.registration import tokens
from hokusai_mlflow_plugin.registration.service import RegistrationService
from tests.mlflow_helpers import log_model

NOT_THROUGH_GATEWAY = "was not logged through the gateway"


def hex32() -> str:
    return uuid.uuid4().hex


def model_id() -> str:
    return "m-" + uuid.uuid4().hex


class Tenants:
    """Users alice, bob, carol; teams A {alice} and B {bob, carol}; draft tokens (auroc >= 0.8)
    ALICE1 (alice's), BOB1 (B's), SHARED (B's, read granted to alice), GRANTED (B's, register
    granted to team A); a key for each user and an operator's admin key."""

    def __init__(self, url: str):
        self.url = url
        self.sessions = session_factory(url)
        with self.sessions.begin() as s:
            ids = {name: principals.create(s, name, USER).id for name in ("alice", "bob", "carol")}
            for team in ("A", "B"):
                principals.create(s, team, TEAM)
            principals.add_member(s, "A", "alice")
            principals.add_member(s, "B", "bob")
            principals.add_member(s, "B", "carol")
            for token_id, owner in (("ALICE1", "alice"), ("BOB1", "B"), ("SHARED", "B"), ("GRANTED", "B")):
                tokens.create(s, token_id, "auroc", 0.8, owner=owner)
            tokens.grant(s, "SHARED", "alice", "read")
            tokens.grant(s, "GRANTED", "A", "register")
        self.keys = {name: Caller(f"k{name[:7]:0<7}", f"{name}-key", ("read", "register"), user_id=user_id)
                     for name, user_id in ids.items()}
        self.keys["admin"] = Caller("kadmin00", "ops", ("admin",))

    def made(self, who: str, kind: str = MADE_RUN, object_id: str | None = None) -> str:
        """Record that ``who`` made an MLflow run (or logged model) through the gateway; its id."""
        object_id = object_id or (hex32() if kind == MADE_RUN else model_id())
        with get_engine(self.url).begin() as conn:
            ownership.record_maker(conn, kind, object_id, self.keys[who])
        return object_id

    def service(self, provenance: str = "open") -> RegistrationService:
        return RegistrationService(self.sessions, client=None, provenance=provenance)

    def decide(self, facts: VersionFacts, provenance: str = "open"):
        outcome, event_ids = self.service(provenance).decide_and_record(facts)
        return outcome, event_ids

    def token(self, token_id: str) -> dict:
        with self.sessions() as s:
            return s.get(Token, token_id).to_dict()

    def events(self) -> list[OutboxEvent]:
        with self.sessions() as s:
            return list(s.scalars(sa.select(OutboxEvent)))

    def registration(self, name: str) -> Registration:
        with self.sessions() as s:
            return s.scalars(sa.select(Registration).where(Registration.model_name == name)).one()


@pytest.fixture
def tenants(db_url) -> Tenants:
    return Tenants(db_url)


def version(token_id: str, run_id: str | None = None, *, source: str | None = None, model: str | None = None,
            auroc: float = 0.9) -> VersionFacts:
    """A version as MLflow would describe it: of ``run_id`` (``runs:/`` source) unless ``source``
    or a logged ``model`` says otherwise; tagged for ``token_id``; auroc logged on its run."""
    if source is None:
        source = f"models:/{model}" if model else f"runs:/{run_id}/model" if run_id else None
    return VersionFacts(model_name=f"model-{uuid.uuid4().hex[:8]}", version="1", source=source, run_id=run_id,
                        model_id=model, version_tags={"hokusai_token_id": token_id}, run_metrics={"auroc": auroc})


def test_a_run_counts_for_its_makers_token_and_not_for_anothers(tenants):
    run = tenants.made("alice")
    mine, events = tenants.decide(version("ALICE1", run))
    assert mine.status == "registered" and len(events) == 2
    assert tenants.token("ALICE1")["mlflow_run_id"] == run

    before, events_before = tenants.token("BOB1"), len(tenants.events())
    facts = version("BOB1", run)
    theirs, events = tenants.decide(facts)
    assert theirs.status == "rejected" and events == []
    assert run in theirs.reason and "'alice'" in theirs.reason and "BOB1" in theirs.reason
    assert tenants.token("BOB1") == before and before["status"] == "draft"
    assert len(tenants.events()) == events_before
    row = tenants.registration(facts.model_name)
    assert (row.outcome, row.token_id, row.reason) == ("rejected", "BOB1", theirs.reason)


@pytest.mark.parametrize("provenance", ["open", "required"])
def test_a_teammates_run_counts_for_the_teams_token(tenants, provenance):
    outcome, _ = tenants.decide(version("BOB1", tenants.made("carol")), provenance)
    assert outcome.status == "registered", outcome.reason


def test_a_register_grant_makes_a_run_count_and_a_read_grant_does_not(tenants):
    granted, _ = tenants.decide(version("GRANTED", tenants.made("alice")), "required")  # team A's register grant
    assert granted.status == "registered", granted.reason
    shared, events = tenants.decide(version("SHARED", tenants.made("alice")), "required")
    assert shared.status == "rejected" and "'alice'" in shared.reason and "SHARED" in shared.reason and events == []
    assert tenants.token("SHARED")["status"] == "draft"


def test_a_logged_model_of_another_maker_is_refused_though_the_run_is_yours(tenants):
    run, bobs_model = tenants.made("alice"), tenants.made("bob", MADE_LOGGED_MODEL)
    outcome, _ = tenants.decide(version("ALICE1", run, model=bobs_model))
    assert outcome.status == "rejected"
    assert bobs_model in outcome.reason and "'bob'" in outcome.reason and "ALICE1" in outcome.reason
    assert tenants.token("ALICE1")["status"] == "draft"
    # and the other way round: bob's run behind alice's logged model
    outcome, _ = tenants.decide(version("ALICE1", tenants.made("bob"), model=tenants.made("alice", MADE_LOGGED_MODEL)))
    assert outcome.status == "rejected" and "'bob'" in outcome.reason


def test_a_model_id_field_that_differs_from_the_source_is_judged_too(tenants):
    facts = version("ALICE1", tenants.made("alice"), model=tenants.made("alice", MADE_LOGGED_MODEL))
    facts.model_id_field = bobs = tenants.made("bob", MADE_LOGGED_MODEL)  # what MLflow read back as the version's
    outcome, _ = tenants.decide(facts)
    assert outcome.status == "rejected" and bobs in outcome.reason and "'bob'" in outcome.reason


@pytest.mark.parametrize("source", [
    "runs:/{other}/model",
    "RUNS:/{other}/model",
    "mlflow-artifacts:/1/{other}/artifacts/model",
    "s3://bucket/1/{other}/artifacts/model",
])
def test_a_source_that_names_another_run_than_the_declared_one_is_judged_on_that_run(tenants, source):
    run, bobs = tenants.made("alice"), tenants.made("bob")
    outcome, _ = tenants.decide(version("ALICE1", run, source=source.format(other=bobs)))
    assert outcome.status == "rejected" and bobs in outcome.reason and "'bob'" in outcome.reason


def test_a_source_naming_an_unrecorded_run_beside_a_recorded_one_follows_the_provenance_setting(tenants):
    run, unknown = tenants.made("alice"), hex32()
    required, _ = tenants.decide(version("ALICE1", run, source=f"runs:/{unknown}/model"), "required")
    assert required.status == "rejected" and unknown in required.reason and NOT_THROUGH_GATEWAY in required.reason


def test_with_no_recorded_maker_open_decides_as_before_and_required_rejects(tenants):
    run = hex32()  # made on MLflow directly: no maker recorded
    opened, events = tenants.decide(version("BOB1", run), "open")
    assert opened.status == "registered" and len(events) == 2
    low, _ = tenants.decide(version("ALICE1", hex32(), auroc=0.7), "open")
    assert low.status == "rejected" and "0.7" in low.reason  # the gate still judges

    required, events = tenants.decide(version("ALICE1", run := hex32()), "required")
    assert required.status == "rejected" and events == []
    assert f"Run {run} {NOT_THROUGH_GATEWAY}" in required.reason and "ALICE1" in required.reason
    assert tenants.token("ALICE1")["status"] == "draft"
    # a logged model with no recorded maker, under a run with one, is refused alike
    model = model_id()
    outcome, _ = tenants.decide(version("ALICE1", tenants.made("alice"), model=model), "required")
    assert outcome.status == "rejected" and f"Logged model {model} {NOT_THROUGH_GATEWAY}" in outcome.reason


def test_an_unowned_token_takes_only_unrecorded_or_admin_made_models(tenants):
    with tenants.sessions.begin() as s:
        tokens.create(s, "UNOWNED", "auroc", 0.8)
    refused, _ = tenants.decide(version("UNOWNED", tenants.made("alice")))
    assert refused.status == "rejected" and "'alice'" in refused.reason
    laptop, _ = tenants.decide(version("UNOWNED", hex32()), "open")
    assert laptop.status == "registered", laptop.reason


def test_an_admin_made_run_counts_for_any_token(tenants):
    for token_id in ("ALICE1", "BOB1", "SHARED"):
        outcome, _ = tenants.decide(version(token_id, tenants.made("admin")), "required")
        assert outcome.status == "registered", outcome.reason


@pytest.mark.parametrize("source", [None, "/tmp/model", "s3://bucket/model.pkl", "models:/other-model/3"])
def test_a_version_naming_no_run_or_model_is_rejected_where_provenance_is_required(tenants, source):
    facts = version("ALICE1", None, source=source)
    # a source that names neither a run nor a logged model is a subject of its own: nobody made it
    assert facts.named_objects() == ([("source", source)] if source else [])
    outcome, events = tenants.decide(facts, "required")
    assert outcome.status == "rejected" and events == [] and "ALICE1" in outcome.reason
    assert "gateway" in outcome.reason
    opened, _ = tenants.decide(version("BOB1", None, source=source), "open")
    assert opened.status == "registered", opened.reason


def test_a_stranger_is_judged_as_herself_not_by_other_makers_teams(tenants):
    """dave, in no team, made a run; carol (team B) made others. dave's run counts for no token of
    B's: a maker's right is her own, never borrowed from another row (a subquery not correlated to
    its maker joins every maker, and anyone's team would do)."""
    with tenants.sessions.begin() as s:
        dave = principals.create(s, "dave", USER).id
    tenants.keys["dave"] = Caller("kdave000", "dave-key", ("read", "register"), user_id=dave)
    tenants.made("carol")
    tenants.made("bob", MADE_LOGGED_MODEL)
    run = tenants.made("dave")
    for token_id in ("BOB1", "SHARED", "GRANTED"):
        outcome, events = tenants.decide(version(token_id, run))
        assert outcome.status == "rejected" and "'dave'" in outcome.reason and events == [], (token_id, outcome.reason)


def test_a_makers_right_is_judged_when_the_version_is_decided(tenants):
    run = tenants.made("carol")
    with tenants.sessions.begin() as s:
        principals.remove_member(s, "B", "carol")
    outcome, _ = tenants.decide(version("BOB1", run))
    assert outcome.status == "rejected" and "'carol'" in outcome.reason


def test_a_run_whose_maker_was_deleted_counts_for_nobody(tenants):
    run = tenants.made("alice")
    with tenants.sessions.begin() as s:
        s.delete(principals.find(s, "alice", USER))
    outcome, _ = tenants.decide(version("ALICE1", run))
    assert outcome.status == "rejected" and "no longer exists" in outcome.reason


def test_the_first_record_of_a_maker_stands(tenants):
    run = tenants.made("alice")
    tenants.made("bob", MADE_RUN, run)  # a second claim on the same run changes nothing
    with get_engine(tenants.url).connect() as conn:
        assert ownership.makers(conn, [(MADE_RUN, run)])[(MADE_RUN, run)].user == "alice"
    outcome, _ = tenants.decide(version("ALICE1", run), "required")
    assert outcome.status == "registered", outcome.reason


def test_an_unknown_provenance_mode_is_refused(tenants):
    with pytest.raises(ownership.OwnershipError, match="HOKUSAI_PROVENANCE"):
        tenants.service("closed")


# -- against a real MLflow server --------------------------------------------------------------------


@pytest.fixture
def token_db(sqlite_url):
    return sqlite_url


def test_register_reads_mlflow_and_credits_the_makers_token_only(tracking, token_db, unique_name):
    """A model alice logged under her run, registered twice: a version tagged for bob's team's
    BOB1 is rejected with the reason, in the token store and in the MLflow UI; one tagged for her
    ALICE1 is registered."""
    tenants = Tenants(token_db)
    with mlflow.start_run() as run:
        mlflow.log_metric("auroc", 0.91)
        info = log_model()
    run_id, logged = run.info.run_id, info.model_id
    tenants.made("alice", MADE_RUN, run_id)
    tenants.made("alice", MADE_LOGGED_MODEL, logged)
    tracking.create_registered_model(unique_name)
    service = RegistrationService(tenants.sessions, tracking, provenance="required")

    for_bob = tracking.create_model_version(unique_name, info.model_uri, run_id=run_id, model_id=logged,
                                            tags={"hokusai_token_id": "BOB1"})
    outcome = service.register(unique_name, for_bob.version)
    assert outcome.status == "rejected", outcome.reason
    assert "'alice'" in outcome.reason and "BOB1" in outcome.reason and (run_id in outcome.reason or logged in outcome.reason)
    assert tenants.token("BOB1")["status"] == "draft" and tenants.events() == []
    shown = tracking.get_model_version(unique_name, for_bob.version).tags
    assert (shown["hokusai_status"], shown["hokusai_reason"]) == ("rejected", outcome.reason)

    for_alice = tracking.create_model_version(unique_name, info.model_uri, run_id=run_id, model_id=logged,
                                              tags={"hokusai_token_id": "ALICE1"})
    outcome = service.register(unique_name, for_alice.version)
    assert outcome.status == "registered", outcome.reason
    after = tenants.token("ALICE1")
    assert (after["status"], after["mlflow_run_id"], after["model_version"], after["metric_value"]) == (
        "registered", run_id, str(for_alice.version), 0.91)
    assert tracking.get_model_version(unique_name, for_alice.version).tags["hokusai_status"] == "registered"
