"""``HokusaiClient`` against the live stack's API: typed errors, pages followed to the end, and a
register that comes out registered, one rejected and one for an unknown token; and its retries of
503 as Retry-After says (on a loopback server that answers 503 first)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mlflow
import pytest

from hokusai_mlflow_plugin.client import (
    ApiUnavailable,
    EventNotFound,
    Forbidden,
    HokusaiClient,
    TokenConflict,
    TokenNotDraft,
    TokenNotFound,
    Unauthorized,
    ValidationFailed,
)
from tests.mlflow_helpers import log_model


def logged(auroc: float) -> str:
    with mlflow.start_run():
        mlflow.log_metric("auroc", auroc)
        return f"models:/{log_model().model_id}"


@pytest.fixture
def hokusai(pg_stack):
    client = HokusaiClient(pg_stack.receiver.url, pg_stack.api_key("admin"))
    yield client
    client.close()


def test_register_registered_rejected_and_unknown(hokusai, token_id):
    hokusai.create_token(token_id, "auroc", 0.82)
    rejected = hokusai.register(token_id, logged(0.5), model_name=f"m-{token_id.lower()}")
    assert rejected["status"] == "rejected" and "below the baseline" in rejected["reason"]
    registered = hokusai.register(token_id, logged(0.9), metric="AUROC", baseline=0.82)  # as a person types it
    assert registered["status"] == "registered" and registered["metric_value"] == 0.9
    assert hokusai.token(token_id)["status"] == "registered"
    assert [r["outcome"] for r in hokusai.token(token_id)["registrations"]] == ["registered", "rejected"]
    with pytest.raises(TokenNotDraft, match="registered already"):
        hokusai.register(token_id, logged(0.95))
    with pytest.raises(TokenNotFound, match="Unknown token 'NOPE-"):
        hokusai.register("nope-" + uuid.uuid4().hex[:6], logged(0.9))
    with pytest.raises(ValidationFailed) as e:
        hokusai.register(token_id, "file:///tmp/model")
    assert e.value.errors[0]["field"] == "model_uri"


def test_a_tokens_life_register_deploy_history_archive(pg_stack, token_id, unique_name):
    """Alice owns the token and registers with her key; her teammate's pipeline deploys with a
    ``deploy`` key; a stranger's deploy key does not find it."""
    from hokusai_mlflow_plugin.auth import keys, principals
    from hokusai_mlflow_plugin.db.models import TEAM, USER

    x = token_id.lower()
    with pg_stack.sessions.begin() as s:
        for who in ("alice", "ci", "mallory"):
            principals.create(s, f"{who}-{x}", USER)
        principals.create(s, f"vision-{x}", TEAM)
        principals.add_member(s, f"vision-{x}", f"alice-{x}")
        principals.add_member(s, f"vision-{x}", f"ci-{x}")
        made = {who: keys.create(s, who, scopes, user=f"{who}-{x}").key
                for who, scopes in (("alice", ("register",)), ("ci", ("deploy",)), ("mallory", ("deploy",)))}
    alice, ci, mallory = (HokusaiClient(pg_stack.receiver.url, made[who]) for who in ("alice", "ci", "mallory"))
    pg_stack.create_token(token_id, "auroc", 0.8, owner=f"vision-{x}")

    version = alice.register(token_id, logged(0.9), model_name=unique_name)["model_version"]
    with pytest.raises(Forbidden, match="'deploy'"):
        alice.deploy(token_id, unique_name, version, "production")
    with pytest.raises(TokenNotFound, match=f"Unknown token '{token_id}'"):
        mallory.deploy(token_id, unique_name, version, "production")
    deployed = ci.deploy(token_id, unique_name, int(version), "production")
    assert (deployed["status"], deployed["deployment_target"], deployed["alias_set"]) == ("deployed", "production", True)
    assert ci.deploy(token_id, unique_name, version, "production")["status"] == "deployed"  # the same call: no-op
    with pytest.raises(TokenConflict, match=f"its registered version is '{unique_name}' version {version}") as e:
        ci.deploy(token_id, unique_name, "99", "production")
    assert not isinstance(e.value, TokenNotDraft)
    with pytest.raises(ValidationFailed):
        ci.deploy(token_id, unique_name, version, "no spaces")

    assert ci.undeploy(token_id)["status"] == "registered"
    archived = alice.archive(token_id, reason="superseded")
    assert (archived["status"], archived["deployment_target"]) == ("archived", None)
    assert alice.archive(token_id)["status"] == "archived"
    with pytest.raises(TokenConflict, match="never deployed nor un-archived"):
        ci.deploy(token_id, unique_name, version, "production")

    history = alice.history(token_id)
    assert [(h["from"], h["to"], h["actor"]) for h in history] == [
        ("draft", "registered", "mlflow"), ("registered", "deployed", f"ci-{x}"), ("deployed", "registered", f"ci-{x}"),
        ("registered", "archived", f"alice-{x}")]
    assert (history[1]["target"], history[1]["model_version"], history[3]["reason"]) == ("production", version, "superseded")
    with pytest.raises(TokenNotFound):
        mallory.history(token_id)
    for client in (alice, ci, mallory):
        client.close()


