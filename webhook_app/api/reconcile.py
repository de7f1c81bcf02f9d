"""``POST /api/v1/reconcile``: one sweep, and what it decided."""

from __future__ import annotations

from flask import current_app

from hokusai_mlflow_plugin.auth.keys import ADMIN
from hokusai_mlflow_plugin.registration.reconcile import reconcile_once
from webhook_app.api.blueprint import bp
from webhook_app.api.auth import OPERATOR, needs
from webhook_app.api.schemas import Problem, Swept


@bp.post("/reconcile", responses={200: Swept, 401: Problem, 403: Problem, 503: Problem}, summary="Decide what no webhook decided")
@needs(ADMIN, OPERATOR)
def reconcile():
    outcomes = reconcile_once(current_app.extensions["hokusai"])
    return {"decided": [o.to_dict() for o in outcomes]}
