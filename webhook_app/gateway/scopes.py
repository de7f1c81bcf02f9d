"""The scope each request to MLflow needs, by its method and path."""

from __future__ import annotations

from hokusai_mlflow_plugin.auth.keys import ADMIN, READ, REGISTER

PUBLIC = {"health", "version"}  # what a load balancer or `mlflow` asks before it has a key
RUN_CREATE = ("api/2.0/mlflow/runs/create", "ajax-api/2.0/mlflow/runs/create")


def scope_of(method: str, path: str) -> str | None:
    """``read`` for reads and searches, ``admin`` for webhooks and deleting registered models,
    ``register`` for every other write; None for public paths."""
    path = path.strip("/")
    if path in PUBLIC:
        return None
    if "/mlflow/webhooks" in f"/{path}" or path.endswith("registered-models/delete"):
        return ADMIN
    if method in ("GET", "HEAD", "OPTIONS"):
        return READ
    if method == "POST" and (path.endswith("/search") or "/search-" in path or path.endswith("/get-history-bulk-interval")):
        return READ
    return REGISTER
