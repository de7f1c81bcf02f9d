"""Faults at the receiver's end (issue 13), over real HTTP on loopback: a token database that
refuses writes (PostgreSQL in read-only mode, a SQLite file opened read-only), and clock skew
between MLflow and the receiver, within and beyond the signature's 300 s tolerance."""

from __future__ import annotations

import contextlib
import json
import time

import mlflow
import pytest
import requests
import sqlalchemy as sa

from hokusai_mlflow_plugin.db.migrate import upgrade
from hokusai_mlflow_plugin.db.models import OutboxEvent, Registration, Token
from hokusai_mlflow_plugin.db.session import dispose, session_factory
from hokusai_mlflow_plugin.plugins import run_context
from tests.harness import _admin_connection, create_pg_database, drop_pg_database
from tests.live_stack import RECEIVER_SECRET, ReceiverThread, created_body, signed_headers
from tests.mlflow_helpers import log_model
from webhook_app.signature import DEFAULT_TOLERANCE, WebhookVerificationError, sign, verify


@pytest.fixture(autouse=True)
def _fresh_plugin():
    run_context.reset()


def receiver(db_url: str, tracking_uri: str = "http://127.0.0.1:9") -> ReceiverThread:
    return ReceiverThread(
        {"HOKUSAI_WEBHOOK_SECRETS": (RECEIVER_SECRET,), "HOKUSAI_DATABASE_URL": db_url, "MLFLOW_TRACKING_URI": tracking_uri}
    ).start()


def post(to: ReceiverThread, body: bytes, **headers) -> requests.Response:
    return requests.post(to.url + "/webhooks/mlflow", data=body, headers=signed_headers(body, **headers), timeout=60)


# -- a token database that refuses writes ---------------------------------------------------------


@contextlib.contextmanager
def writable_then_read_only(kind: str, tmp_path, monkeypatch):
    """A migrated token database, and a function that makes it refuse writes from then on: yields
    (url for the receiver, url to inspect it, read_only(), writable()).

    PostgreSQL: ``default_transaction_read_only`` on the database, then new connections (every
    write fails with SQLSTATE 25006, read_only_sql_transaction). SQLite: the same file opened
    with ``mode=ro``, as on a read-only mount (running as root, a chmod would not stop us)."""
    if kind == "postgresql":
        url = create_pg_database("hokusai_readonly")
        name = url.rsplit("/", 1)[1]

        def read_only(on: bool) -> None:
            with _admin_connection() as conn:
                conn.execute(f'ALTER DATABASE "{name}" ' + ("SET default_transaction_read_only = on" if on else "RESET default_transaction_read_only"))
            dispose(url)  # the pool's connections keep their old setting: new ones from here

        try:
            upgrade(url)
            yield url, url, lambda: read_only(True), lambda: read_only(False)
        finally:
            read_only(False)
            dispose(url)
            drop_pg_database(url)
        return
    monkeypatch.chdir(tmp_path)  # the read-only URI is relative: no stray directory anywhere else
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    upgrade(url)
    read_only_url = "sqlite:///file:tokens.db?mode=ro&uri=true"
    try:
        yield read_only_url, url, lambda: None, lambda: None
    finally:
        dispose(read_only_url)
        dispose(url)


def written(url: str, token_id: str, name: str, version: str) -> dict:
    with session_factory(url)() as s:
        return {
            "token": s.get(Token, token_id).status,
            "registrations": s.scalar(sa.select(sa.func.count()).select_from(Registration).where(
                Registration.model_name == name, Registration.model_version == version)),
            "outbox": [e.event_type for e in s.scalars(sa.select(OutboxEvent)) if e.payload.get("token_id") == token_id],
        }


