"""The receiver's HTTP contract: signatures, malformed input, replays, races, a database that is
down, a lost webhook, and arbitrary input that must never give a 500."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid

import pytest
import requests
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hokusai_mlflow_plugin.plugins import run_context
from hokusai_mlflow_plugin.cli import main as cli
from hokusai_mlflow_plugin.db.session import get_engine
from tests.mlflow_helpers import CountingClient, log_model, train_and_register
from tests.live_stack import RECEIVER_SECRET, created_body, signed_headers
from webhook_app import create_app
from webhook_app.signature import WebhookConfigurationError

import mlflow


# -- the HTTP contract, on the Flask test client -------------------------------------------------


@pytest.fixture
def app(tmp_path):
    from hokusai_mlflow_plugin.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    upgrade(url)
    return create_app(
        {
            "HOKUSAI_WEBHOOK_SECRETS": ("old-secret", RECEIVER_SECRET),
            "HOKUSAI_DATABASE_URL": url,
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",  # never reached by these tests
        }
    )


@pytest.fixture
def client(app):
    return app.test_client()


def test_refuses_to_start_without_a_secret(monkeypatch):
    monkeypatch.delenv("HOKUSAI_WEBHOOK_SECRET", raising=False)
    with pytest.raises(WebhookConfigurationError, match="HOKUSAI_WEBHOOK_SECRET is not set"):
        create_app({"MLFLOW_TRACKING_URI": "http://x"})


def test_health_and_ready(client):
    assert client.get("/health").json == {"status": "ok"}
    assert client.get("/ready").json == {"status": "ready"}


def test_ready_is_503_on_an_unmigrated_database(tmp_path):
    app = create_app({"HOKUSAI_WEBHOOK_SECRETS": ("s",), "HOKUSAI_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}", "MLFLOW_TRACKING_URI": "http://x"})
    response = app.test_client().get("/ready")
    assert response.status_code == 503 and "hokusai db upgrade" in response.json["detail"]


BODY = created_body("m", "1")


# Each made when its test runs, not when the module is collected: in a long suite, a timestamp
# taken at collection (900 s ahead) would be inside the tolerance by the time the test runs.
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda: signed_headers(BODY, secret="forged"), id="forged"),
        pytest.param(lambda: {"Content-Type": "application/json"}, id="missing"),
        pytest.param(lambda: {**signed_headers(BODY), "X-MLflow-Signature": "v1,not base64!"}, id="malformed-signature"),
        pytest.param(lambda: {**signed_headers(BODY), "X-MLflow-Timestamp": "yesterday"}, id="malformed-timestamp"),
        pytest.param(lambda: signed_headers(BODY, ts=int(time.time()) - 600), id="stale"),
        pytest.param(lambda: signed_headers(BODY, ts=int(time.time()) + 900), id="future"),
        pytest.param(lambda: {k: v for k, v in signed_headers(BODY).items() if k != "X-MLflow-Delivery-Id"}, id="no-delivery-id"),
    ],
)
def test_bad_signatures_get_401(client, headers):
    response = client.post("/webhooks/mlflow", data=BODY, headers=headers())
    assert response.status_code == 401
    assert response.json["error"] == "invalid signature"


def test_a_tampered_body_gets_401(client):
    headers = signed_headers(BODY)
    response = client.post("/webhooks/mlflow", data=BODY.replace(b'"1"', b'"2"'), headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize(
    "body,detail",
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"entity": 1, "action": "created", "data": {}}).encode(), "'entity'"),
        (json.dumps({"entity": "model_version", "action": "created"}).encode(), "'data'"),
        (json.dumps({"entity": "model_version", "action": "created", "data": []}).encode(), "'data'"),
        (json.dumps({"entity": "model_version", "action": "created", "data": {"version": "1"}}).encode(), "data.name"),
        (json.dumps({"entity": "model_version", "action": "created", "data": {"name": "m", "version": [1]}}).encode(), "data.version"),
        (json.dumps({"entity": "model_version", "action": "created", "data": {"name": "m", "version": True}}).encode(), "data.version"),
        (json.dumps({"entity": "model_version", "action": "created", "data": {"name": "", "version": "1"}}).encode(), "data.name"),
    ],
)
def test_malformed_bodies_get_400(client, body, detail):
    response = client.post("/webhooks/mlflow", data=body, headers=signed_headers(body))
    assert response.status_code == 400
    assert detail in response.json["detail"]


def test_oversized_body_gets_413(client):
    body = b"{" + b" " * (1024 * 1024 + 1) + b"}"
    response = client.post("/webhooks/mlflow", data=body, headers=signed_headers(body))
    assert response.status_code == 413


def test_secret_rotation_accepts_the_old_secret(client):
    body = json.dumps({"entity": "registered_model", "action": "created", "data": {"name": "m"}}).encode()
    response = client.post("/webhooks/mlflow", data=body, headers=signed_headers(body, secret="old-secret"))
    assert response.status_code == 200 and response.json["status"] == "ignored"


@pytest.mark.parametrize(
    "event",
    [
        {"entity": "registered_model", "action": "created", "data": {"name": "m"}},
        {"entity": "model_version_tag", "action": "set", "data": {"name": "m", "version": "1", "key": "stage", "value": "x"}},
        {"entity": "model_version_alias", "action": "created", "data": {"name": "m", "alias": "a", "version": "1"}},
        {"entity": "model_version", "action": "created", "data": {"name": "example_model", "version": "1", "source": "models:/123", "run_id": "abcd1234abcd5678", "tags": {"example_key": "example_value"}, "description": "An example model version"}},
    ],
    ids=["registered_model", "other-tag", "alias", "mlflow-test-payload"],
)
def test_other_events_are_ignored(client, event):
    body = json.dumps(event).encode()
    response = client.post("/webhooks/mlflow", data=body, headers=signed_headers(body))
    assert response.status_code == 200 and response.json["status"] == "ignored"


@pytest.mark.parametrize(
    "key, value",
    [("hokusai_status", "registered"), ("hokusai_reason", "registered"),
     ("hokusai_status", '{"hokusai_status": "registered", "hokusai_reason": "auroc 0.9 meets the baseline 0.82"}')],
    ids=["status", "reason", "one-write-of-both"],
)
def test_the_outcome_tags_own_deliveries_cost_neither_the_database_nor_mlflow(key, value):
    """Each decision's outcome write fires model_version_tag.set back at the receiver (one per
    decision since issue 23: both tags in one write). It is answered from the body alone: here by
    a receiver whose database and MLflow do not exist."""
    app = create_app({"HOKUSAI_WEBHOOK_SECRETS": (RECEIVER_SECRET,), "HOKUSAI_DATABASE_URL": "postgresql://x@127.0.0.1:1/none",
                      "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "HOKUSAI_RELAY": False})
    event = {"entity": "model_version_tag", "action": "set", "data": {"name": "m", "version": "1", "key": key, "value": value}}
    body = json.dumps(event).encode()
    response = app.test_client().post("/webhooks/mlflow", data=body, headers=signed_headers(body))
    assert response.status_code == 200 and response.json["status"] == "ignored"


# -- against the real stack ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_plugin():
    run_context.reset()


def post(to, body: bytes, delivery_id: str | None = None) -> requests.Response:
    """POST a signed delivery to a stack's receiver, or to a given receiver (a replica)."""
    receiver = getattr(to, "receiver", to)
    return requests.post(receiver.url + "/webhooks/mlflow", data=body, headers=signed_headers(body, delivery_id), timeout=60)


