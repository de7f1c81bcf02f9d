"""What a request to MLflow is, by its method and path: the scope it needs, and whether the gateway
records the maker of what it creates or judges the tags it writes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from hokusai_mlflow_plugin.auth.keys import ADMIN, READ, REGISTER
from hokusai_mlflow_plugin.core import tags
from hokusai_mlflow_plugin.db.models import MADE_LOGGED_MODEL, MADE_RUN

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


# -- paths the gateway does more on than forward ---------------------------------------------------

# The system's word on a version (the outcome of its registration), and who made a run (set from
# the creating key, below): no key writes them, an admin's included.
VERSION_OUTCOME_TAGS = frozenset({tags.STATUS, tags.REASON})
RUN_MAKER_TAGS = frozenset({"mlflow.user"})


@dataclass(frozen=True)
class Route:
    """One of MLflow's paths that the gateway reads the body of, or the answer to."""

    makes: str | None = None  # the kind of object MLflow's 200 answer to a POST creates (its maker is recorded)
    made_id: tuple[str, ...] = ()  # where that answer holds the object's id
    stamps_user: bool = False  # a run's creation: made by the key's name (mlflow.user)
    tag_field: str | None = None  # where the request names the tags it writes: "key" (one) or "tags" (a list)
    protected: frozenset[str] = frozenset()  # the tags no key may write there
    of: str = ""  # what carries the tags, for the refusal


_ROUTES = {
    "2.0/mlflow/runs/create": Route(MADE_RUN, ("run", "info", "run_id"), stamps_user=True),
    "2.0/mlflow/logged-models": Route(MADE_LOGGED_MODEL, ("model", "info", "model_id")),
    "2.0/mlflow/model-versions/set-tag": Route(tag_field="key", protected=VERSION_OUTCOME_TAGS, of="a model version"),
    "2.0/mlflow/model-versions/delete-tag": Route(tag_field="key", protected=VERSION_OUTCOME_TAGS, of="a model version"),
    "2.0/mlflow/model-versions/create": Route(tag_field="tags", protected=VERSION_OUTCOME_TAGS, of="a model version"),
    "2.0/mlflow/runs/set-tag": Route(tag_field="key", protected=RUN_MAKER_TAGS, of="a run"),
    "2.0/mlflow/runs/delete-tag": Route(tag_field="key", protected=RUN_MAKER_TAGS, of="a run"),
    "2.0/mlflow/runs/log-batch": Route(tag_field="tags", protected=RUN_MAKER_TAGS, of="a run"),
}
ROUTES = {f"{prefix}/{path}": route for prefix in ("api", "ajax-api") for path, route in _ROUTES.items()}
# MLflow 3.17.2's GraphQL mutations are searches (mlflowSearchRuns, mlflowSearchDatasets) and an
# echo: none writes a tag, so /graphql needs no rule here (tests/webhook_app/test_gateway_ownership.py
# fails when an upgrade adds one).


def route_of(path: str) -> Route | None:
    """The ``Route`` of ``path`` as MLflow reads it (decoded once), or None: forwarded as it is.
    Repeated slashes count as one, as MLflow's router merges them."""
    path = path.strip("/")
    if "//" in path:
        path = _SLASHES.sub("/", path)
    return ROUTES.get(path)


def refused_tag(route: Route, payload, query_keys: list[str]) -> str | None:
    """The protected tag that a request to ``route`` would set or delete, or None. ``payload`` is
    its body as MLflow reads it (``as_mlflow_reads``); ``query_keys`` the ``key`` values of its
    query string (MLflow reads a DELETE's body, but a query is judged all the same)."""
    if route.tag_field is None:
        return None
    named = list(query_keys)
    if isinstance(payload, dict):
        if route.tag_field == "key":
            named.append(payload.get("key"))
        elif isinstance(payload.get("tags"), list):
            named += [t.get("key") for t in payload["tags"] if isinstance(t, dict)]
    for key in named:
        # Compared without case or surrounding spaces: a store whose collation ignores them (MySQL's
        # default) would take 'MLFLOW.USER ' for the tag itself.
        if isinstance(key, str) and key.strip().lower() in route.protected:
            return key
    return None


def as_mlflow_reads(raw: bytes):
    """A JSON body as MLflow's handlers read it: parsed, a second time if it was a JSON string
    (older clients double-encode), an empty object if it is not JSON."""
    try:
        payload = json.loads(raw) if raw else {}
        if isinstance(payload, str):
            payload = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return payload


_SLASHES = re.compile("/{2,}")
