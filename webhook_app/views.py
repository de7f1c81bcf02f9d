"""HTTP views: collect bytes and headers, call the registration service, map its outcome to a
status code (DESIGN.md, "HTTP"). The wiring is ``create_app``'s."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST
from mlflow.webhooks.types import ModelVersionCreatedPayload

from hokusai_mlflow_plugin.core import tags
from hokusai_mlflow_plugin.core.errors import INVALID, UNAVAILABLE, HokusaiError
from hokusai_mlflow_plugin.db import migrate
from hokusai_mlflow_plugin.events.gauges import OutboxCollector
from hokusai_mlflow_plugin.monitoring import WEBHOOK_DELIVERIES, exposition
from hokusai_mlflow_plugin.registration.service import IGNORED, Outcome, RegistrationService
from webhook_app.signature import WebhookVerificationError, parse_event, verify

bp = Blueprint("hokusai", __name__)
_logger = logging.getLogger(__name__)

_EXAMPLE = dict(ModelVersionCreatedPayload.example())


def _service() -> RegistrationService:
    return current_app.extensions["hokusai"]


def _bad_request(message: str):
    return {"error": "malformed request", "detail": message}, 400


def _ignored(reason: str):
    return {"status": IGNORED, "reason": reason}, 200


@bp.post("/webhooks/mlflow")
def mlflow_webhook():
    answer = _answer_delivery()
    body, code = answer[0], answer[1]
    outcome = body.get("status") or {400: "malformed", 401: "invalid_signature", 503: "unavailable"}.get(code, "error")
    WEBHOOK_DELIVERIES.labels(outcome, str(code)).inc()
    return answer


def _answer_delivery():
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
        return _decide(data, delivery.delivery_id, redecide=False, created=data)
    if kind == ("model_version_tag", "set"):
        if data.get("key") != tags.TOKEN_ID:
            return _ignored(f"tag '{data.get('key')}' does not choose a token")
        return _decide(data, delivery.delivery_id, redecide=True)
    return _ignored(f"event {kind[0]}.{kind[1]} is not handled")


def _decide(data: dict, delivery_id: str, redecide: bool, created: dict | None = None):
    name, version = data.get("name"), data.get("version")
    if not isinstance(name, str) or not name.strip():
        return _bad_request("'data.name' must be a non-empty string")
    if isinstance(version, bool) or not isinstance(version, (str, int)) or not str(version).strip():
        return _bad_request("'data.version' must be a string or an integer")
    try:
        outcome: Outcome = _service().register(
            name, str(version).strip(), delivery_id=delivery_id, redecide=redecide, created=created
        )
    except HokusaiError as e:
        if e.kind == UNAVAILABLE:
            _logger.warning("Delivery %s for %s v%s: %s (503, MLflow will retry)", delivery_id, name, version, e)
            return {"error": "temporarily unavailable", "detail": str(e)}, 503, {"Retry-After": "5"}
        if e.kind == INVALID:
            return _bad_request(str(e))
        raise
    _logger.info(
        "Delivery %s: model %r version %s -> %s%s", delivery_id, name, version, outcome.status,
        f" (token {outcome.token_id})" if outcome.token_id else "",
    )
    return outcome.to_dict(), 200


@bp.get("/health")
def health():
    return {"status": "ok"}


@bp.get("/metrics")
def metrics():
    """Prometheus' text format: the counters of every worker, and the outbox's gauges."""
    return Response(exposition([OutboxCollector(_service().sessions)]), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/ready")
def ready():
    try:
        migrate.check_ready(current_app.config["HOKUSAI_DATABASE_URL"])
    except HokusaiError as e:
        return {"status": "unavailable", "detail": str(e)}, 503
    return {"status": "ready"}
