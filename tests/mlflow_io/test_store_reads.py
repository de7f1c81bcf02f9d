"""The receiver on MLflow's own database (``HOKUSAI_MLFLOW_STORE_URI``, issue 23): a decision reads
the version's LoggedModel, run and metrics there with MLflow's own stores, and writes its outcome
tags there, none of it through MLflow's server. Proved against real MLflow servers on SQLite and on
PostgreSQL, with the receiver's ``MLFLOW_TRACKING_URI`` pointing where nothing listens: were any of
it asked of a server, the decision could not be made."""

from __future__ import annotations

import socket
import uuid

import mlflow
import pytest
from mlflow import MlflowClient

from hokusai_mlflow_plugin.db.models import Registration, Token
from hokusai_mlflow_plugin.config import ConfigError, load_settings
from hokusai_mlflow_plugin.db.session import session_factory
from hokusai_mlflow_plugin.mlflow_io.client import client as server_client
from hokusai_mlflow_plugin.mlflow_io.client import is_store_uri, store_client
from hokusai_mlflow_plugin.registration.service import RegistrationService
from tests.events.helpers import wait_until
from tests.live_stack import RECEIVER_SECRET, ReceiverThread
from tests.mlflow_helpers import log_model
from webhook_app import create_app
from webhook_app.signature import WebhookConfigurationError


@pytest.fixture
def nowhere() -> str:
    """An MLflow URL where nothing listens (a port taken and closed again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def tokens(sqlite_url):
    return sqlite_url


def add_token(db_url: str, token_id: str, baseline: float = 0.8) -> None:
    with session_factory(db_url).begin() as s:
        s.add(Token(token_id=token_id, metric_name="auroc", baseline_value=baseline))


def trained(monkeypatch, token_id: str, auroc: float, model_name: str) -> tuple[str, str]:
    """A user's run with ``HOKUSAI_TOKEN_ID`` set: log auroc, then log_model(registered_model_name=...)
    (a ``models:/m-...`` source, so the delivery names no run). (run id, version)."""
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
    with mlflow.start_run() as run:
        mlflow.log_metric("auroc", auroc)
        info = log_model(registered_model_name=model_name)
    monkeypatch.delenv("HOKUSAI_TOKEN_ID")
    return run.info.run_id, str(info.registered_model_version)


def test_store_uris_are_mlflows_databases_not_its_server():
    for uri in ("sqlite:////srv/mlflow.db", "postgresql://u:p@db/mlflow", "postgresql+psycopg://db/m", "mysql+pymysql://db/m"):
        assert is_store_uri(uri), uri
    for uri in ("http://mlflow:5000", "https://mlflow", "databricks", "file:///tmp/mlruns", "", None):
        assert not is_store_uri(uri), uri
    with pytest.raises(ConfigError, match="HOKUSAI_MLFLOW_STORE_URI must be MLflow's database.*--backend-store-uri"):
        store_client("http://mlflow:5000")
    with pytest.raises(ConfigError, match="HOKUSAI_MLFLOW_STORE_URI must be MLflow's database"):
        load_settings(environ={"HOKUSAI_MLFLOW_STORE_URI": "http://mlflow:5000"})
    assert store_client(None) is None and store_client("") is None


def test_a_receiver_given_a_server_url_as_the_store_does_not_start(tokens):
    with pytest.raises(WebhookConfigurationError, match="HOKUSAI_MLFLOW_STORE_URI must be MLflow's database"):
        create_app({"HOKUSAI_WEBHOOK_SECRETS": ("s",), "HOKUSAI_DATABASE_URL": tokens, "MLFLOW_TRACKING_URI": "http://x",
                    "HOKUSAI_MLFLOW_STORE_URI": "http://mlflow:5000", "HOKUSAI_RELAY": False})


def test_mlflows_webhook_is_decided_from_its_database_with_no_request_to_its_server(
    tracking, mlflow_server, tokens, nowhere, monkeypatch,
):
    """MLflow's real delivery, to a receiver whose server URL is dead: the version is decided on the
    metric logged in MLflow, the run is the one that made it, and the outcome tags are on the
    version, read back through MLflow's server."""
    token_id, name = f"TK-{uuid.uuid4().hex[:8].upper()}", f"store-reads-{uuid.uuid4().hex[:8]}"
    add_token(tokens, token_id)
    receiver = ReceiverThread({
        "HOKUSAI_WEBHOOK_SECRETS": (RECEIVER_SECRET,), "HOKUSAI_DATABASE_URL": tokens, "MLFLOW_TRACKING_URI": nowhere,
        "HOKUSAI_MLFLOW_STORE_URI": mlflow_server.backend_uri, "HOKUSAI_OUTCOME_TAG_LINGER": 0.05, "HOKUSAI_RELAY": False,
    }).start()
    hook = tracking.create_webhook(name=f"store-reads-{uuid.uuid4().hex[:6]}", url=receiver.url + "/webhooks/mlflow",
                                   events=["model_version.created"], secret=RECEIVER_SECRET)
    try:
        run_id, version = trained(monkeypatch, token_id, 0.91, name)
        sessions = session_factory(tokens)

        def registered():
            with sessions() as s:
                return s.get(Token, token_id).status == "registered"

        assert wait_until(registered, timeout=30), "the token was not registered from MLflow's delivery"
        with sessions() as s:
            token = s.get(Token, token_id)
            row = s.query(Registration).filter_by(model_name=name, model_version=version).one()
            assert (token.mlflow_run_id, token.metric_value) == (run_id, 0.91)
            assert row.outcome == "registered"
        assert wait_until(lambda: tracking.get_model_version(name, version).tags.get("hokusai_status") == "registered", timeout=30)
        assert "0.91" in tracking.get_model_version(name, version).tags["hokusai_reason"]
    finally:
        tracking.delete_webhook(hook.webhook_id)
        receiver.release()