def test_mlflow_test_payload_is_ignored(stack):
    result = stack.client.test_webhook(stack.webhook_id)
    assert result.success and result.response_status == 200
    assert json.loads(result.response_body)["status"] == "ignored"


def test_replayed_delivery_is_a_duplicate(stack, monkeypatch, unique_name, token_id):
    stack.create_token(token_id)
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
    _, version = train_and_register(unique_name, {"auroc": 0.9})
    assert stack.wait_decided(unique_name, version).outcome == "registered"
    body, delivery = stack.created_body(unique_name, version), str(uuid.uuid4())
    for _ in range(3):
        response = post(stack, body, delivery)
        assert response.status_code == 200
        assert response.json()["status"] == "duplicate" and response.json()["decision"] == "registered"
    assert len(stack.registrations(unique_name)) == 1
    assert len(stack.events(token_id, "token_ready_for_deploy")) == 1
    assert len(stack.events(token_id, "model_registered")) == 1


def _create_while_receiver_down(stack, monkeypatch, name, token_id, auroc=0.9) -> str:
    """A version created while the receiver is down: MLflow's own delivery fails."""
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
    with mlflow.start_run():
        mlflow.log_metric("auroc", auroc)
        info = log_model(registered_model_name=name)
    return str(info.registered_model_version)


