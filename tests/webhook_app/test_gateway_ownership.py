"""Ownership at the gateway: who made each run and logged model is recorded from the key (never a
tag), the system's tags are written by no key, and a model counts only for the token of the people
who made it, end to end (MLflow, the gateway's own process, the webhook, the receiver)."""

from __future__ import annotations

import json
import uuid
from http.server import BaseHTTPRequestHandler

import mlflow
import pytest
import requests
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from hokusai_mlflow_plugin.auth import keys, principals
from hokusai_mlflow_plugin.db.migrate import upgrade
from hokusai_mlflow_plugin.db.models import (
    EXPERIMENT,
    MADE_LOGGED_MODEL,
    MADE_RUN,
    REGISTERED_MODEL,
    TEAM,
    USER,
    MlflowMaker,
    MlflowObject,
)
from hokusai_mlflow_plugin.db.session import dispose, get_engine, session_factory
from hokusai_mlflow_plugin.registration import tokens
from tests.api_helpers import assert_problem
from tests.harness import respond
from tests.live_stack import gateway_in_front_of
from tests.mlflow_helpers import log_model
from webhook_app.gateway.scopes import ROUTES, route_of


def _unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:6]}"


def _user(stack, name: str, *teams: str) -> tuple[int, str]:
    """A user of its own with a read+register key: its id and the whole key."""
    with stack.sessions.begin() as s:
        user = principals.create(s, name, USER)
        for team in teams:
            principals.add_member(s, team, name)
        return user.id, keys.create(s, f"{name}-key", ("read", "register"), user=name).key


def _through_gateway(stack, key: str, monkeypatch) -> str:
    """Plain MLflow in this process pointed at the stack's gateway with ``key``."""
    url = stack.gateway_url + "/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    mlflow.set_tracking_uri(url)
    return url


def _maker(stack, kind: str, object_id: str) -> MlflowMaker | None:
    with stack.sessions() as s:
        return s.get(MlflowMaker, (object_id, kind))  # the primary key: object_id first


# -- who made it -------------------------------------------------------------------------------------


def test_the_maker_of_a_run_and_its_logged_model_is_the_key_s_user_never_the_tag(stack, monkeypatch):
    name = _unique("alice")
    alice, key = _user(stack, name)
    _through_gateway(stack, key, monkeypatch)
    with mlflow.start_run(tags={"mlflow.user": "bob"}) as run:  # a tag any writer can set
        run_maker = _maker(stack, MADE_RUN, run.info.run_id)  # recorded before the answer came back
        info = log_model()
    assert run_maker is not None and run_maker.user_id == alice and run_maker.key_id == key[3:11] and not run_maker.admin
    model_maker = _maker(stack, MADE_LOGGED_MODEL, info.model_id)
    assert model_maker is not None and model_maker.user_id == alice and model_maker.key_id == key[3:11]
    assert stack.client.get_run(run.info.run_id).data.tags["mlflow.user"] == f"{name}-key"  # the key's name, as before


