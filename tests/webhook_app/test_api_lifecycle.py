"""The token's life after registration on the live stack (PostgreSQL, a real MLflow server, the
receiver's relay delivering to a real local consumer): register, deploy, the same deploy again
(no second event), another version refused, the alias moving in MLflow, undeploy, archive, a
model for an archived token rejected; each event reaching the consumer once, signed; who may."""

from __future__ import annotations

import json
import uuid

import mlflow
import pytest
from standardwebhooks import Webhook

from hokusai_mlflow_plugin.auth import keys, principals
from hokusai_mlflow_plugin.config import load_settings
from hokusai_mlflow_plugin.db.models import TEAM, USER
from hokusai_mlflow_plugin.registration import tokens
from tests.api_helpers import Api, assert_problem
from tests.events.helpers import SECRET
from tests.harness import CaptureReceiver
from tests.live_stack import ReceiverThread
from tests.mlflow_helpers import log_model


@pytest.fixture
def world(pg_stack):
    """A replica of the receiver whose relay delivers to a local consumer; alice (team vision) owns
    two tokens; keys: her register key, the team's deploy key, a stranger's deploy key."""
    capture = CaptureReceiver().start()
    settings = load_settings(environ={"HOKUSAI_EVENT_WEBHOOK_URL": capture.url + "/events",
                                      "HOKUSAI_EVENT_WEBHOOK_SECRET": SECRET})
    replica = ReceiverThread({**pg_stack.receiver_config, "HOKUSAI_SETTINGS": settings}).start()
    tag = uuid.uuid4().hex[:6]
    names = {who: f"{who}-{tag}" for who in ("alice", "deployer", "mallory", "vision")}
    ids = {t: f"LIFE{i}-{tag.upper()}" for i, t in enumerate(("one", "two"))}
    with pg_stack.sessions.begin() as s:
        for who in ("alice", "deployer", "mallory"):
            principals.create(s, names[who], USER)
        principals.create(s, names["vision"], TEAM)
        principals.add_member(s, names["vision"], names["alice"])
        principals.add_member(s, names["vision"], names["deployer"])
        for token_id in ids.values():
            tokens.create(s, token_id, "auroc", 0.8, owner=names["vision"])
        made = {
            "alice": keys.create(s, "alice", ("read", "register"), user=names["alice"]).key,
            "deployer": keys.create(s, "ci-deploy", ("deploy",), user=names["deployer"]).key,
            "mallory": keys.create(s, "mallory", ("deploy",), user=names["mallory"]).key,
        }
    apis = {who: Api(replica.url, key) for who, key in made.items()}
    yield apis, ids, names, capture
    replica.app.extensions["hokusai_relay"].stop()
    replica.release()
    capture.stop()


def logged(auroc: float) -> str:
    with mlflow.start_run():
        mlflow.log_metric("auroc", auroc)
        return f"models:/{log_model().model_id}"


def delete(api: Api, path: str, **kwargs):
    return api.session.delete(api.base + path, timeout=60, **kwargs)


def events_of(capture: CaptureReceiver, token_id: str, event_type: str) -> list[dict]:
    """The events of ``token_id`` and ``event_type`` the consumer received, each verified as a
    Standard Webhooks consumer verifies it."""
    verifier = Webhook(SECRET)
    found = []
    for request in list(capture.requests):
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = json.loads(request.body)
        if body["event_type"] == event_type and body["payload"]["token_id"] == token_id:
            verifier.verify(request.body, headers)
            found.append(body)
    return found


