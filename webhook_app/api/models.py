"""``POST /api/v1/models/register`` (the platform's endpoint) and ``GET /api/v1/registrations``."""

from __future__ import annotations

import logging

from flask import current_app, g

from hokusai_mlflow_plugin.auth import mlflow_objects, ownership
from hokusai_mlflow_plugin.auth.keys import READ, REGISTER
from hokusai_mlflow_plugin.core import tags
from hokusai_mlflow_plugin.core.errors import NOT_FOUND
from hokusai_mlflow_plugin.db.models import MADE_LOGGED_MODEL, MADE_RUN, REGISTERED_MODEL
from hokusai_mlflow_plugin.mlflow_io import versions
from hokusai_mlflow_plugin.mlflow_io.client import call
from hokusai_mlflow_plugin.registration import tokens
from hokusai_mlflow_plugin.submit.logged import register_logged
from webhook_app.api.blueprint import bp, page
from webhook_app.api.auth import FILTERED, OBJECT, needs
from webhook_app.api.schemas import Decision, Problem, RegisterBody, RegistrationPage, RegistrationQuery

_logger = logging.getLogger(__name__)


@bp.post(
    "/models/register",
    responses={200: Decision, 401: Problem, 403: Problem, 404: Problem, 409: Problem, 422: Problem, 503: Problem},
    summary="Register a logged model for a token and return the decision",
)
@needs(REGISTER, OBJECT)
def register_model(body: RegisterBody):
    """Creates the MLflow model version of a model that is logged already, and returns the
    decision of the same registration service the webhook uses (synchronously; the webhook's
    delivery of the same version then finds it decided). The caller needs ``register`` on the
    token, and the model counts only if its makers have it too (provenance, in ``register()``).

    404: no such token (or not one the key may see), or no such run or LoggedModel in MLflow
    for `model_uri` (or one in another team's experiment, or a `model_name` another team owns:
    teams inside MLflow). 409: the token is not draft, or the request's metric or baseline differs
    from the token's own, or the token has none and the request gives none. 422: the body is wrong (a `model_uri` not of a logged model's form).
    """
    service = current_app.extensions["hokusai"]
    kind, ident, _ = versions.parse_model_uri(body.model_uri)
    with service.sessions() as session:
        token = ownership.token_for(session, g.caller, body.token_id, ownership.REGISTER_RIGHT)
        try:  # teams inside MLflow: another team's run or model is as missing here as through the gateway
            mlflow_objects.require_for_version(session, g.caller, (MADE_RUN if kind == "runs" else MADE_LOGGED_MODEL, ident),
                                               body.model_name or f"hokusai-{token.token_id.lower()}")
        except mlflow_objects.HiddenSource:
            raise versions.BadModelUri(f"MLflow has no {'LoggedModel' if kind == 'models' else 'run'} '{ident}' "
                                       f"(model_uri {body.model_uri!r}).", NOT_FOUND) from None
    outcome = register_logged(service, body.token_id, body.model_uri, body.model_name, body.metric, body.baseline)
    if str(outcome.model_version) == "1":  # its first version: a model this call made is the caller's team's
        with service.sessions.begin() as session:
            owner = mlflow_objects.record_owner(session.connection(), REGISTERED_MODEL, outcome.model_name, g.caller)
        if owner is not None:  # its owner's searches through the gateway are narrowed by this tag
            call(service.client.set_registered_model_tag, outcome.model_name, tags.OWNER, str(owner))
    _logger.info("API key %s registered %s v%s for %s: %s", g.caller.key_id, outcome.model_name,
                 outcome.model_version, outcome.token_id, outcome.status)
    return {
        "status": outcome.status, "reason": outcome.reason, "token_id": outcome.token_id,
        "model_name": outcome.model_name, "model_version": outcome.model_version, "run_id": outcome.run_id,
        "metric_name": outcome.metric_name, "metric_value": outcome.metric_value, "baseline": outcome.baseline_value,
    }


@bp.get("/registrations", responses={200: RegistrationPage, 401: Problem, 403: Problem, 422: Problem}, summary="Every decided model version")
@needs(READ, FILTERED)
def list_registrations(query: RegistrationQuery):
    with current_app.extensions["hokusai"].sessions() as session:
        found, cursor = tokens.page_registrations(session, query.token, query.status, query.model, query.limit, query.cursor,
                                                  caller=g.caller)
        return page([r.to_dict() for r in found], cursor)
