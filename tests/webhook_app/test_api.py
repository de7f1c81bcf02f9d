"""The JSON API on the live stack (real PostgreSQL, real MLflow server, the receiver over HTTP):
keys and scopes, tokens, registrations, events, reconcile, problem details, pagination, the
OpenAPI document, and keys that never reach a log."""

from __future__ import annotations

import logging
import uuid

import pytest
import requests
import sqlalchemy as sa
from openapi_spec_validator import validate

from hokusai_mlflow_plugin.db.models import DEAD, ApiKey, Delivery, utcnow
from tests.api_helpers import Api, assert_problem
from tests.events.helpers import add_events


@pytest.fixture
def api(pg_stack) -> Api:
    return Api(pg_stack.receiver.url)


# -- keys and scopes -------------------------------------------------------------------------------


def test_no_bad_revoked_or_expired_key_gets_401_and_nothing_else(pg_stack, api):
    from hokusai_mlflow_plugin.auth import keys

    assert_problem(api.get("/tokens"), 401, "An API key is required")
    assert_problem(api.with_key("hk_nope").get("/tokens"), 401, "malformed")
    assert_problem(api.session.get(api.base + "/tokens", headers={"Authorization": "Basic dXNlcjpwdw=="}, timeout=30), 401, "Bearer")
    good = pg_stack.api_key("read")
    assert_problem(api.with_key(good[:-2] + "zz").get("/tokens"), 401, "is not known")
    assert api.with_key(good).get("/tokens").status_code == 200
    with pg_stack.sessions.begin() as s:
        keys.revoke(s, good[3:11])
    assert_problem(api.with_key(good).get("/tokens"), 401, "revoked")  # its very next request
    with pg_stack.sessions.begin() as s:
        expired = keys.create(s, "short", ("read",))
        s.execute(ApiKey.__table__.update().where(ApiKey.key_id == expired.record["key_id"]).values(expires_at=utcnow()))
    assert_problem(api.with_key(expired.key).get("/tokens"), 401, "expired")


@pytest.mark.parametrize("method, path, body, scope", [
    ("post", "/tokens", {"token_id": "SCOPED"}, "admin"),
    ("post", "/models/register", {"token_id": "X", "model_uri": "models:/m-" + "0" * 32}, "register"),
    ("post", "/events/00000000-0000-0000-0000-000000000000/redeliver", None, "admin"),
    ("post", "/events/redeliver", None, "admin"),
    ("post", "/reconcile", None, "admin"),
])
def test_a_read_key_can_read_and_is_refused_the_rest_with_the_scope_named(pg_stack, api, method, path, body, scope):
    reader = api.with_key(pg_stack.api_key("read"))
    for listing in ("/tokens", "/registrations", "/events"):
        assert reader.get(listing).status_code == 200
    assert_problem(getattr(reader, method)(path, json=body), 403, f"lacks the '{scope}' scope")


def test_register_scope_registers_but_does_not_administer(pg_stack, api):
    registrar = api.with_key(pg_stack.api_key("register"))
    assert registrar.get("/tokens").status_code == 200  # register includes read
    assert_problem(registrar.post("/tokens", json={"token_id": "NOPE"}), 403, "'admin'")
    assert_problem(registrar.post("/models/register", json={"token_id": "NOPE-" + uuid.uuid4().hex[:6], "model_uri": "models:/m-" + "0" * 32}), 404)


# -- tokens ----------------------------------------------------------------------------------------


def test_tokens_create_show_list_and_page_by_cursor(pg_stack, api):
    admin = api.with_key(pg_stack.api_key("admin"))
    prefix = "PG" + uuid.uuid4().hex[:6].upper()
    for i in range(5):
        created = admin.post("/tokens", json={"token_id": f"{prefix.lower()}-{i}", "metric": "auroc", "baseline": 0.8})
        assert created.status_code == 201 and created.json()["token_id"] == f"{prefix}-{i}"
    assert_problem(admin.post("/tokens", json={"token_id": f"{prefix}-0"}), 409, "exists already")
    body = assert_problem(admin.post("/tokens", json={"token_id": "X", "baseline": "high", "extra": 1}), 422)
    assert {e["field"] for e in body["errors"]} == {"baseline", "extra"}
    assert_problem(admin.post("/tokens", json={"token_id": "Y", "metric": "auroc", "baseline": 3}), 422, "outside its valid range")

    seen, url = [], f"/tokens?q={prefix}&limit=2"
    while url:
        page = admin.get(url).json()
        assert len(page["items"]) <= 2
        seen += [t["token_id"] for t in page["items"]]
        url = page["next"] and page["next"].removeprefix("/api/v1")
    assert seen == [f"{prefix}-{i}" for i in range(5)]
    assert admin.get(f"/tokens?q={prefix}&status=registered").json() == {"items": [], "next": None}
    assert_problem(admin.get("/tokens?status=nonsense"), 422)
    assert_problem(admin.get("/tokens?cursor=garbage"), 422, "cursor")
    shown = admin.get(f"/tokens/{prefix}-3").json()
    assert shown["status"] == "draft" and shown["registrations"] == []
    assert_problem(admin.get("/tokens/NOPE-NOPE"), 404, "Unknown token")


