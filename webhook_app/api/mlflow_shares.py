"""``/api/v1/mlflow/experiments/{id}/shares`` and ``/api/v1/mlflow/registered-models/{name}/shares``:
who besides the owning team reaches an MLflow object through the gateway (issue 19). The owner (a
member of the owning team) or an admin shares and unshares; whoever may read the object sees its
shares. The rules are ``auth.mlflow_objects``'; a gateway hears a change within its 5 s memory."""

from __future__ import annotations

from flask import current_app, g

from hokusai_mlflow_plugin.auth import mlflow_objects as objects
from hokusai_mlflow_plugin.auth.keys import READ, REGISTER
from hokusai_mlflow_plugin.db.models import EXPERIMENT, REGISTERED_MODEL
from webhook_app.api.auth import OBJECT, needs
from webhook_app.api.blueprint import bp
from webhook_app.api.schemas import (
    ExperimentPath,
    ExperimentSharePath,
    MlflowShares,
    ModelPath,
    ModelSharePath,
    Problem,
    ShareBody,
)

ANSWERS = {200: MlflowShares, 401: Problem, 403: Problem, 404: Problem, 422: Problem}


def _sessions():
    return current_app.extensions["hokusai"].sessions


@bp.get("/mlflow/experiments/<experiment_id>/shares", responses=ANSWERS,
        summary="An MLflow experiment's owner and who it is shared with")
@needs(READ, OBJECT)
def list_experiment_shares(path: ExperimentPath):
    with _sessions()() as session:
        return objects.share_view(session, g.caller, EXPERIMENT, path.experiment_id)


@bp.put("/mlflow/experiments/<experiment_id>/shares/<name>", responses=ANSWERS,
        summary="Share an MLflow experiment with a team or user (read or edit)")
@needs(REGISTER, OBJECT)
def share_experiment(path: ExperimentSharePath, body: ShareBody):
    with _sessions().begin() as session:
        return objects.share_named(session, g.caller, EXPERIMENT, path.experiment_id, path.name, body.permission)


@bp.delete("/mlflow/experiments/<experiment_id>/shares/<name>", responses=ANSWERS,
           summary="Take an MLflow experiment's share away")
@needs(REGISTER, OBJECT)
def unshare_experiment(path: ExperimentSharePath):
    with _sessions().begin() as session:
        return objects.share_named(session, g.caller, EXPERIMENT, path.experiment_id, path.name, None)


@bp.get("/mlflow/registered-models/<model_name>/shares", responses=ANSWERS,
        summary="An MLflow registered model's owner and who it is shared with")
@needs(READ, OBJECT)
def list_model_shares(path: ModelPath):
    with _sessions()() as session:
        return objects.share_view(session, g.caller, REGISTERED_MODEL, path.model_name)


@bp.put("/mlflow/registered-models/<model_name>/shares/<name>", responses=ANSWERS,
        summary="Share an MLflow registered model with a team or user (read or edit)")
@needs(REGISTER, OBJECT)
def share_model(path: ModelSharePath, body: ShareBody):
    with _sessions().begin() as session:
        return objects.share_named(session, g.caller, REGISTERED_MODEL, path.model_name, path.name, body.permission)


@bp.delete("/mlflow/registered-models/<model_name>/shares/<name>", responses=ANSWERS,
           summary="Take an MLflow registered model's share away")
@needs(REGISTER, OBJECT)
def unshare_model(path: ModelSharePath):
    with _sessions().begin() as session:
        return objects.share_named(session, g.caller, REGISTERED_MODEL, path.model_name, path.name, None)