def test_the_metric_is_read_from_the_database_at_decision_time(tracking, mlflow_server, tokens, nowhere, monkeypatch):
    """Nothing is kept between decisions: a metric logged after the first decision is the one the
    second reads. Without a tag_later the outcome tags are written before register() returns, in
    MLflow's database."""
    token_id, name = f"TK-{uuid.uuid4().hex[:8].upper()}", f"store-reads-{uuid.uuid4().hex[:8]}"
    add_token(tokens, token_id)
    service = RegistrationService(session_factory(tokens), server_client(nowhere), reader=store_client(mlflow_server.backend_uri))
    run_id, v1 = trained(monkeypatch, token_id, 0.5, name)
    first = service.register(name, v1)
    assert first.status == "rejected" and "0.5" in first.reason
    assert tracking.get_model_version(name, v1).tags["hokusai_status"] == "rejected"

    MlflowClient(tracking_uri=mlflow_server.url).log_metric(run_id, "auroc", 0.93)  # the run's metric, later
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
    with mlflow.start_run(run_id=run_id):
        v2 = str(log_model(registered_model_name=name).registered_model_version)
    second = service.register(name, v2)
    assert second.status == "registered", second.reason
    assert second.metric_value == 0.93
    assert tracking.get_model_version(name, v2).tags["hokusai_status"] == "registered"


def test_a_failure_to_read_the_source_is_retried_never_ignored(mlflow_server, tokens, nowhere, monkeypatch):
    """MLflow codes some failures of its stores as "invalid parameter" (a workspace it cannot
    resolve, say), which its client reading through the server calls "not found". On MLflow's
    database the narrow reads answer a missing source with None, so such an error is a read that
    failed: MlflowUnavailable (503, MLflow retries), never a version ignored, and nothing recorded."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    from hokusai_mlflow_plugin.core.errors import MlflowUnavailable
    from hokusai_mlflow_plugin.plugins import source_reads

    def failing(*args, **kwargs):
        raise MlflowException("Active workspace is required.", INVALID_PARAMETER_VALUE)

    monkeypatch.setattr(source_reads, "read", failing)
    service = RegistrationService(session_factory(tokens), server_client(nowhere), reader=store_client(mlflow_server.backend_uri))
    name = f"store-reads-{uuid.uuid4().hex[:8]}"
    created = {"name": name, "version": "1", "source": f"models:/m-{uuid.uuid4().hex}", "run_id": "", "tags": {}}
    with pytest.raises(MlflowUnavailable, match="Could not read the source"):
        service.register(name, "1", created=created)
    with session_factory(tokens)() as s:
        assert s.query(Registration).filter_by(model_name=name).count() == 0