# -- events, redelivery, reconcile ----------------------------------------------------------------


def test_events_list_detail_and_redelivery(pg_stack, api):
    admin = api.with_key(pg_stack.api_key("admin"))
    event_id = add_events(pg_stack.db_url)[0]
    with pg_stack.sessions.begin() as s:
        s.add(Delivery(event_id=event_id, outbox_id=0, sink="webhook:http://127.0.0.1:9/gone", status=DEAD, attempts=3,
                       last_error="HTTP 500; retry horizon exhausted"))
    page = admin.get("/events?status=dead&limit=100").json()
    [event] = [e for e in page["items"] if e["event_id"] == event_id]
    assert event["deliveries"][0]["status"] == "dead" and event["payload"]["token_id"] == "T0"
    assert event_id in [e["event_id"] for e in admin.get("/events?token=T0&type=token_ready_for_deploy").json()["items"]]
    detail = admin.get(f"/events/{event_id}").json()
    assert detail["deliveries"][0]["attempts"] == 3 and detail["deliveries"][0]["history"] == []
    assert_problem(admin.get(f"/events/{uuid.uuid4()}"), 404, "No event")

    again = admin.post(f"/events/{event_id}/redeliver")
    assert again.status_code == 202 and again.json()["deliveries"][0]["status"] == "pending"
    with pg_stack.sessions.begin() as s:
        s.execute(sa.update(Delivery).where(Delivery.event_id == event_id).values(status=DEAD))
    bulk = admin.post("/events/redeliver?status=dead")
    assert bulk.status_code == 202 and bulk.json()["redelivered"] >= 1
    assert admin.get(f"/events/{event_id}").json()["deliveries"][0]["status"] == "pending"
    refused = assert_problem(admin.post("/events/redeliver?since=yesterday"), 422, "since")
    assert "RFC 3339 date-time" in refused["errors"][0]["message"]  # the document states it: format date-time
    for loose in ("0.5", "2026-12-01", "2026-12-01T00:00:00"):  # pydantic alone would take each
        assert_problem(admin.post(f"/events/redeliver?since={loose}"), 422, "since")
    assert admin.post("/events/redeliver?since=2026-12-01T00:00:00%2B02:00").status_code == 202
    assert_problem(admin.get("/events?status=lost"), 422)


def test_reconcile_runs_one_sweep(pg_stack, api):
    answer = api.with_key(pg_stack.api_key("admin")).post("/reconcile")
    assert answer.status_code == 200 and isinstance(answer.json()["decided"], list)


# -- the document, and what never happens ----------------------------------------------------------


def test_the_openapi_document_is_valid_and_describes_every_endpoint(api):
    document = api.get("/openapi.json").json()  # public: no key
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "An API key, hk_<key id>_<secret>.",
    }
    paths = document["paths"]
    for path, method in [("/api/v1/tokens", "get"), ("/api/v1/tokens", "post"), ("/api/v1/tokens/{token_id}", "get"),
                         ("/api/v1/models/register", "post"), ("/api/v1/registrations", "get"), ("/api/v1/events", "get"),
                         ("/api/v1/events/{event_id}", "get"), ("/api/v1/events/{event_id}/redeliver", "post"),
                         ("/api/v1/events/redeliver", "post"), ("/api/v1/reconcile", "post")]:
        assert method in paths[path], (path, method)
        assert paths[path][method]["security"] == [{"bearer": []}]
    register = paths["/api/v1/models/register"]["post"]
    assert {"200", "401", "403", "404", "409", "422", "503"} <= set(register["responses"])


def test_keys_never_reach_a_log_or_an_answer(pg_stack, api, caplog):
    key = pg_stack.api_key("admin")
    secret = key[12:]
    with caplog.at_level(logging.DEBUG):
        answers = [
            api.with_key(key).get("/tokens"), api.with_key(key[:-1] + "x").get("/tokens"),
            api.with_key(key).post("/tokens", json={"metric": "auroc"}), api.with_key(key).get(f"/tokens/{uuid.uuid4().hex}"),
            requests.get(pg_stack.receiver.url + "/api/v1/tokens", headers={"Authorization": f"Bearer {key}x"}, timeout=30),
            requests.get(pg_stack.receiver.url + "/api/v1/tokens", headers={"Authorization": key}, timeout=30),
        ]
    assert [a.status_code for a in answers] == [200, 401, 422, 404, 401, 401]
    assert secret not in caplog.text and key not in caplog.text
    assert not [a for a in answers if secret in a.text]
