"""The scope each request to MLflow needs, by its method and path."""

from __future__ import annotations

from hokusai_mlflow_plugin.auth.keys import ADMIN, READ, REGISTER

PUBLIC = {"health", "version"}  # what a load balancer or `mlflow` asks before it has a key
# MLflow 3's POST endpoints that only read (its searches), listed exactly: a rule on words in the
# path let POSTs through whose paths callers choose (artifact names, endpoint and server names).
_READ_POSTS = (
    "2.0/mlflow/experiments/search", "2.0/mlflow/experiments/search-datasets", "2.0/mlflow/runs/search",
    "2.0/mlflow/logged-models/search", "2.0/mlflow/registered-models/get-latest-versions",
    "3.0/mlflow/traces/search", "3.0/mlflow/traces/batchGetInfos", "3.0/mlflow/datasets/search",
    "3.0/mlflow/issues/search", "3.0/mlflow/prompt-optimization/jobs/search",
)
READ_POSTS = frozenset(f"{prefix}/{path}" for prefix in ("api", "ajax-api") for path in _READ_POSTS)
RUN_CREATE = ("api/2.0/mlflow/runs/create", "ajax-api/2.0/mlflow/runs/create")


def scope_of(method: str, path: str) -> str | None:
    """``read`` for reads and searches, ``admin`` for webhooks and deleting registered models,
    ``register`` for every other write; None for public paths."""
    path = path.strip("/")
    if path in PUBLIC:
        return None
    if "/mlflow/webhooks" in f"/{path}" or path.endswith("registered-models/delete"):
        return ADMIN
    if path.rpartition("/")[2] == "graphql":  # it has mutations, and takes them by GET as well
        return REGISTER
    if method in ("GET", "HEAD", "OPTIONS"):
        return READ
    if method == "POST" and path in READ_POSTS:
        return READ
    return REGISTER