def _blast(receiver, bodies: list[bytes]) -> list[requests.Response]:
    barrier = threading.Barrier(len(bodies))
    results: list = [None] * len(bodies)

    def send(i):
        barrier.wait()
        results[i] = post(receiver, bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_twenty_concurrent_deliveries_give_one_registration(stack, monkeypatch, receiver_down, unique_name, token_id):
    stack.create_token(token_id)
    version = _create_while_receiver_down(stack, monkeypatch, unique_name, token_id)
    assert stack.registration(unique_name, version) is None
    responses = _blast(receiver_down, [stack.created_body(unique_name, version)] * 20)
    statuses = sorted(r.json()["status"] for r in responses)
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    assert statuses.count("registered") == 1 and statuses.count("duplicate") == 19
    assert len(stack.registrations(unique_name)) == 1
    assert len(stack.events(token_id, "token_ready_for_deploy")) == 1
    assert len(stack.events(token_id, "model_registered")) == 1


def test_two_versions_racing_for_one_token(stack, monkeypatch, receiver_down, unique_name, token_id):
    stack.create_token(token_id)
    a = _create_while_receiver_down(stack, monkeypatch, unique_name + "-a", token_id)
    b = _create_while_receiver_down(stack, monkeypatch, unique_name + "-b", token_id)
    bodies = [stack.created_body(unique_name + "-a", a), stack.created_body(unique_name + "-b", b)] * 5
    responses = _blast(receiver_down, bodies)
    assert all(r.status_code == 200 for r in responses)
    decided = [stack.registration(unique_name + "-a", a), stack.registration(unique_name + "-b", b)]
    assert sorted(r.outcome for r in decided) == ["registered", "rejected"]
    loser = next(r for r in decided if r.outcome == "rejected")
    assert "already registered" in loser.reason
    winner = next(r for r in decided if r.outcome == "registered")
    assert stack.token(token_id)["model_name"] == winner.model_name
    assert len(stack.events(token_id, "token_ready_for_deploy")) == 1


def test_lost_webhook_is_decided_by_reconcile(stack, monkeypatch, receiver_down, unique_name, token_id):
    stack.create_token(token_id)
    version = _create_while_receiver_down(stack, monkeypatch, unique_name, token_id)
    assert stack.registration(unique_name, version) is None
    result = CliRunner().invoke(
        cli, ["--database-url", stack.db_url, "--tracking-uri", stack.mlflow.url, "reconcile", "--json"]
    )
    assert result.exit_code == 0, result.output
    decided = {(o["model_name"], o["model_version"]): o["status"] for o in json.loads(result.output)}
    assert decided[(unique_name, version)] == "registered"
    assert stack.token(token_id)["status"] == "registered"
    assert stack.wait_tag(unique_name, version, "hokusai_status") == "registered"
    # a second sweep finds nothing new for this version
    again = CliRunner().invoke(cli, ["--database-url", stack.db_url, "--tracking-uri", stack.mlflow.url, "reconcile", "--json"])
    assert (unique_name, version) not in {(o["model_name"], o["model_version"]) for o in json.loads(again.output)}


def test_reconcile_finds_a_version_tagged_only_on_its_run(stack, monkeypatch, receiver_down, unique_name, token_id):
    """The registry store stamps versions; a version whose own tags were lost still has its run."""
    stack.create_token(token_id)
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
    with mlflow.start_run():
        mlflow.log_metric("auroc", 0.9)
        info = log_model(registered_model_name=unique_name)
    version = str(info.registered_model_version)
    stack.client.delete_model_version_tag(unique_name, version, "hokusai_token_id")
    result = CliRunner().invoke(cli, ["--database-url", stack.db_url, "--tracking-uri", stack.mlflow.url, "reconcile", "--json"])
    assert result.exit_code == 0, result.output
    assert stack.registration(unique_name, version).outcome == "registered"


def test_database_unreachable_gets_503_and_writes_nothing(stack, monkeypatch, caplog, receiver_down, unique_name, token_id):
    stack.create_token(token_id)
    before = stack.token(token_id)
    version = _create_while_receiver_down(stack, monkeypatch, unique_name, token_id)
    down = create_app(
        {
            "HOKUSAI_WEBHOOK_SECRETS": (RECEIVER_SECRET,),
            "HOKUSAI_DATABASE_URL": "postgresql://hokusai:db-password-xyz@127.0.0.1:1/tokens",
            "MLFLOW_TRACKING_URI": stack.mlflow.url,
        }
    ).test_client()
    body = stack.created_body(unique_name, version)
    with caplog.at_level(logging.DEBUG):
        response = down.post("/webhooks/mlflow", data=body, headers=signed_headers(body))
        ready = down.get("/ready")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert ready.status_code == 503
    # no outcome written to MLflow for a decision that was not recorded
    assert "hokusai_status" not in stack.client.get_model_version(unique_name, version).tags
    assert "db-password-xyz" not in caplog.text and RECEIVER_SECRET not in caplog.text
    assert "db-password-xyz" not in response.get_data(as_text=True)
    # MLflow's retry, to a receiver whose database answers, decides it
    assert post(receiver_down, body).json()["status"] == "registered"
    assert stack.token(token_id)["status"] == "registered" and before["status"] == "draft"


def test_a_failure_inside_the_transaction_leaves_nothing_half_written(stack, monkeypatch, receiver_down, unique_name, token_id):
    stack.create_token(token_id)
    before = stack.token(token_id)
    version = _create_while_receiver_down(stack, monkeypatch, unique_name, token_id)

    # The database fails at the last write, the outbox events: after the token's compare-and-set
    # and the registration row (on PostgreSQL all of them are one statement).
    with _outbox_insert_fails(stack.db_url):
        response = post(receiver_down, stack.created_body(unique_name, version))
    assert response.status_code == 503
    assert stack.registration(unique_name, version) is None
    assert stack.token(token_id) == before
    assert stack.events(token_id) == []
    assert "hokusai_status" not in stack.client.get_model_version(unique_name, version).tags

    # the database is back: MLflow's retry (or the sweep) decides it
    response = post(receiver_down, stack.created_body(unique_name, version))
    assert response.status_code == 200 and response.json()["status"] == "registered"


@contextlib.contextmanager
def _outbox_insert_fails(db_url: str):
    """A trigger makes every INSERT into the outbox fail: on PostgreSQL as a lost connection does
    (SQLSTATE 08006), on SQLite as a missing table does (an OperationalError, as a lost file)."""
    engine = get_engine(db_url)
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TRIGGER hokusai_test_fail BEFORE INSERT ON hokusai_outbox "
                "BEGIN INSERT INTO hokusai_outbox_gone VALUES (1); END"
            )
        try:
            yield
        finally:
            with engine.begin() as conn:
                conn.exec_driver_sql("DROP TRIGGER hokusai_test_fail")
        return
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION hokusai_test_fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'server closed the connection' USING ERRCODE = '08006'; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER hokusai_test_fail BEFORE INSERT ON hokusai_outbox "
            "FOR EACH ROW EXECUTE FUNCTION hokusai_test_fail()"
        )
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER hokusai_test_fail ON hokusai_outbox")
            conn.exec_driver_sql("DROP FUNCTION hokusai_test_fail()")


