"""``/api/v1/tokens/{id}/deployments``, ``/archive`` and ``/history``: the token's life after its
registration (``registration.lifecycle``), the deployed version's alias in MLflow, and the relay
woken for the events each change writes."""

from __future__ import annotations

from flask import current_app, g

from hokusai_mlflow_plugin.auth.keys import DEPLOY, READ, REGISTER
from hokusai_mlflow_plugin.mlflow_io import aliases
from hokusai_mlflow_plugin.registration import lifecycle
from webhook_app.api.auth import OBJECT, needs
from webhook_app.api.blueprint import bp
from webhook_app.api.schemas import (
    ArchiveBody,
    DeploymentBody,
    Deployment,
    HistoryPage,
    Problem,
    Token,
    TokenPath,
)

ANSWERS = {401: Problem, 403: Problem, 404: Problem, 409: Problem, 422: Problem}


def _service():
    return current_app.extensions["hokusai"]


def _after(change: lifecycle.Change) -> None:
    """After the commit: wake this process's relay for the change's events."""
    relay = current_app.extensions.get("hokusai_relay")
    if relay is not None and change.event_ids:
        relay.ensure_started()
        relay.kick(change.event_ids)


@bp.post("/tokens/<token_id>/deployments", responses={201: Deployment, 200: Deployment, **ANSWERS},
         summary="Say that a registered token's version is deployed (the same call again changes nothing)")
@needs(DEPLOY, OBJECT)
def deploy_token(path: TokenPath, body: DeploymentBody):
    service = _service()
    with service.sessions.begin() as session:
        change = lifecycle.deploy(session, g.caller, path.token_id, body.model_name, body.version, body.target)
        token = change.token.to_dict()
    _after(change)
    alias = aliases.show_deployment(service.client, token["model_name"], token["model_version"], token["deployment_target"])
    return {**token, "alias_set": alias}, 201 if change.moved else 200


@bp.delete("/tokens/<token_id>/deployments", responses={200: Token, **ANSWERS},
           summary="End a token's deployment: back to registered")
@needs(DEPLOY, OBJECT)
def undeploy_token(path: TokenPath):
    service = _service()
    with service.sessions.begin() as session:
        before = lifecycle.ownership.token_for(session, g.caller, path.token_id)
        target, version, name = before.deployment_target, before.model_version, before.model_name
        change = lifecycle.undeploy(session, g.caller, path.token_id)
        token = change.token.to_dict()
    _after(change)
    if change.moved and target:
        aliases.end_deployment(service.client, name, version, target)
    return token


@bp.post("/tokens/<token_id>/archive", responses={200: Token, **ANSWERS},
         summary="Archive a token for good (its owner or an admin)")
@needs(REGISTER, OBJECT)
def archive_token(path: TokenPath, body: ArchiveBody):
    service = _service()
    with service.sessions.begin() as session:
        before = lifecycle.ownership.token_for(session, g.caller, path.token_id)
        target, version, name = before.deployment_target, before.model_version, before.model_name
        change = lifecycle.archive(session, g.caller, path.token_id, body.reason)
        token = change.token.to_dict()
    _after(change)
    if change.moved and target:
        aliases.end_deployment(service.client, name, version, target)
    return token


@bp.get("/tokens/<token_id>/history", responses={200: HistoryPage, 401: Problem, 403: Problem, 404: Problem, 422: Problem},
        summary="Every status change of a token, oldest first: who, when, why and the version")
@needs(READ, OBJECT)
def token_history(path: TokenPath):
    with _service().sessions() as session:
        return {"items": lifecycle.history(session, g.caller, path.token_id)}
