"""The sinks alone: Standard Webhooks signing, Retry-After, the proxy of the environment, the
console, and the settings that configure them."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner
from standardwebhooks import Webhook

from hokusai_mlflow_plugin.cli import main as cli
from hokusai_mlflow_plugin.config import ConfigError, load_settings
from hokusai_mlflow_plugin.db.session import session_factory
from hokusai_mlflow_plugin.events.relay import Relay, from_settings
from hokusai_mlflow_plugin.events.sinks import ConsoleSink, WebhookSink, parse_retry_after
from hokusai_mlflow_plugin.events.sinks import from_settings as sinks_from_settings
from tests.events.helpers import SECRET, add_events


def test_retry_after_forms():
    assert parse_retry_after("7") == 7
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = datetime.fromtimestamp(time.time() + 60, tz=timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 50 < parse_retry_after(later) <= 60


def test_webhook_headers_verify_with_the_standardwebhooks_library():
    sink = WebhookSink("http://127.0.0.1:9/hook?token=abc", SECRET)
    body = json.dumps({"event_id": "e1", "payload": {}})
    headers = sink.headers("e1", body)
    assert Webhook(SECRET).verify(body, headers) == {"event_id": "e1", "payload": {}}
    assert headers["webhook-id"] == "e1"
    assert sink.name == "webhook:http://127.0.0.1:9/hook"  # no query string, no credentials


def test_webhook_url_without_a_secret_is_a_configuration_error():
    settings = load_settings(environ={"HOKUSAI_EVENT_WEBHOOK_URL": "http://x/hook"})
    with pytest.raises(ConfigError, match="HOKUSAI_EVENT_WEBHOOK_SECRET"):
        from_settings(settings, session_factory("sqlite://"))


def test_console_sink_prints_the_envelope(db_url, capsys):
    event_id = add_events(db_url)[0]
    Relay(session_factory(db_url), [ConsoleSink()]).run_once()
    printed = json.loads(capsys.readouterr().out.strip())
    assert printed["event_id"] == event_id and printed["source"] == "hokusai-ml-platform"
    assert printed["event_type"] == "token_ready_for_deploy" and printed["payload"]["token_id"] == "T0"


def test_webhook_sink_uses_the_proxy_of_the_environment(monkeypatch, sink_server):
    """The environment is read once when the sink is made (not on every POST), and still counts."""
    proxy = sink_server()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    sink = WebhookSink("http://consumer.invalid/hook", SECRET)
    monkeypatch.delenv("HTTP_PROXY")
    assert sink.send("e1", "token_ready_for_deploy", "{}").ok
    assert [r.path for r in proxy.requests] == ["http://consumer.invalid/hook"]




def test_a_malformed_sink_setting_is_a_configuration_error_that_keeps_the_secret(tmp_path):
    bad_secret = "whsec_not-base64!!"
    settings = load_settings(environ={"HOKUSAI_EVENT_WEBHOOK_URL": "http://127.0.0.1:9/hook", "HOKUSAI_EVENT_WEBHOOK_SECRET": bad_secret})
    with pytest.raises(ConfigError, match="is not a Standard Webhooks secret") as e:
        sinks_from_settings(settings)
    assert bad_secret not in str(e.value)
    with pytest.raises(ConfigError, match="HOKUSAI_REDIS_URL is not a Redis URL"):
        sinks_from_settings(load_settings(environ={"HOKUSAI_REDIS_URL": "http://127.0.0.1:6379"}))


def test_the_relay_command_says_which_sink_setting_is_wrong(tmp_path, monkeypatch):
    monkeypatch.setenv("HOKUSAI_REDIS_URL", "http://127.0.0.1:6379")
    result = CliRunner().invoke(cli, ["--database-url", f"sqlite:///{tmp_path / 't.db'}", "events", "relay", "--once"])
    assert result.exit_code == 1
    assert "HOKUSAI_REDIS_URL is not a Redis URL" in result.output and "Traceback" not in result.output
