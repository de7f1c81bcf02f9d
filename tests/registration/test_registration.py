"""Registration end to end: a real MLflow server's webhook calls the real receiver, which decides
the version on a real token database (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from hokusai_mlflow_plugin.plugins import run_context
from tests.mlflow_helpers import train_and_register

TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys
    import mlflow
    from tests.mlflow_helpers import train_and_register
    run_id, version = train_and_register(sys.argv[1], {"auroc": float(sys.argv[2])})
    print(run_id, version)
    """
)


@pytest.fixture(autouse=True)
def _fresh_plugin():
    run_context.reset()


def test_happy_path(stack, unique_name):
    """Token XRAY (auroc, 0.82); a training script with HOKUSAI_TOKEN_ID=XRAY logs auroc 0.85."""
    token_id = "XRAY"
    stack.create_token(token_id, "auroc", 0.82)
    env = {**os.environ, "HOKUSAI_TOKEN_ID": token_id, "MLFLOW_TRACKING_URI": stack.mlflow.url}
    out = subprocess.run(
        [sys.executable, "-c", TRAIN_SCRIPT, unique_name, "0.85"],
        env=env, capture_output=True, text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert out.returncode == 0, out.stderr
    run_id, version = out.stdout.split()[-2:]

    reg = stack.wait_decided(unique_name, version)
    assert reg.outcome == "registered", reg.reason
    token = stack.token(token_id)
    assert token["status"] == "registered"
    assert (token["mlflow_run_id"], token["model_name"], token["model_version"]) == (run_id, unique_name, version)
    assert token["metric_value"] == pytest.approx(0.85)
    assert stack.wait_tag(unique_name, version, "hokusai_status") == "registered"

    ready = stack.events(token_id, "token_ready_for_deploy")
    assert len(ready) == 1
    assert ready[0].payload == {
        "token_id": token_id,
        "mlflow_run_id": run_id,
        "model_name": unique_name,
        "model_version": version,
        "metadata": {"metric_name": "auroc", "metric_value": pytest.approx(0.85), "baseline_value": 0.82},
    }
    assert len(stack.events(token_id, "model_registered")) == 1


def _register(stack, monkeypatch, name, token_id, metrics, **env):
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    run_context.reset()
    _, version = train_and_register(name, metrics)
    return version, stack.wait_decided(name, version)


def _assert_rejected(stack, reg, token_id, token_before, *reason_parts):
    assert reg.outcome == "rejected"
    for part in reason_parts:
        assert part in reg.reason, reg.reason
    if token_before is not None:
        assert stack.token(token_id) == token_before, "a rejection must leave the token unchanged"
    assert stack.events(token_id, "token_ready_for_deploy") == []
    assert stack.wait_tag(reg.model_name, reg.model_version, "hokusai_status") == "rejected"
    assert stack.wait_tag(reg.model_name, reg.model_version, "hokusai_reason") == reg.reason


def test_below_baseline(stack, monkeypatch, unique_name, token_id):
    stack.create_token(token_id, "auroc", 0.82)
    before = stack.token(token_id)
    _, reg = _register(stack, monkeypatch, unique_name, token_id, {"auroc": 0.80})
    _assert_rejected(stack, reg, token_id, before, "auroc 0.8 is below the baseline 0.82")


@pytest.mark.parametrize("value,outcome", [(0.61, "rejected"), (0.39, "registered")])
def test_rmse_lower_is_better(stack, monkeypatch, unique_name, token_id, value, outcome):
    stack.create_token(token_id, "rmse", 0.5)
    before = stack.token(token_id)
    _, reg = _register(stack, monkeypatch, unique_name, token_id, {"rmse": value})
    if outcome == "rejected":
        _assert_rejected(stack, reg, token_id, before, "rmse 0.61 is above the baseline 0.5")
    else:
        assert reg.outcome == "registered", reg.reason
        assert stack.token(token_id)["status"] == "registered"
        assert len(stack.events(token_id, "token_ready_for_deploy")) == 1


def test_missing_metric(stack, monkeypatch, unique_name, token_id):
    stack.create_token(token_id, "auroc", 0.82)
    before = stack.token(token_id)
    _, reg = _register(stack, monkeypatch, unique_name, token_id, {"accuracy": 0.9})
    _assert_rejected(stack, reg, token_id, before, "'auroc' was not logged")


def test_unknown_token(stack, monkeypatch, unique_name, token_id):
    _, reg = _register(stack, monkeypatch, unique_name, token_id, {"auroc": 0.9})
    _assert_rejected(stack, reg, token_id, None, f"Unknown token '{token_id}'")


def test_token_not_in_draft(stack, monkeypatch, unique_name, token_id):
    stack.create_token(token_id, "auroc", 0.82, status="deployed")
    before = stack.token(token_id)
    _, reg = _register(stack, monkeypatch, unique_name, token_id, {"auroc": 0.9})
    _assert_rejected(stack, reg, token_id, before, "status 'deployed', not 'draft'")


def test_second_model_for_a_registered_token(stack, monkeypatch, unique_name, token_id):
    stack.create_token(token_id, "auroc", 0.82)
    first, reg = _register(stack, monkeypatch, unique_name, token_id, {"auroc": 0.9})
    assert reg.outcome == "registered"
    after_first = stack.token(token_id)
    _, second = _register(stack, monkeypatch, unique_name + "-b", token_id, {"auroc": 0.95})
    assert second.outcome == "rejected"
    assert f"already registered to model '{unique_name}' version {first}" in second.reason
    assert stack.token(token_id) == after_first
    assert len(stack.events(token_id, "token_ready_for_deploy")) == 1


def test_baseline_tag_lower_than_the_tokens(stack, monkeypatch, unique_name, token_id):
    stack.create_token(token_id, "auroc", 0.82)
    before = stack.token(token_id)
    _, reg = _register(stack, monkeypatch, unique_name, token_id, {"auroc": 0.7}, HOKUSAI_BASELINE="0.5")
    _assert_rejected(stack, reg, token_id, before, "hokusai_baseline tag '0.5' differs", "0.82")


def test_token_set_later_by_hand(stack, monkeypatch, unique_name, token_id):
    """A version logged without HOKUSAI_TOKEN_ID is rejected; setting hokusai_token_id in the UI
    (model_version_tag.set) decides it again."""
    stack.create_token(token_id, "auroc", 0.82)
    _, version = train_and_register(unique_name, {"auroc": 0.9})
    reg = stack.wait_decided(unique_name, version)
    assert reg.outcome == "rejected" and "no hokusai_token_id tag" in reg.reason
    stack.client.set_model_version_tag(unique_name, version, "hokusai_token_id", token_id.lower())
    deadline = time.monotonic() + 30
    while stack.registration(unique_name, version).outcome != "registered":
        assert time.monotonic() < deadline, stack.registration(unique_name, version).reason
        time.sleep(0.1)
    assert stack.token(token_id)["model_version"] == version
    assert len(stack.events(token_id, "token_ready_for_deploy")) == 1


def test_fast_path_delivers_downstream_without_a_relay_worker(stack, monkeypatch, unique_name, token_id):
    """The receiver's own relay threads are kicked when the registration commits: the signed
    token_ready_for_deploy reaches a downstream webhook with no `hokusai events relay` running."""
    import json as _json
    import uuid

    from standardwebhooks import Webhook

    from hokusai_mlflow_plugin.config import load_settings
    from tests.harness import CaptureReceiver
    from tests.live_stack import signed_headers
    from webhook_app import create_app

    secret = "whsec_" + "ZmFzdC1wYXRoLXNlY3JldC1mb3ItdGVzdHMtMzJieXRlcw=="
    downstream = CaptureReceiver().start()
    settings = load_settings(environ={"HOKUSAI_EVENT_WEBHOOK_URL": downstream.url + "/hook", "HOKUSAI_EVENT_WEBHOOK_SECRET": secret})
    app = create_app({
        "HOKUSAI_WEBHOOK_SECRETS": ("receiver-secret-for-tests",),
        "HOKUSAI_DATABASE_URL": stack.db_url,
        "MLFLOW_TRACKING_URI": stack.mlflow.url,
        "HOKUSAI_SETTINGS": settings,
        "HOKUSAI_RELAY_POLL": 3600.0,  # the relay never polls in this test: only the kick can deliver
    })
    try:
        stack.create_token(token_id)
        stack.receiver.stop()  # only this app decides the version
        try:
            monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
            run_context.reset()
            run_id, version = train_and_register(unique_name, {"auroc": 0.9})
            body = stack.created_body(unique_name, version)
            response = app.test_client().post("/webhooks/mlflow", data=body, headers=signed_headers(body, str(uuid.uuid4())))
            assert response.json["status"] == "registered"
        finally:
            stack.receiver.start()

        def ours(r):
            return _json.loads(r.body)["payload"].get("token_id") == token_id

        got = downstream.wait_for(lambda r: ours(r) and _json.loads(r.body)["event_type"] == "token_ready_for_deploy", timeout=10)
        assert got, "token_ready_for_deploy did not reach the downstream webhook"
        envelope = Webhook(secret).verify(got[0].body, {k.lower(): v for k, v in got[0].headers.items()})
        assert envelope["payload"]["mlflow_run_id"] == run_id and envelope["payload"]["model_version"] == version
        assert envelope["source"] == "hokusai-ml-platform"
    finally:
        app.extensions["hokusai_relay"].stop()
        downstream.stop()