def test_register_deploy_undeploy_archive_with_events_aliases_and_history(pg_stack, world, unique_name, monkeypatch):
    api, ids, names, capture = world
    one, two = ids["one"], ids["two"]
    decided = api["alice"].post("/models/register", json={"token_id": one, "model_uri": logged(0.9), "model_name": unique_name})
    assert decided.json()["status"] == "registered", decided.text
    version = decided.json()["model_version"]

    # a register key cannot deploy; a stranger's deploy key cannot see the token
    body = {"model_name": unique_name, "version": version, "target": "production"}
    assert_problem(api["alice"].post(f"/tokens/{one}/deployments", json=body), 403, "'deploy' scope")
    assert_problem(api["mallory"].post(f"/tokens/{one}/deployments", json=body), 404, f"Unknown token '{one}'")

    first = api["deployer"].post(f"/tokens/{one}/deployments", json=body)
    assert first.status_code == 201, first.text
    assert (first.json()["status"], first.json()["deployment_target"], first.json()["alias_set"]) == ("deployed", "production", True)
    again = api["deployer"].post(f"/tokens/{one}/deployments", json=body)
    assert again.status_code == 200 and again.json()["status"] == "deployed"
    assert str(pg_stack.client.get_model_version_by_alias(unique_name, "production").version) == version
    other = api["deployer"].post(f"/tokens/{one}/deployments", json={**body, "version": "99"})
    assert_problem(other, 409, f"its registered version is '{unique_name}' version {version}")

    # a newer version of the same model, another token's, deployed to the same target: the alias moves
    newer = api["alice"].post("/models/register", json={"token_id": two, "model_uri": logged(0.95), "model_name": unique_name})
    newer_version = newer.json()["model_version"]
    assert api["deployer"].post(f"/tokens/{two}/deployments",
                                json={**body, "version": newer_version}).status_code == 201
    assert str(pg_stack.client.get_model_version_by_alias(unique_name, "production").version) == newer_version

    # undeploying the first token leaves the alias on the newer version, where it moved
    undeployed = delete(api["deployer"], f"/tokens/{one}/deployments")
    assert undeployed.status_code == 200 and undeployed.json()["status"] == "registered", undeployed.text
    assert str(pg_stack.client.get_model_version_by_alias(unique_name, "production").version) == newer_version

    archived = api["alice"].post(f"/tokens/{one}/archive", json={"reason": "superseded"})
    assert archived.status_code == 200 and archived.json()["status"] == "archived", archived.text
    assert_problem(api["deployer"].post(f"/tokens/{one}/deployments", json=body), 409, "archived")

    # a version made for the archived token is rejected, with the reason in MLflow
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", one)  # as a data scientist trains for it
    with mlflow.start_run():
        mlflow.log_metric("auroc", 0.99)
        info = log_model(registered_model_name=unique_name)
    reason = pg_stack.wait_tag(unique_name, info.registered_model_version, "hokusai_reason")
    assert "archived" in reason and "never un-archived" in reason

    history = api["alice"].get(f"/tokens/{one}/history").json()["items"]
    assert [(h["from"], h["to"]) for h in history] == [
        ("draft", "registered"), ("registered", "deployed"), ("deployed", "registered"), ("registered", "archived")]
    assert [h["actor"] for h in history[1:]] == [names["deployer"], names["deployer"], names["alice"]]
    assert history[3]["reason"] == "superseded"

    for event_type in ("token_deployed", "token_undeployed", "token_archived"):  # each once, signed
        assert capture.wait_for(lambda r, t=event_type: f'"{t}"' in r.body.decode() and one in r.body.decode(), timeout=30)
    assert len(events_of(capture, one, "token_deployed")) == 1
    assert len(events_of(capture, one, "token_undeployed")) == 1
    assert len(events_of(capture, one, "token_archived")) == 1
    deployed = events_of(capture, one, "token_deployed")[0]
    assert deployed["payload"]["model_version"] == version and deployed["payload"]["metadata"]["target"] == "production"


def test_a_target_mlflow_cannot_alias_is_refused_as_the_document_says(world):
    """'latest' and v<number> name versions in MLflow, so they cannot be a deployment target (its
    alias): the served OpenAPI document's pattern says so, and the API refuses them by it (422,
    the field named) before looking at the token; names around them are targets."""
    import re

    api, ids, _, _ = world
    document = api["deployer"].get("/openapi.json").json()
    pattern = document["components"]["schemas"]["DeploymentBody"]["properties"]["target"]["pattern"]
    for refused in ("latest", "LATEST", "Latest", "v9", "V9", "v000000000"):
        assert not re.search(pattern, refused), refused
        answer = api["deployer"].post(f"/tokens/{ids['one']}/deployments",
                                      json={"model_name": "m", "version": "1", "target": refused})
        body = assert_problem(answer, 422, "target")
        assert [e["field"] for e in body["errors"]] == ["target"], body
    for allowed in ("production", "latest-eu", "v9a", "v", "eu_v2"):
        assert re.search(pattern, allowed), allowed
