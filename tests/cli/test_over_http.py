"""The CLI over HTTP: with HOKUSAI_API_URL and HOKUSAI_API_KEY, ``token``, ``model`` and ``events``
commands talk to the API of the live stack and need no database URL (the default one here is an
empty directory: a command that touched it would fail); models go to MLflow through the gateway,
with the key as MLFLOW_TRACKING_TOKEN, as a data scientist's laptop does."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hokusai_mlflow_plugin.cli import main
from tests.model_cli import joblib_file


@pytest.fixture
def http_cli(pg_stack, tmp_path, monkeypatch):
    monkeypatch.delenv("HOKUSAI_DATABASE_URL", raising=False)
    monkeypatch.setenv("HOKUSAI_HOME", str(tmp_path / "empty-home"))
    key = pg_stack.api_key("register")
    monkeypatch.setenv("HOKUSAI_API_URL", pg_stack.receiver.url)
    monkeypatch.setenv("HOKUSAI_API_KEY", key)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", pg_stack.gateway_url + "/mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(main, [str(a) for a in args])
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        return result

    return run


def test_register_over_http_registered_then_rejected_then_unknown(http_cli, pg_stack, tmp_path, token_id):
    pg_stack.create_token(token_id, "auroc", 0.82, owner="test")
    model = joblib_file(tmp_path)
    registered = http_cli("model", "register", "--token-id", token_id, "--model-path", model, "--metric-value", "0.9", "--json")
    decision = json.loads(registered.stdout)
    assert decision["status"] == "registered" and decision["baseline_value"] == 0.82 and decision["metric_value"] == 0.9
    assert pg_stack.token(token_id)["status"] == "registered"
    assert "registering it through the Hokusai API" in registered.stderr

    shown = http_cli("token", "show", token_id)
    assert shown.output.startswith(token_id) and "registered" in shown.output and "auroc >= 0.82" in shown.output
    assert json.loads(http_cli("token", "show", token_id, "--json").output)["model_version"] == decision["model_version"]
    status = http_cli("model", "status", token_id)
    assert f"{decision['model_name']} v{decision['model_version']}  registered" in status.output
    listed = http_cli("model", "list", "--token", token_id)
    assert decision["model_name"] in listed.output and "auroc" in listed.output
    assert token_id in http_cli("token", "list", "--status", "registered").output

    second = token_id + "-B"
    pg_stack.create_token(second, "auroc", 0.99, owner="test")
    rejected = http_cli("model", "register", "--token-id", second, "--model-path", model, "--metric-value", "0.5", code=1)
    assert "Rejected" in rejected.stdout and "below the baseline 0.99" in rejected.stdout
    unknown = http_cli("model", "register", "--token-id", "NOPE-" + token_id, "--model-path", model, "--metric-value", "0.5", code=1)
    assert f"Unknown token 'NOPE-{token_id}'" in unknown.output


def test_errors_over_http_are_the_same_sentences(http_cli, monkeypatch):
    assert "Unknown status 'pending'" in http_cli("token", "list", "--status", "pending", code=1).output
    assert "Unknown token 'NOPE-X'" in http_cli("token", "show", "nope-x", code=1).output
    monkeypatch.setenv("HOKUSAI_API_KEY", "hk_00000000_" + "a" * 43)
    assert "is not known" in http_cli("token", "list", code=1).output
    monkeypatch.delenv("HOKUSAI_API_KEY")
    assert "HOKUSAI_API_KEY is not set" in http_cli("token", "list", code=1).output


def test_events_list_over_http_shows_the_events_of_the_keys_tokens(http_cli, pg_stack, token_id):
    from tests.events.helpers import add_events

    pg_stack.create_token(token_id, owner="test")
    event_id = add_events(pg_stack.db_url, token_id=token_id)[0]
    someone_elses = add_events(pg_stack.db_url, token_id=token_id + "-OTHER")[0]
    listed = [row["event_id"] for row in json.loads(http_cli("events", "list", "--json").output)]
    assert event_id in listed and someone_elses not in listed


def test_events_redeliver_over_http_is_delivered_by_the_servers_relay(pg_stack, tmp_path, monkeypatch):
    """A replica whose relay prints events (the console sink): the CLI asks the API to redeliver
    a dead event, and waits until the server's relay has delivered it."""
    import sqlalchemy as sa

    from hokusai_mlflow_plugin.config import load_settings
    from hokusai_mlflow_plugin.db.models import DEAD, Delivery
    from tests.events.helpers import add_events
    from tests.live_stack import ReceiverThread

    event_id = add_events(pg_stack.db_url)[0]
    with pg_stack.sessions.begin() as s:
        s.add(Delivery(event_id=event_id, outbox_id=0, sink="console", status=DEAD, attempts=9, last_error="HTTP 500"))
    settings = load_settings(environ={}).with_overrides(event_console=True)
    replica = ReceiverThread({**pg_stack.receiver_config, "HOKUSAI_SETTINGS": settings}).start()
    monkeypatch.delenv("HOKUSAI_DATABASE_URL", raising=False)
    monkeypatch.setenv("HOKUSAI_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("HOKUSAI_API_URL", replica.url)
    monkeypatch.setenv("HOKUSAI_API_KEY", pg_stack.api_key("admin"))
    try:
        result = CliRunner().invoke(main, ["events", "redeliver", event_id])
    finally:
        replica.release()
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "console: delivered"
    with pg_stack.sessions() as s:
        assert s.scalars(sa.select(Delivery.status).where(Delivery.event_id == event_id)).all() == ["delivered"]
    # the in-process replica's console sink printed the envelope again, with the same event id
    assert f'"event_id":"{event_id}"' in result.output


def test_token_list_unowned_and_show_owner_over_http(http_cli, pg_stack, token_id, monkeypatch):
    """Only an admin key reaches tokens with no owner; the API's JSON names the owner and the grants."""
    owner = f"u-{token_id.lower()}"
    pg_stack.create_token(token_id, owner=owner)
    pg_stack.create_token(token_id + "-U")
    monkeypatch.setenv("HOKUSAI_API_KEY", pg_stack.api_key("admin", name="ops"))
    unowned = [t["token_id"] for t in json.loads(http_cli("token", "list", "--unowned", "--json").output)]
    assert token_id + "-U" in unowned and token_id not in unowned
    shown = json.loads(http_cli("token", "show", token_id, "--json").output)
    assert (shown["owner"], shown["owner_kind"], shown.get("grants")) == (owner, "user", [])
    assert f"owner: user '{owner}'" in http_cli("token", "show", token_id).output


def test_deploy_undeploy_archive_history_over_http(pg_stack, tmp_path, monkeypatch, token_id, unique_name):
    """A deploy key of the token's owner: the server moves the alias and writes the history with
    the key's user; the CLI says when the same call changed nothing. (No gateway here: the model
    is logged to MLflow directly and registered through the API.)"""
    import mlflow

    from hokusai_mlflow_plugin.client import HokusaiClient
    from tests.mlflow_helpers import log_model

    monkeypatch.delenv("HOKUSAI_DATABASE_URL", raising=False)
    monkeypatch.setenv("HOKUSAI_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("HOKUSAI_API_URL", pg_stack.receiver.url)
    owner = f"u-{token_id.lower()}"
    pg_stack.create_token(token_id, "auroc", 0.8, owner=owner)
    with pg_stack.sessions.begin() as s:
        from hokusai_mlflow_plugin.auth import keys

        register_key = keys.create(s, "laptop", ("register",), user=owner).key
        monkeypatch.setenv("HOKUSAI_API_KEY", keys.create(s, "pipeline", ("deploy",), user=owner).key)
    with mlflow.start_run():
        mlflow.log_metric("auroc", 0.9)
        uri = f"models:/{log_model().model_id}"
    version = HokusaiClient(pg_stack.receiver.url, register_key).register(token_id, uri, model_name=unique_name)["model_version"]
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(main, [str(a) for a in args])
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        return result.output.strip()

    deploy = ("token", "deploy", token_id, "--model", unique_name, "--version", version, "--target", "canary")
    assert run(*deploy) == f"Token {token_id} is deployed: {unique_name} v{version} serves at canary."
    assert run(*deploy) == f"{token_id} is deployed to canary already: nothing changed."
    assert json.loads(run(*deploy, "--json"))["alias_set"] is True
    assert str(pg_stack.client.get_model_version_by_alias(unique_name, "canary").version) == version
    assert f"its registered version is '{unique_name}' version {version}" in run(
        "token", "deploy", token_id, "--model", unique_name, "--version", "99", "--target", "canary", code=1)
    assert run("token", "undeploy", token_id) == (
        f"Token {token_id} is registered again: {unique_name} v{version} no longer serves at canary.")
    assert run("token", "undeploy", token_id) == f"{token_id} is not deployed: nothing changed."
    assert "canary" not in pg_stack.client.get_registered_model(unique_name).aliases
    assert run("token", "archive", token_id, "--reason", "replaced") == (
        f"Token {token_id} is archived (it was registered): it takes no model from now on; make a new token for a new model.")
    assert run("token", "archive", token_id) == f"{token_id} is archived already: nothing changed."

    history = json.loads(run("token", "history", token_id, "--json"))
    assert [(h["to"], h["actor"]) for h in history] == [
        ("registered", "mlflow"), ("deployed", owner), ("registered", owner), ("archived", owner)]
    text = run("token", "history", token_id).splitlines()
    assert len(text) == 5 and "deployed -> registered" in text[3] and "canary" in text[3] and text[4].endswith("replaced")
    assert f"Unknown token 'NOPE-{token_id}'" in run("token", "history", f"nope-{token_id}", code=1)
    assert [len(pg_stack.events(token_id, t)) for t in ("token_deployed", "token_undeployed", "token_archived")] == [1, 1, 1]