class _RunCreator(BaseHTTPRequestHandler):
    """Stands where MLflow does: every runs/create answers 200 with a new run id."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        respond(self, json.dumps({"run": {"info": {"run_id": uuid.uuid4().hex}, "data": {}}}).encode())

    def log_message(self, *args):
        pass


def test_a_maker_that_cannot_be_recorded_is_a_503_that_says_the_run_is_unattributed(tmp_path):
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    upgrade(url)
    try:
        with session_factory(url).begin() as s:
            key = keys.create(s, "alice", ("register",)).key
            alice = principals.find(s, "alice").id  # owns experiment 7 (the stand-in keeps none)
            s.add(MlflowObject(kind=EXPERIMENT, object_id="7", owner_id=alice, creator_id=alice, key_id=key[3:11]))
        with gateway_in_front_of(_RunCreator, url) as gateway:
            auth = {"Authorization": f"Bearer {key}"}
            create = gateway.url + "/mlflow/api/2.0/mlflow/runs/create"
            assert requests.post(create, json={"experiment_id": "7"}, headers=auth, timeout=30).status_code == 200
            with get_engine(url).begin() as conn:  # the key still checks, the record cannot be written
                conn.execute(sa.text("DROP TABLE hokusai_mlflow_makers"))
            answer = requests.post(create, json={"experiment_id": "7"}, headers=auth, timeout=30)
            body = assert_problem(answer, 503, "was created in MLflow", "unattributed")
            assert "The run " in body["detail"]
    finally:
        dispose(url)


# -- the system's tags -------------------------------------------------------------------------------


@pytest.fixture
def decided_version(pg_stack):
    """A version that the system decided (rejected: it names no token) and tagged with its outcome,
    from a run with its maker's tag, made on MLflow directly and recorded as the user's (its owner);
    keys of that user and of an operator."""
    client = pg_stack.client
    experiment = client.create_experiment(_unique("tags"))
    run = client.create_run(experiment, tags={"mlflow.user": "alice"}).info.run_id
    name = _unique("tagged")
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run}/model", run_id=run).version
    pg_stack.wait_decided(name, version)
    pg_stack.wait_tag(name, version, "hokusai_reason")
    alice = _unique("alice")
    _, key = _user(pg_stack, alice)
    pg_stack.own(EXPERIMENT, experiment, alice)
    pg_stack.own(REGISTERED_MODEL, name, alice)
    return {"name": name, "version": version, "run": run, "url": pg_stack.gateway_url + "/mlflow",
            "keys": [key, pg_stack.api_key("admin", name="operator")],
            "tags": client.get_model_version(name, version).tags}


def _version_tags(stack, v) -> dict:
    return stack.client.get_model_version(v["name"], v["version"]).tags


@pytest.mark.parametrize("path", [
    "api/2.0/mlflow/model-versions/set-tag",
    "ajax-api/2.0/mlflow/model-versions/set-tag",
    "api/2.0/mlflow/model-versions/set%2Dtag",  # escaped to look like another path
    "api/2.0/mlflow/model-versions%2Fset-tag",
    "api/2.0//mlflow/model-versions/set-tag/",
])
def test_no_key_sets_the_outcome_tags_of_a_version(pg_stack, decided_version, path):
    v = decided_version
    for key in v["keys"]:  # an admin's included
        auth = {"Authorization": f"Bearer {key}"}
        for tag in ("hokusai_status", "HOKUSAI_STATUS"):
            body = {"name": v["name"], "version": v["version"], "key": tag, "value": "registered"}
            assert_problem(requests.post(f"{v['url']}/{path}", json=body, headers=auth, timeout=30), 403, f"'{tag}'")
        doubled = json.dumps(json.dumps({"name": v["name"], "version": v["version"], "key": "hokusai_reason", "value": "x"}))
        answer = requests.post(f"{v['url']}/{path}", data=doubled, headers={**auth, "Content-Type": "application/json"}, timeout=30)
        assert_problem(answer, 403, "'hokusai_reason'")  # double-encoded JSON, as MLflow still reads it
    assert _version_tags(pg_stack, v) == v["tags"]


def test_no_key_deletes_the_outcome_tags_or_creates_a_version_with_them(pg_stack, decided_version, monkeypatch):
    v = decided_version
    auth = {"Authorization": f"Bearer {v['keys'][0]}"}
    delete = f"{v['url']}/api/2.0/mlflow/model-versions/delete-tag"
    target = {"name": v["name"], "version": v["version"]}
    assert_problem(requests.delete(delete, json={**target, "key": "hokusai_reason"}, headers=auth, timeout=30), 403, "'hokusai_reason'")
    assert_problem(requests.delete(delete, params={**target, "key": "hokusai_status"}, headers=auth, timeout=30), 403, "'hokusai_status'")
    assert_problem(requests.delete(delete.replace("/api/", "/ajax-api/"), json={**target, "key": "hokusai_status"},
                                   headers=auth, timeout=30), 403, "'hokusai_status'")
    create = {"name": v["name"], "source": f"runs:/{v['run']}/model", "run_id": v["run"],
              "tags": [{"key": "note", "value": "mine"}, {"key": "hokusai_status", "value": "registered"}]}
    assert_problem(requests.post(f"{v['url']}/api/2.0/mlflow/model-versions/create", json=create, headers=auth, timeout=30),
                   403, "'hokusai_status'")
    assert [m.version for m in pg_stack.client.search_model_versions(f"name = '{v['name']}'")] == [v["version"]]
    assert _version_tags(pg_stack, v) == v["tags"]
    # a plain MLflow client hears the refusal, and other tags are the caller's to write
    _through_gateway(pg_stack, v["keys"][0], monkeypatch)
    with pytest.raises(MlflowException, match="hokusai_status"):
        MlflowClient().set_model_version_tag(v["name"], v["version"], "hokusai_status", "registered")
    MlflowClient().set_model_version_tag(v["name"], v["version"], "note", "mine")
    MlflowClient().delete_model_version_tag(v["name"], v["version"], "note")
    assert _version_tags(pg_stack, v) == v["tags"]


def test_no_key_rewrites_who_made_a_run(pg_stack, decided_version, monkeypatch):
    v = decided_version
    runs = f"{v['url']}/api/2.0/mlflow/runs"
    for key in v["keys"]:
        auth = {"Authorization": f"Bearer {key}"}
        refused = [
            requests.post(f"{runs}/set-tag", json={"run_id": v["run"], "key": "mlflow.user", "value": "bob"}, headers=auth, timeout=30),
            requests.post(f"{runs}/set-tag", json={"run_uuid": v["run"], "key": "mlflow.user", "value": "bob"}, headers=auth, timeout=30),
            requests.post(f"{runs}/set%2Dtag", json={"run_id": v["run"], "key": "mlflow.user", "value": "bob"}, headers=auth, timeout=30),
            requests.post(f"{runs.replace('/api/', '/ajax-api/')}/set-tag", json={"run_id": v["run"], "key": "mlflow.user",
                                                                              "value": "bob"}, headers=auth, timeout=30),
            requests.post(f"{runs}/delete-tag", json={"run_id": v["run"], "key": "mlflow.user"}, headers=auth, timeout=30),
            requests.post(f"{runs}/log-batch", json={"run_id": v["run"], "metrics": [], "tags": [
                {"key": "note", "value": "x"}, {"key": "mlflow.user", "value": "bob"}]}, headers=auth, timeout=30),
        ]
        for answer in refused:
            assert_problem(answer, 403, "'mlflow.user'")
    assert pg_stack.client.get_run(v["run"]).data.tags["mlflow.user"] == "alice"
    _through_gateway(pg_stack, v["keys"][0], monkeypatch)
    with pytest.raises(MlflowException, match="mlflow.user"):
        MlflowClient().set_tag(v["run"], "mlflow.user", "bob")
    MlflowClient().log_batch(v["run"], tags=[mlflow.entities.RunTag("note", "mine")])  # other tags are the caller's
    tags = pg_stack.client.get_run(v["run"]).data.tags
    assert tags["mlflow.user"] == "alice" and tags["note"] == "mine"


def test_which_paths_the_gateway_reads():
    for prefix in ("api", "ajax-api"):
        assert route_of(f"{prefix}/2.0/mlflow/runs/create").makes == MADE_RUN
        assert route_of(f"/{prefix}/2.0/mlflow/logged-models/").makes == MADE_LOGGED_MODEL
        assert route_of(f"{prefix}//2.0/mlflow/model-versions/set-tag").protected == {"hokusai_status", "hokusai_reason"}
        assert route_of(f"{prefix}/2.0/mlflow/runs/log-batch").protected == {"mlflow.user"}
    assert route_of("api/2.0/mlflow/runs/log-metric") is None  # the run loop's hot path streams as it came
    assert route_of("api/2.0/mlflow/logged-models/search") is None
    assert route_of("api/2.0/mlflow/registered-models/set-tag").protected == {"hokusai_owner"}  # its owner, the gateway's word
    assert route_of("api/2.0/mlflow/registered-models/update") is None
    assert len(ROUTES) == 22


def test_mlflow_s_graphql_has_no_mutation_that_writes_a_tag():
    """GraphQL takes no rule of the gateway's own while its mutations only read: this fails when an
    MLflow upgrade adds one, so that it is judged before it ships."""
    from mlflow.server.graphql.graphql_schema_extensions import schema

    mutations = set(schema.graphql_schema.mutation_type.fields)
    assert mutations == {"mlflowSearchDatasets", "mlflowSearchRuns", "testMutation"}


# -- a model counts only for the token of the people who made it -------------------------------------


def test_a_model_counts_only_for_the_tokens_of_its_makers(stack, monkeypatch):
    alice_name, bob_name, carol_name, team = _unique("alice"), _unique("bob"), _unique("carol"), _unique("team-bob")
    alice1, bob2 = f"ALICE1-{uuid.uuid4().hex[:6].upper()}", f"BOB2-{uuid.uuid4().hex[:6].upper()}"
    with stack.sessions.begin() as s:
        principals.create(s, team, TEAM)
    _, alice_key = _user(stack, alice_name)
    _user(stack, bob_name, team)
    _, carol_key = _user(stack, carol_name, team)  # bob's teammate
    with stack.sessions.begin() as s:
        tokens.create(s, alice1, "auroc", 0.82, owner=alice_name)
        tokens.create(s, bob2, "auroc", 0.82, owner=team)
    name = _unique("provenance")

    _through_gateway(stack, alice_key, monkeypatch)
    with mlflow.start_run() as run:
        mlflow.log_metric("auroc", 0.9)
        info = log_model()
    for_bob = mlflow.register_model(info.model_uri, name, tags={"hokusai_token_id": bob2}).version
    decided = stack.wait_decided(name, for_bob)
    assert decided.outcome == "rejected", decided.reason
    assert f"Run {run.info.run_id}" in decided.reason and f"'{alice_name}'" in decided.reason and bob2 in decided.reason
    assert stack.wait_tag(name, for_bob, "hokusai_reason") == decided.reason  # shown in MLflow, like every rejection
    assert stack.token(bob2)["status"] == "draft"

    for_alice = mlflow.register_model(info.model_uri, name, tags={"hokusai_token_id": alice1}).version
    assert stack.wait_decided(name, for_alice).outcome == "registered", stack.registration(name, for_alice).reason

    _through_gateway(stack, carol_key, monkeypatch)
    with mlflow.start_run():
        mlflow.log_metric("auroc", 0.91)
        carols = log_model()
    theirs = _unique("provenance-b")  # alice's registered model is not her team's to write (404)
    by_carol = mlflow.register_model(carols.model_uri, theirs, tags={"hokusai_token_id": bob2}).version
    assert stack.wait_decided(theirs, by_carol).outcome == "registered", stack.registration(theirs, by_carol).reason