def test_a_database_that_refuses_writes_gets_503_and_nothing_half_written(
    stack, receiver_down, monkeypatch, tmp_path, unique_name, token_id
):
    """MLflow delivers while the token database refuses writes: the answer is 503 with
    Retry-After (MLflow retries), nothing is written (no registration row, the token still draft,
    no outbox row) and no outcome tag reaches MLflow. Once it takes writes, the retry decides it.
    (PostgreSQL's refusal is an InternalError, SQLSTATE 25006: ``db.errors.guarded`` maps it.)"""
    with writable_then_read_only(stack.kind, tmp_path, monkeypatch) as (url, inspect_url, read_only, writable):
        with session_factory(inspect_url).begin() as s:
            s.add(Token(token_id=token_id, metric_name="auroc", baseline_value=0.82))
        monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
        with mlflow.start_run():
            mlflow.log_metric("auroc", 0.9)
            version = str(log_model(registered_model_name=unique_name).registered_model_version)
        read_only()
        refusing = receiver(url, stack.mlflow.url)
        try:
            assert requests.get(refusing.url + "/ready", timeout=10).status_code == 200  # it reads fine
            mv = stack.client.get_model_version(unique_name, version)
            body = created_body(unique_name, version, source=mv.source, run_id=mv.run_id)  # as MLflow sends it
            response = post(refusing, body)
            assert written(inspect_url, token_id, unique_name, version) == {"token": "draft", "registrations": 0, "outbox": []}
            assert "hokusai_status" not in stack.client.get_model_version(unique_name, version).tags
        finally:
            refusing.release()
        writable()
        retry = receiver(inspect_url, stack.mlflow.url)
        try:
            again = post(retry, body)
            assert again.status_code == 200 and again.json()["status"] == "registered", again.text
        finally:
            retry.release()
        assert written(inspect_url, token_id, unique_name, version) == {
            "token": "registered", "registrations": 1, "outbox": ["model_registered", "token_ready_for_deploy"]}
    assert response.status_code == 503, response.text  # MLflow retries a 503; the receiver is healthy
    assert response.headers["Retry-After"] and response.json()["error"] == "temporarily unavailable"


# -- clock skew ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def skewed_receiver(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('skew') / 'tokens.db'}"
    upgrade(url)
    server = receiver(url)
    yield server
    server.release()
    dispose(url)


# An event the receiver verifies, then ignores: the signature's window alone decides the answer.
IGNORED = json.dumps({"entity": "registered_model", "action": "created", "data": {"name": "m"}}).encode()


@pytest.mark.parametrize("skew", [-240, -60, 60, 240], ids=lambda s: f"{s:+d}s")
def test_clock_skew_within_the_tolerance_is_accepted(skewed_receiver, skew):
    """MLflow's clock ``skew`` seconds off the receiver's (its timestamp that far in the past or
    future), within the 300 s tolerance: the delivery is verified and answered."""
    response = post(skewed_receiver, IGNORED, ts=int(time.time()) + skew)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ignored"


@pytest.mark.parametrize("skew", [-360, -3600, 360, 3600], ids=lambda s: f"{s:+d}s")
def test_clock_skew_beyond_the_tolerance_is_401(skewed_receiver, skew):
    response = post(skewed_receiver, IGNORED, ts=int(time.time()) + skew)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid signature"


@pytest.mark.parametrize("offset,accepted", [(-300, True), (300, True), (-301, False), (301, False)])
def test_the_tolerance_is_300_seconds_both_ways_to_the_second(offset, accepted):
    now = 1_800_000_000
    ts = now + offset
    headers = {"X-MLflow-Delivery-Id": "d-1", "X-MLflow-Timestamp": str(ts), "X-MLflow-Signature": sign("s", "d-1", ts, IGNORED)}
    assert DEFAULT_TOLERANCE == 300
    if accepted:
        assert verify(IGNORED, headers, ["s"], now=now).timestamp == ts
    else:
        with pytest.raises(WebhookVerificationError, match="outside the allowed window"):
            verify(IGNORED, headers, ["s"], now=now)