def test_lists_follow_every_page_and_errors_are_typed(hokusai, pg_stack):
    prefix = "CL" + uuid.uuid4().hex[:6].upper()
    for i in range(120):  # more than one page of 100
        hokusai.create_token(f"{prefix}-{i:03d}")
    assert [t["token_id"] for t in hokusai.tokens(q=prefix)] == [f"{prefix}-{i:03d}" for i in range(120)]
    assert list(hokusai.tokens(q=prefix, status="registered")) == []
    with pytest.raises(EventNotFound):
        hokusai.event(str(uuid.uuid4()))
    with pytest.raises(Unauthorized, match="is not known"):
        HokusaiClient(pg_stack.receiver.url, "hk_00000000_" + "a" * 43).tokens().__next__()
    reader = HokusaiClient(pg_stack.receiver.url, pg_stack.api_key("read"))
    with pytest.raises(Forbidden, match="'admin'"):
        reader.reconcile()
    assert "hk_" not in repr(reader)


class FlakyApi(BaseHTTPRequestHandler):
    """Answers 503 with Retry-After twice, then a page."""

    calls: list = []

    def do_GET(self):
        FlakyApi.calls.append(time.monotonic())
        if len(FlakyApi.calls) <= 2:
            body = json.dumps({"type": "about:blank", "title": "Service Unavailable", "status": 503, "detail": "db down"})
            self.send_response(503)
            self.send_header("Retry-After", "1")
        else:
            body = json.dumps({"items": [{"token_id": "A"}], "next": None})
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def do_POST(self):
        FlakyApi.calls.append(time.monotonic())
        self.send_response(503)
        self.send_header("Retry-After", "1")
        self.send_header("Content-Type", "application/problem+json")
        self.end_headers()
        self.wfile.write(json.dumps({"status": 503, "title": "Service Unavailable", "detail": "MLflow is unreachable"}).encode())

    def log_message(self, *args):
        pass


def test_reads_are_retried_after_retry_after_and_a_register_is_not():
    FlakyApi.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = HokusaiClient(f"http://127.0.0.1:{server.server_port}", "hk_00000000_" + "a" * 43)
        assert [t["token_id"] for t in client.tokens()] == ["A"]
        assert len(FlakyApi.calls) == 3 and FlakyApi.calls[1] - FlakyApi.calls[0] >= 0.9  # it waited as told
        FlakyApi.calls = []
        with pytest.raises(ApiUnavailable, match="MLflow is unreachable"):
            client.register("X", "models:/m-" + "0" * 32)
        assert len(FlakyApi.calls) == 1  # a retry could have made a second model version
    finally:
        server.shutdown()
        server.server_close()


def test_an_api_that_is_not_there_says_to_check_the_url():
    with pytest.raises(ApiUnavailable, match="check HOKUSAI_API_URL"):
        HokusaiClient("http://127.0.0.1:9", "hk_00000000_" + "a" * 43, retries=0).token("X")
