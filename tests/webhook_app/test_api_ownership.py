"""Ownership on the live stack (a real MLflow server, the MLflow gateway, the receiver and its API;
SQLite and PostgreSQL): the attempts of the ownership issue's table, made as alice would make
them, each refused or rejected with its reason; and the positive cases, a teammate of the owning
team and a user given a ``register`` grant, each registering their own model."""

from __future__ import annotations

import uuid

import mlflow
import pytest
import requests

from hokusai_mlflow_plugin.auth import keys, mlflow_objects, principals
from hokusai_mlflow_plugin.db.models import EXPERIMENT, TEAM, USER
from hokusai_mlflow_plugin.registration import tokens
from tests.api_helpers import Api, assert_problem
from tests.mlflow_helpers import log_model


@pytest.fixture
def tenants(stack, monkeypatch):
    """alice (team A); bob and carol (team B); dave (no team, a register grant on BOB2). Tokens:
    ALICE1 (alice's), BOB1 and BOB2 (team B's). Each person's key, and a way to act as them in
    MLflow through the gateway."""
    tag = uuid.uuid4().hex[:6].upper()
    names = {who: f"{who}-{tag.lower()}" for who in ("alice", "bob", "carol", "dave", "team-a", "team-b")}
    ids = {t: f"{t}-{tag}" for t in ("ALICE1", "BOB1", "BOB2")}
    with stack.sessions.begin() as s:
        for who in ("alice", "bob", "carol", "dave"):
            principals.create(s, names[who], USER)
        for team in ("team-a", "team-b"):
            principals.create(s, names[team], TEAM)
        principals.add_member(s, names["team-a"], names["alice"])
        principals.add_member(s, names["team-b"], names["bob"])
        principals.add_member(s, names["team-b"], names["carol"])
        tokens.create(s, ids["ALICE1"], "auroc", 0.8, owner=names["alice"])
        tokens.create(s, ids["BOB1"], "auroc", 0.8, owner=names["team-b"])
        tokens.create(s, ids["BOB2"], "auroc", 0.8, owner=names["team-b"])
        tokens.grant(s, ids["BOB2"], names["dave"], "register")
        made = {who: keys.create(s, f"{who}-laptop", ("read", "register"), user=names[who]).key
                for who in ("alice", "bob", "carol", "dave")}
    gateway = stack.gateway_url + "/mlflow"

    class Tenants:
        token = ids
        name = names
        key = made

        @staticmethod
        def api(who: str) -> Api:
            return Api(stack.receiver.url, made[who])

        @staticmethod
        def logs(who: str, auroc: float) -> tuple[str, str]:
            """``who`` trains through the gateway with their key: (models:/ URI, run id)."""
            monkeypatch.setenv("MLFLOW_TRACKING_URI", gateway)
            monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", made[who])
            mlflow.set_tracking_uri(gateway)
            try:
                with mlflow.start_run() as run:
                    mlflow.log_metric("auroc", auroc)
                    info = log_model()
            finally:
                monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow.url)
                monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
                mlflow.set_tracking_uri(stack.mlflow.url)
            return f"models:/{info.model_id}", run.info.run_id

    return Tenants


def test_alice_cannot_register_her_model_for_bobs_token(stack, tenants, unique_name):
    uri, _ = tenants.logs("alice", 0.95)
    answer = tenants.api("alice").post("/models/register",
                                       json={"token_id": tenants.token["BOB1"], "model_uri": uri, "model_name": unique_name})
    assert_problem(answer, 404, f"Unknown token '{tenants.token['BOB1']}'")
    assert stack.client.search_model_versions(f"name = '{unique_name}'") == []  # nothing was created in MLflow
    assert stack.token(tenants.token["BOB1"])["status"] == "draft"


def test_bobs_model_does_not_count_for_alices_token(stack, tenants, unique_name):
    uri, run_id = tenants.logs("bob", 0.95)
    body = {"token_id": tenants.token["ALICE1"], "model_uri": uri, "model_name": unique_name}
    # teams inside MLflow: bob's model does not exist for alice, here as through the gateway
    assert_problem(tenants.api("alice").post("/models/register", json=body), 404, "MLflow has no")
    # shared with her team to read, it is hers to see, and still not hers to count (provenance)
    experiment = stack.client.get_run(run_id).info.experiment_id
    with stack.sessions.begin() as s:
        mlflow_objects.share(s, keys.Caller("op", "op", ("admin",)), EXPERIMENT, experiment,
                             principals.find(s, tenants.name["team-a"]).id, "read")
    answer = tenants.api("alice").post("/models/register", json=body)
    assert answer.status_code == 200, answer.text
    decision = answer.json()
    assert decision["status"] == "rejected"
    assert tenants.name["bob"] in decision["reason"] and tenants.token["ALICE1"] in decision["reason"]
    assert run_id in decision["reason"] or uri.removeprefix("models:/") in decision["reason"]
    assert stack.token(tenants.token["ALICE1"])["status"] == "draft"
    assert stack.events(tenants.token["ALICE1"]) == []
    # the user reads why in the MLflow UI, like every rejection
    assert tenants.name["bob"] in stack.wait_tag(unique_name, decision["model_version"], "hokusai_reason")


def test_alice_lists_and_reads_only_her_tokens(stack, tenants):
    alice = tenants.api("alice")
    listed = [t["token_id"] for t in alice.get("/tokens", params={"q": tenants.token["ALICE1"].split("-")[1]}).json()["items"]]
    assert listed == [tenants.token["ALICE1"]]
    assert alice.get(f"/tokens/{tenants.token['ALICE1']}").json()["owner"] == tenants.name["alice"]
    assert_problem(alice.get(f"/tokens/{tenants.token['BOB1']}"), 404, "Unknown token")


def test_a_teammate_registers_for_the_teams_token(stack, tenants, unique_name):
    uri, run_id = tenants.logs("carol", 0.9)
    answer = tenants.api("carol").post("/models/register",
                                       json={"token_id": tenants.token["BOB1"], "model_uri": uri, "model_name": unique_name})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "registered", answer.json()
    token = stack.token(tenants.token["BOB1"])
    assert (token["status"], token["mlflow_run_id"]) == ("registered", run_id)
    # the registered model the API made is her team's in MLflow: bob reaches it through the gateway, alice does not
    get = f"{stack.gateway_url}/mlflow/api/2.0/mlflow/registered-models/get"
    for who, status in (("carol", 200), ("bob", 200), ("alice", 404)):
        answer = requests.get(get, params={"name": unique_name}, headers={"Authorization": f"Bearer {tenants.key[who]}"}, timeout=30)
        assert answer.status_code == status, (who, answer.text)


def test_a_register_grant_lets_its_holder_register(stack, tenants, unique_name):
    uri, _ = tenants.logs("dave", 0.9)
    answer = tenants.api("dave").post("/models/register",
                                      json={"token_id": tenants.token["BOB2"], "model_uri": uri, "model_name": unique_name})
    assert answer.status_code == 200 and answer.json()["status"] == "registered", answer.text
    # the grant is on BOB2 only: BOB1 stays hidden from dave
    assert_problem(tenants.api("dave").get(f"/tokens/{tenants.token['BOB1']}"), 404, "Unknown token")