def test_secrets_never_reach_the_logs(stack, monkeypatch, caplog, unique_name, token_id):
    stack.create_token(token_id)
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
    with caplog.at_level(logging.DEBUG):
        replica = stack.replica()  # an app started while the logs are captured (its start-up too)
        _, version = train_and_register(unique_name, {"auroc": 0.9})
        stack.wait_decided(unique_name, version)
        body = stack.created_body(unique_name, version)
        post(stack, body)
        post(replica, body)
        replica.release()
        requests.post(stack.receiver.url + "/webhooks/mlflow", data=body, headers=signed_headers(body, secret="forged"), timeout=30)
    assert "Delivery" in caplog.text  # the receiver did log
    assert RECEIVER_SECRET not in caplog.text
    password = sa.engine.make_url(stack.db_url).password  # the PostgreSQL stack's URL has one
    assert stack.kind == "sqlite" or (password and password not in caplog.text)


# -- arbitrary input never gives a 500 -----------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
events = st.fixed_dictionaries(
    {
        "entity": st.sampled_from(["model_version", "model_version_tag", "registered_model"]) | json_values,
        "action": st.sampled_from(["created", "set", "deleted"]) | json_values,
        "data": st.fixed_dictionaries(
            {},
            optional={
                "name": st.text(max_size=30) | json_values,
                "version": st.sampled_from(["1", "2", "0", "-1", "abc", ""]) | json_values,
                "key": st.sampled_from(["hokusai_token_id", "other"]) | json_values,
                "value": json_values,
            },
        )
        | json_values,
    }
)
header_names = st.sampled_from(["X-MLflow-Delivery-Id", "X-MLflow-Timestamp", "X-MLflow-Signature", "Content-Type", "X-Other"])
header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    body=st.binary(max_size=300) | events.map(lambda e: json.dumps(e).encode()),
    headers=st.dictionaries(header_names, header_values, max_size=5),
    sign_it=st.booleans(),
)
def test_arbitrary_requests_never_get_a_500(stack, body, headers, sign_it):
    """Unsigned: 401, whatever the body. Signed, with MLflow and the database up: decided (200) or
    malformed (400); never a 503, which would send MLflow retrying what cannot succeed."""
    client = stack.receiver.app.test_client()
    if sign_it:
        headers = {**headers, **signed_headers(body)}
    response = client.post("/webhooks/mlflow", data=body, headers=headers)
    assert response.status_code in ((200, 400) if sign_it else (401,)), (response.status_code, response.get_data(as_text=True))
    assert response.is_json


