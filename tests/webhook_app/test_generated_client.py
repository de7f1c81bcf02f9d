"""A client generated from the live OpenAPI document by openapi-python-client (a tool nobody here
wrote, run as its CLI on the document the receiver serves) reads as a person would write it
(``api.tokens.list_tokens``, ``api.models.register_model``), and works: it lists tokens page by
page following ``next``, registers a logged model on a real MLflow server, and gets a typed
``Problem`` for a 404 and a 422 (the document's problem+json answers)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.webhook_app.test_api_register import logged

GENERATOR = Path(sys.executable).parent / "openapi-python-client"
PACKAGE = "hokusai_generated_client"


@pytest.fixture(scope="module")
def generated(stack_postgres, tmp_path_factory):
    """The client package generated from the document ``GET /api/v1/openapi.json`` serves now."""
    where = tmp_path_factory.mktemp("generated")
    document = where / "openapi.json"
    answer = requests.get(f"{stack_postgres.receiver.url}/api/v1/openapi.json", timeout=30)
    answer.raise_for_status()
    document.write_text(json.dumps(answer.json()))
    config = where / "config.json"
    config.write_text(json.dumps({"post_hooks": []}))  # no formatter run on the output
    done = subprocess.run([str(GENERATOR), "generate", "--path", str(document), "--output-path", str(where / PACKAGE),
                           "--meta", "none", "--config", str(config)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _client(generated, stack, key: str):
    return generated.AuthenticatedClient(base_url=stack.receiver.url, token=key, raise_on_unexpected_status=True)


def test_it_reads_by_resource_and_operation(generated):
    api = importlib.import_module(f"{PACKAGE}.api")
    resources = {p.name for p in Path(api.__file__).parent.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert {"tokens", "models", "events", "registrations", "keys", "users", "teams", "me", "reconcile"} <= resources
    assert "default" not in resources
    for module in ("tokens.list_tokens", "tokens.show_token", "tokens.create_token", "tokens.deploy_token",
                   "tokens.token_history", "models.register_model", "events.redeliver_event", "events.list_events"):
        assert hasattr(importlib.import_module(f"{PACKAGE}.api.{module}"), "sync_detailed"), module


def test_it_lists_tokens_page_by_page(generated, pg_stack, token_id):
    from hokusai_generated_client.api.tokens import list_tokens
    from hokusai_generated_client.models import TokenPage

    mine = [f"{token_id}-{i}" for i in range(5)]
    for made in mine:
        pg_stack.create_token(made, owner="test")
    client = _client(generated, pg_stack, pg_stack.api_key("read"))
    seen, cursor, pages = [], None, 0
    while True:
        page = list_tokens.sync(client=client, q=token_id, limit=2, **({"cursor": cursor} if cursor else {}))
        assert isinstance(page, TokenPage), page
        pages += 1
        seen += [t.token_id for t in page.items]
        if not page.next_:  # the generator renames the field, "next" being a Python builtin
            break
        cursor = parse_qs(urlsplit(page.next_).query)["cursor"][0]  # the next page's URL, as the Link header has it
    assert pages == 3 and sorted(seen) == sorted(mine)


def test_it_registers_a_model_and_gets_typed_problems(generated, pg_stack, token_id, unique_name):
    from hokusai_generated_client.api.models import register_model
    from hokusai_generated_client.api.tokens import show_token
    from hokusai_generated_client.models import Decision, DecisionStatus, Problem, RegisterBody, TokenDetail

    pg_stack.create_token(token_id, "auroc", 0.82, owner="test")
    client = _client(generated, pg_stack, pg_stack.api_key("read", "register"))
    uri, _, run_id = logged(0.91)

    decision = register_model.sync(client=client, body=RegisterBody(token_id=token_id, model_uri=uri, model_name=unique_name))
    assert isinstance(decision, Decision), decision
    assert (decision.status, decision.model_name, decision.model_version, decision.run_id, decision.metric_value) == (
        DecisionStatus.REGISTERED, unique_name, "1", run_id, 0.91)
    token = show_token.sync(client=client, token_id=token_id)
    assert isinstance(token, TokenDetail) and token.status == "registered"

    missing = show_token.sync_detailed(client=client, token_id="NO-SUCH-TOKEN-21")
    assert missing.status_code == 404 and isinstance(missing.parsed, Problem), missing
    assert missing.parsed.status == 404 and "NO-SUCH-TOKEN-21" in missing.parsed.detail
    assert missing.headers["Content-Type"].startswith("application/problem+json")

    wrong = show_token.sync_detailed(client=client, token_id="not a token id")  # a space: not of the pattern
    assert wrong.status_code == 422 and isinstance(wrong.parsed, Problem), wrong
    assert wrong.parsed.status == 422 and "token_id" in [e["field"] for e in wrong.parsed.errors]

    other = f"{token_id}-2"
    pg_stack.create_token(other, "auroc", 0.82, owner="test")
    nothing = register_model.sync_detailed(client=client, body=RegisterBody(token_id=other, model_uri="models:/m-" + "0" * 32))
    assert nothing.status_code == 404 and isinstance(nothing.parsed, Problem), nothing  # no such LoggedModel in MLflow
    assert "MLflow has no LoggedModel" in nothing.parsed.detail and pg_stack.token(other)["status"] == "draft"
