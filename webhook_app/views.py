"""HTTP views: collect bytes and headers, call the registration service, map its outcome to a
status code (DESIGN.md, "HTTP")."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Blueprint, Flask, current_app, request
from mlflow import MlflowClient
from mlflow.webhooks.types import ModelVersionCreatedPayload

from hokusai_mlflow_plugin import tags as T
from hokusai_mlflow_plugin.db import migrate
from hokusai_mlflow_plugin.db.session import get_engine, session_factory
from hokusai_mlflow_plugin.relay import from_settings
from hokusai_mlflow_plugin.service import IGNORED, BadInput, Outcome, RegistrationService, Unavailable
from webhook_app.signature import WebhookConfigurationError, WebhookVerificationError, parse_event, verify

bp = Blueprint("hokusai", __name__)
_logger = logging.getLogger(__name__)

_EXAMPLE = dict(ModelVersionCreatedPayload.example())


def init_app(app: Flask) -> None:
    client = MlflowClient(
        tracking_uri=app.config["MLFLOW_TRACKING_URI"], registry_uri=app.config["MLFLOW_TRACKING_URI"]
    )
    sessions = session_factory(app.config["HOKUSAI_DATABASE_URL"])
    service = RegistrationService(sessions, client)
    app.extensions["hokusai"] = service
    if app.config["HOKUSAI_RELAY"]:
        # The fast path: this process's relay threads wake the moment a registration commits.
        try:
            relay = from_settings(app.config["HOKUSAI_SETTINGS"], sessions, poll_interval=app.config["HOKUSAI_RELAY_POLL"])
        except ValueError as e:
            raise WebhookConfigurationError(str(e)) from None
        if relay.sinks:
            # Started by the first request in each process, not here: under `gunicorn --preload`
            # the app is built in the master, and threads do not survive the fork into workers.
            service.after_commit.append(relay.kick)
            app.extensions["hokusai_relay"] = relay
            app.before_request(lambda: relay.ensure_started())
    app.register_blueprint(bp)
    app.register_error_handler(413, lambda e: ({"error": "body too large", "limit": app.config["MAX_CONTENT_LENGTH"]}, 413))
    app.register_error_handler(500, lambda e: ({"error": "internal error"}, 500))  # JSON, no page


def _service() -> RegistrationService:
    return current_app.extensions["hokusai"]


def _bad_request(message: str):
    return {"error": "malformed request", "detail": message}, 400


def _ignored(reason: str):
    return {"status": IGNORED, "reason": reason}, 200


@bp.post("/webhooks/mlflow")
def mlflow_webhook():
    body = request.get_data(cache=False)  # raw bytes first: they are what was signed
    try:
        delivery = verify(
            body,
            request.headers,
            current_app.config["HOKUSAI_WEBHOOK_SECRETS"],
            tolerance=current_app.config["SIGNATURE_TOLERANCE"],
        )
    except WebhookVerificationError as e:
        _logger.warning("Rejected a webhook from %s: %s", request.remote_addr, e)
        return {"error": "invalid signature", "detail": str(e)}, 401
    try:
        event = parse_event(body)
    except ValueError as e:
        return _bad_request(str(e))

    kind = (event["entity"], event["action"])
    data = event["data"]
    if kind == ("model_version", "created"):
        if data == _EXAMPLE:
            return _ignored("MLflow's test payload")
        return _decide(data, delivery.delivery_id, redecide=False)
    if kind == ("model_version_tag", "set"):
        if data.get("key") != T.TOKEN_ID:
            return _ignored(f"tag '{data.get('key')}' does not choose a token")
        return _decide(data, delivery.delivery_id, redecide=True)
    return _ignored(f"event {kind[0]}.{kind[1]} is not handled")


def _decide(data: dict, delivery_id: str, redecide: bool):
    name, version = data.get("name"), data.get("version")
    if not isinstance(name, str) or not name.strip():
        return _bad_request("'data.name' must be a non-empty string")
    if isinstance(version, bool) or not isinstance(version, (str, int)) or not str(version).strip():
        return _bad_request("'data.version' must be a string or an integer")
    try:
        outcome: Outcome = _service().register(name, str(version).strip(), delivery_id=delivery_id, redecide=redecide)
    except Unavailable as e:
        _logger.warning("Delivery %s for %s v%s: %s (503, MLflow will retry)", delivery_id, name, version, e)
        return {"error": "temporarily unavailable", "detail": str(e)}, 503, {"Retry-After": "5"}
    except BadInput as e:
        return _bad_request(str(e))
    _logger.info(
        "Delivery %s: model %r version %s -> %s%s", delivery_id, name, version, outcome.status,
        f" (token {outcome.token_id})" if outcome.token_id else "",
    )
    return outcome.to_dict(), 200


@bp.get("/health")
def health():
    return {"status": "ok"}


@bp.get("/ready")
def ready():
    url = current_app.config["HOKUSAI_DATABASE_URL"]
    try:
        with get_engine(url).connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        current = migrate.is_current(url)
    except sa.exc.SQLAlchemyError as e:
        cause = getattr(e, "orig", None) or e
        return {"status": "unavailable", "detail": f"database unreachable: {type(cause).__name__}"}, 503
    if not current:
        return {"status": "unavailable", "detail": "database schema is not current: run 'hokusai db upgrade'"}, 503
    return {"status": "ready"}