def test_reconcile_cost_follows_new_versions_not_the_registry(stack, monkeypatch, receiver_down, unique_name, token_id):
    from hokusai_mlflow_plugin.registration.reconcile import reconcile_once
    from hokusai_mlflow_plugin.registration.service import RegistrationService

    stack.create_token(token_id)
    client = CountingClient(stack.client)
    service = RegistrationService(stack.sessions, client)
    reconcile_once(service)  # settles whatever earlier tests left; sets the watermark
    client.calls.clear()
    assert reconcile_once(service) == [] and client.count("get_model_version") == 0  # nothing new: no per-version reads

    version = _create_while_receiver_down(stack, monkeypatch, unique_name, token_id)
    outcomes = reconcile_once(service)
    assert [(o.model_name, o.model_version, o.status) for o in outcomes] == [(unique_name, version, "registered")]
    assert client.count("get_model_version") <= 2  # the new version's facts, and register() reading it


@pytest.mark.parametrize(
    "body,postgresql_refuses",
    [
        pytest.param(created_body("m\u0000x", "1"), "DataError", id="nul-in-name"),
        pytest.param(created_body("m" * 5000, "1"), "StringDataRightTruncation", id="huge-name"),
    ],
)
def test_values_a_database_cannot_hold_get_400_not_500(stack, body, postgresql_refuses):
    """PostgreSQL cannot hold a NUL, nor 5,000 characters in a model name: 400 saying so. SQLite
    holds both, and decides the version like any other (no token tag here: rejected)."""
    response = stack.receiver.app.test_client().post("/webhooks/mlflow", data=body, headers=signed_headers(body))
    if stack.kind == "postgresql":
        assert response.status_code == 400, response.get_data(as_text=True)
        assert response.json == {"error": "malformed request",
                                 "detail": f"The token database cannot store this request: {postgresql_refuses}"}
    else:
        assert response.status_code == 200, response.get_data(as_text=True)
        assert (response.json["status"], response.json["model_name"]) == ("rejected", json.loads(body)["data"]["name"])
        assert "has no hokusai_token_id tag" in response.json["reason"]


def test_a_body_nested_too_deeply_is_400_not_500(stack):
    body = b"[" * 200_000
    response = stack.receiver.app.test_client().post("/webhooks/mlflow", data=body, headers=signed_headers(body))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json == {"error": "malformed request", "detail": "body nests too deeply"}


def test_reconcile_with_mlflow_down_is_one_clean_sentence(tmp_path, monkeypatch):
    from hokusai_mlflow_plugin.db.migrate import upgrade

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    url = f"sqlite:///{tmp_path / 't.db'}"
    upgrade(url)
    runner = CliRunner()
    assert runner.invoke(cli, ["--database-url", url, "token", "create", "xray"]).exit_code == 0
    result = runner.invoke(cli, ["--database-url", url, "--tracking-uri", "http://127.0.0.1:9", "reconcile"])
    assert result.exit_code == 1
    assert "MLflow is unreachable at http://127.0.0.1:9" in result.output and "Traceback" not in result.output
