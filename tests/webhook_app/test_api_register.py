"""``POST /api/v1/models/register`` on the live stack (SQLite and PostgreSQL, a real MLflow server):
a logged model registered and decided by the same service the webhook uses, every status it
answers, and 503 with Retry-After when the database or MLflow is down."""

from __future__ import annotations

import mlflow
import pytest

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.db.session import session_factory
from tests.api_helpers import Api, assert_problem
from tests.live_stack import ReceiverThread
from tests.mlflow_helpers import log_model


def logged(auroc: float) -> tuple[str, str, str]:
    """A model logged with plain MLflow and not registered: (models:/ URI, runs:/ URI, run id)."""
    with mlflow.start_run() as run:
        mlflow.log_metric("auroc", auroc)
        info = log_model()
    return f"models:/{info.model_id}", f"runs:/{run.info.run_id}/model", run.info.run_id


@pytest.fixture
def registrar(stack) -> Api:
    return Api(stack.receiver.url, stack.api_key("register"))


def test_a_logged_model_is_registered_once_with_its_run_and_value(stack, registrar, token_id, unique_name):
    stack.create_token(token_id, "auroc", 0.82, owner="test")
    uri, _, run_id = logged(0.91)
    answer = registrar.post("/models/register", json={"token_id": token_id.lower(), "model_uri": uri, "model_name": unique_name})
    assert answer.status_code == 200, answer.text
    decision = answer.json()
    assert decision == {
        "status": "registered", "reason": "auroc 0.91 >= baseline 0.82.", "token_id": token_id, "model_name": unique_name,
        "model_version": "1", "run_id": run_id, "metric_name": "auroc", "metric_value": 0.91, "baseline": 0.82,
    }
    token = stack.token(token_id)
    assert (token["status"], token["mlflow_run_id"], token["model_version"]) == ("registered", run_id, "1")
    version = stack.client.get_model_version(unique_name, "1")
    assert version.tags["hokusai_token_id"] == token_id and version.run_id == run_id
    # MLflow's webhook for the same version arrives too: it finds the decision made, nothing twice
    assert stack.wait_tag(unique_name, "1", "hokusai_status") == "registered"
    assert len(stack.registrations(unique_name)) == 1
    assert len(stack.events(token_id, "token_ready_for_deploy")) == 1
    again = registrar.post("/models/register", json={"token_id": token_id, "model_uri": logged(0.95)[0]})
    assert_problem(again, 409, "registered already")


def test_a_run_uri_that_misses_the_baseline_is_rejected_and_the_token_stays_draft(stack, registrar, token_id, unique_name):
    stack.create_token(token_id, "auroc", 0.82, owner="test")
    _, runs_uri, run_id = logged(0.70)
    answer = registrar.post("/models/register", json={"token_id": token_id, "model_uri": runs_uri, "model_name": unique_name})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "rejected" and "below the baseline 0.82" in answer.json()["reason"]
    assert answer.json()["run_id"] == run_id
    assert stack.token(token_id)["status"] == "draft"


def test_unknown_tokens_bad_uris_and_a_lower_bar_are_refused_and_write_nothing(stack, registrar, token_id, unique_name):
    uri = logged(0.9)[0]
    assert_problem(registrar.post("/models/register", json={"token_id": token_id, "model_uri": uri}), 404, f"Unknown token '{token_id}'")
    stack.create_token(token_id, "auroc", 0.82, owner="test")
    for body, status, field in [
        ({"token_id": token_id, "model_uri": "s3://bucket/model.pkl"}, 422, "model_uri"),  # not a logged model's form
        ({"token_id": token_id, "model_uri": "models:/m-" + "0" * 32}, 404, "model_uri"),  # no such LoggedModel
        ({"token_id": token_id, "model_uri": f"runs:/{'0' * 32}/model"}, 404, "model_uri"),  # no such run
        ({"token_id": token_id, "model_uri": uri, "metric": "auroc", "baseline": 0.5}, 409, "baseline"),  # its own: 0.82
        ({"token_id": token_id, "model_uri": uri, "metric": "f1"}, 409, "metric"),  # the token's own is auroc
        ({"token_id": token_id}, 422, "model_uri"),
    ]:
        problem = assert_problem(registrar.post("/models/register", json={**body, "model_name": unique_name}), status)
        assert field in [e["field"] for e in problem.get("errors", [])] or field in problem["detail"], problem
    assert stack.token(token_id)["status"] == "draft"
    assert stack.client.search_model_versions(f"name = '{unique_name}'") == []
    # a token with no bar of its own keeps none when the model named is not there: no half-updated token
    bare = token_id + "-BARE"
    stack.create_token(bare, None, None, owner="test")
    body = {"token_id": bare, "model_uri": "models:/m-" + "0" * 32, "metric": "auroc", "baseline": 0.7}
    assert_problem(registrar.post("/models/register", json=body), 404, "model_uri")
    assert (stack.token(bare)["metric_name"], stack.token(bare)["baseline_value"]) == (None, None)


def test_503_with_retry_after_when_the_database_or_mlflow_is_down(stack, token_id):
    stack.create_token(token_id, "auroc", 0.82, owner="test")
    key = stack.api_key("register")
    mlflow_down = ReceiverThread({**stack.receiver_config, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}).start()
    database_down = ReceiverThread({**stack.receiver_config, "HOKUSAI_DATABASE_URL": "postgresql://hokusai@127.0.0.1:9/hokusai"}).start()
    try:
        body = {"token_id": token_id, "model_uri": "models:/m-" + "a" * 32}
        assert_problem(Api(mlflow_down.url, key).post("/models/register", json=body), 503, "MLflow")
        assert_problem(Api(database_down.url, key).get("/tokens"), 503, "database")
    finally:
        mlflow_down.release()
        database_down.release()
    assert stack.token(token_id)["status"] == "draft"


def test_the_key_that_called_is_recorded_as_used(stack, registrar):
    key_id = registrar.session.headers["Authorization"].removeprefix("Bearer ")[3:11]

    def last_used():
        with session_factory(stack.db_url)() as s:
            return next(k.last_used_at for k in keys.list_keys(s) if k.key_id == key_id)

    assert last_used() is None  # a new key
    assert registrar.get("/tokens").status_code == 200
    assert last_used() is not None
