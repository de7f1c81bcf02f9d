"""What a request to MLflow is, by its method and path: the scope it needs, and whether the gateway
records the maker of what it creates or judges the tags it writes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from hokusai_mlflow_plugin.auth.keys import ADMIN, READ, REGISTER
from hokusai_mlflow_plugin.core import tags
from hokusai_mlflow_plugin.db.models import MADE_LOGGED_MODEL, MADE_RUN


def scope_of(method: str, path: str) -> str | None:
    """The scope a request needs: its route's (``access_of``); None for public paths, ``read`` for
    a route the gateway does not know (it is refused once the key is checked)."""
    found = access_of(method, path)
    return found[0].scope if found is not None else READ


# -- paths the gateway does more on than forward ---------------------------------------------------

# The system's word on a version (the outcome of its registration), and who made a run (set from
# the creating key, below): no key writes them, an admin's included.
VERSION_OUTCOME_TAGS = frozenset({tags.STATUS, tags.REASON})
RUN_MAKER_TAGS = frozenset({"mlflow.user"})
MODEL_OWNER_TAGS = frozenset({tags.OWNER})  # a registered model's owner (auth.mlflow_objects), set by the gateway


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
    "2.0/mlflow/registered-models/create": Route(tag_field="tags", protected=MODEL_OWNER_TAGS, of="a registered model"),
    "2.0/mlflow/registered-models/set-tag": Route(tag_field="key", protected=MODEL_OWNER_TAGS, of="a registered model"),
    "2.0/mlflow/registered-models/delete-tag": Route(tag_field="key", protected=MODEL_OWNER_TAGS, of="a registered model"),
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


# -- what each of MLflow's routes is: its access, and the object it is judged by ----------------------
#
# Every route MLflow 3.17.2 serves is here (tests/webhook_app/test_gateway_routes.py reads them from
# MLflow's own Flask and FastAPI tables and fails on one missing). A route that is not here is
# refused (default deny: mlflow#25065 is what an unlisted route that fails open costs). The rules on
# who may read or write an object are auth.mlflow_objects'; this table only says what a path is.

PUBLIC_, OPEN, READS, WRITES, OPERATOR, REFUSED = "public", "open", "read", "write", "admin", "refused"
EXPERIMENT, RUN, LOGGED_MODEL, REGISTERED_MODEL, TRACE, ARTIFACT = (
    "experiment", "run", "logged_model", "registered_model", "trace", "artifact")
# How each search is narrowed before the query (webhook_app.gateway.owners).
SEARCH_EXPERIMENTS, SEARCH_RUNS, SEARCH_LOGGED_MODELS = "experiments", "runs", "logged_models"
SEARCH_REGISTERED_MODELS, SEARCH_MODEL_VERSIONS, SEARCH_TRACES_V2, SEARCH_TRACES_V3 = (
    "registered_models", "model_versions", "traces_v2", "traces_v3")
GET_BY_NAME = "experiment_by_name"  # judged by the experiment MLflow's answer names
GRAPHQL = "graphql"  # each field of the query judged as its REST route (webhook_app.gateway.graphql)


@dataclass(frozen=True)
class Access:
    """What one of MLflow's routes is. ``need``: ``public`` (no key), ``open`` (any key; names no
    object), ``read``/``write`` (of the objects ``subjects`` name), ``admin`` (operators only),
    ``refused`` (nobody through the gateway)."""

    need: str
    subjects: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (kind, where its id sits: path parameter, query or body field)
    search: str | None = None  # a search, narrowed to what the caller may read
    creates: str | None = None  # an experiment or registered model: its owner is recorded
    default: bool = False  # its experiment_id 0 (or none) means the caller's own default experiment
    judges_source: bool = False  # a version's creation: its source must be readable by its creator
    links: tuple[tuple[str, tuple[str, ...]], ...] = ()  # objects tied to the subjects: the caller must read them

    @property
    def scope(self) -> str | None:
        return {PUBLIC_: None, OPEN: READ, READS: READ, WRITES: REGISTER}.get(self.need, ADMIN)


def _a(need: str, *subjects, **kw) -> Access:
    return Access(need, tuple((kind, tuple(fields)) for kind, *fields in subjects), **kw)


_RUN_ID = (RUN, "run_id", "run_uuid")
_EXP_ID = (EXPERIMENT, "experiment_id")
_RM = (REGISTERED_MODEL, "name")
_MODEL = (LOGGED_MODEL, "model_id")
_PATH = (ARTIFACT, "artifact_path")
_ADMIN = _a(OPERATOR)

# (method, path after api/ or ajax-api/, MLflow's own notation for parameters) -> Access. Both
# prefixes are the same route: GraphQL and ajax-api/ answer as api/ does.
_API = {
    # artifacts: judged by the experiment their path starts with (mlflow-artifacts:/<exp>/<run>/...)
    ("GET", "2.0/mlflow-artifacts/artifacts"): _a(READS, (ARTIFACT, "path")),
    ("GET", "2.0/mlflow-artifacts/artifacts/<path:artifact_path>"): _a(READS, _PATH),
    ("PUT", "2.0/mlflow-artifacts/artifacts/<path:artifact_path>"): _a(WRITES, _PATH),
    ("DELETE", "2.0/mlflow-artifacts/artifacts/<path:artifact_path>"): _a(WRITES, _PATH),
    ("POST", "2.0/mlflow-artifacts/mpu/abort/<path:artifact_path>"): _a(WRITES, _PATH),
    ("POST", "2.0/mlflow-artifacts/mpu/complete/<path:artifact_path>"): _a(WRITES, _PATH),
    ("POST", "2.0/mlflow-artifacts/mpu/create/<path:artifact_path>"): _a(WRITES, _PATH),
    ("GET", "2.0/mlflow-artifacts/presigned/<path:artifact_path>"): _ADMIN,
    ("GET", "2.0/mlflow/artifacts/list"): _a(READS, _RUN_ID),
    ("POST", "2.0/mlflow/artifacts/presigned-download-url"): _ADMIN,
    ("POST", "2.0/mlflow/artifacts/presigned-upload-url"): _ADMIN,
    ("POST", "2.0/mlflow/upload-artifact"): _ADMIN,
    # experiments
    ("POST", "2.0/mlflow/experiments/create"): _a(WRITES, creates=EXPERIMENT),
    ("POST", "2.0/mlflow/experiments/delete"): _a(WRITES, _EXP_ID),
    ("POST", "2.0/mlflow/experiments/restore"): _a(WRITES, _EXP_ID),
    ("POST", "2.0/mlflow/experiments/update"): _a(WRITES, _EXP_ID),
    ("POST", "2.0/mlflow/experiments/set-experiment-tag"): _a(WRITES, _EXP_ID),
    ("POST", "2.0/mlflow/experiments/delete-experiment-tag"): _a(WRITES, _EXP_ID),
    ("GET", "2.0/mlflow/experiments/get"): _a(READS, _EXP_ID),
    ("GET", "2.0/mlflow/experiments/get-by-name"): _a(READS, search=GET_BY_NAME),
    ("GET", "2.0/mlflow/experiments/search"): _a(READS, search=SEARCH_EXPERIMENTS),
    ("POST", "2.0/mlflow/experiments/search"): _a(READS, search=SEARCH_EXPERIMENTS),
    ("POST", "2.0/mlflow/experiments/search-datasets"): _a(READS, (EXPERIMENT, "experiment_ids")),
    ("POST", "2.0mlflow/experiments/search-datasets"): _a(REFUSED),  # MLflow's typo of the route above
    # runs and their metrics
    ("POST", "2.0/mlflow/runs/create"): _a(WRITES, _EXP_ID, default=True),
    ("POST", "2.0/mlflow/runs/create-promptlab-run"): _a(WRITES, _EXP_ID),
    ("GET", "2.0/mlflow/runs/get"): _a(READS, _RUN_ID),
    ("POST", "2.0/mlflow/runs/search"): _a(READS, search=SEARCH_RUNS),
    **{("POST", f"2.0/mlflow/runs/{verb}"): _a(WRITES, _RUN_ID) for verb in (
        "delete", "restore", "update", "set-tag", "delete-tag", "log-batch", "log-metric", "log-model", "log-parameter")},
    # a run's inputs and outputs link logged models to it: each must be one the caller may read
    **{("POST", f"2.0/mlflow/runs/{verb}"): _a(WRITES, _RUN_ID, links=((LOGGED_MODEL, ("models.model_id",)),))
       for verb in ("log-inputs", "outputs")},
    ("GET", "2.0/mlflow/metrics/get-history"): _a(READS, _RUN_ID),
    ("GET", "2.0/mlflow/metrics/get-history-bulk"): _a(READS, _RUN_ID),
    ("GET", "2.0/mlflow/metrics/get-history-bulk-interval"): _a(READS, (RUN, "run_ids")),
    # logged models
    ("POST", "2.0/mlflow/logged-models"): _a(WRITES, _EXP_ID, default=True),
    ("POST", "2.0/mlflow/logged-models/search"): _a(READS, search=SEARCH_LOGGED_MODELS),
    ("GET", "2.0/mlflow/logged-models/<model_id>"): _a(READS, _MODEL),
    ("DELETE", "2.0/mlflow/logged-models/<model_id>"): _a(WRITES, _MODEL),
    ("PATCH", "2.0/mlflow/logged-models/<model_id>"): _a(WRITES, _MODEL),
    ("GET", "2.0/mlflow/logged-models/<model_id>/artifacts/directories"): _a(READS, _MODEL),
    ("GET", "2.0/mlflow/logged-models/<model_id>/artifacts/files"): _a(READS, _MODEL),  # mlflow#21708
    ("POST", "2.0/mlflow/logged-models/<model_id>/params"): _a(WRITES, _MODEL),
    ("PATCH", "2.0/mlflow/logged-models/<model_id>/tags"): _a(WRITES, _MODEL),
    ("DELETE", "2.0/mlflow/logged-models/<model_id>/tags/<tag_key>"): _a(WRITES, _MODEL),
    # registered models and their versions
    ("POST", "2.0/mlflow/registered-models/create"): _a(WRITES, creates=REGISTERED_MODEL),
    ("DELETE", "2.0/mlflow/registered-models/delete"): _ADMIN,
    ("GET", "2.0/mlflow/registered-models/get"): _a(READS, _RM),
    ("GET", "2.0/mlflow/registered-models/get-latest-versions"): _a(READS, _RM),
    ("POST", "2.0/mlflow/registered-models/get-latest-versions"): _a(READS, _RM),
    ("GET", "2.0/mlflow/registered-models/search"): _a(READS, search=SEARCH_REGISTERED_MODELS),
    ("POST", "2.0/mlflow/registered-models/rename"): _a(WRITES, _RM),
    ("POST", "2.0/mlflow/registered-models/set-tag"): _a(WRITES, _RM),
    ("DELETE", "2.0/mlflow/registered-models/delete-tag"): _a(WRITES, _RM),
    ("PATCH", "2.0/mlflow/registered-models/update"): _a(WRITES, _RM),
    ("GET", "2.0/mlflow/registered-models/alias"): _a(READS, _RM),
    ("POST", "2.0/mlflow/registered-models/alias"): _a(WRITES, _RM),
    ("DELETE", "2.0/mlflow/registered-models/alias"): _a(WRITES, _RM),
    ("POST", "2.0/mlflow/model-versions/create"): _a(WRITES, _RM, judges_source=True),
    ("DELETE", "2.0/mlflow/model-versions/delete"): _a(WRITES, _RM),
    ("DELETE", "2.0/mlflow/model-versions/delete-tag"): _a(WRITES, _RM),
    ("POST", "2.0/mlflow/model-versions/set-tag"): _a(WRITES, _RM),
    ("POST", "2.0/mlflow/model-versions/transition-stage"): _a(WRITES, _RM),
    ("PATCH", "2.0/mlflow/model-versions/update"): _a(WRITES, _RM),
    ("GET", "2.0/mlflow/model-versions/get"): _a(READS, _RM),
    ("GET", "2.0/mlflow/model-versions/get-download-uri"): _a(READS, _RM),
    ("GET", "2.0/mlflow/model-versions/search"): _a(READS, search=SEARCH_MODEL_VERSIONS),
    # traces (v2 by request id, v3 by trace id): judged by their experiment
    ("GET", "2.0/mlflow/traces"): _a(READS, search=SEARCH_TRACES_V2),
    ("POST", "2.0/mlflow/traces"): _a(WRITES, _EXP_ID),
    ("PATCH", "2.0/mlflow/traces/<request_id>"): _a(WRITES, (TRACE, "request_id")),
    ("GET", "2.0/mlflow/traces/<request_id>/info"): _a(READS, (TRACE, "request_id")),
    ("PATCH", "2.0/mlflow/traces/<request_id>/tags"): _a(WRITES, (TRACE, "request_id")),
    ("DELETE", "2.0/mlflow/traces/<request_id>/tags"): _a(WRITES, (TRACE, "request_id")),
    ("POST", "2.0/mlflow/traces/delete-traces"): _a(WRITES, _EXP_ID),
    ("POST", "2.0/mlflow/traces/link-to-run"): _a(WRITES, _RUN_ID, (TRACE, "trace_ids")),
    ("POST", "2.0/mlflow/traces/link-prompts"): _ADMIN,  # prompts are registered models of their own
    ("GET", "2.0/mlflow/get-trace-artifact"): _a(READS, (TRACE, "request_id")),
    ("GET", "3.0/mlflow/get-trace-artifact"): _a(READS, (TRACE, "request_id")),
    ("POST", "3.0/mlflow/traces"): _a(WRITES, (EXPERIMENT, "trace.trace_info.trace_location.mlflow_experiment.experiment_id")),
    ("GET", "3.0/mlflow/traces/<trace_id>"): _a(READS, (TRACE, "trace_id")),
    ("GET", "3.0/mlflow/traces/get"): _a(READS, (TRACE, "trace_id")),
    ("GET", "3.0/mlflow/traces/batchGet"): _a(READS, (TRACE, "trace_ids")),
    ("POST", "3.0/mlflow/traces/batchGetInfos"): _a(READS, (TRACE, "trace_ids")),
    ("POST", "3.0/mlflow/traces/search"): _a(READS, search=SEARCH_TRACES_V3),
    ("POST", "3.0/mlflow/traces/metrics"): _a(READS, (EXPERIMENT, "experiment_ids")),
    ("POST", "3.0/mlflow/traces/calculate-filter-correlation"): _a(READS, (EXPERIMENT, "experiment_ids")),
    ("POST", "3.0/mlflow/traces/delete-traces"): _a(WRITES, _EXP_ID),
    ("PATCH", "3.0/mlflow/traces/<trace_id>/tags"): _a(WRITES, (TRACE, "trace_id")),
    ("DELETE", "3.0/mlflow/traces/<trace_id>/tags"): _a(WRITES, (TRACE, "trace_id")),
    ("POST", "3.0/mlflow/traces/<trace_id>/assessments"): _a(WRITES, (TRACE, "trace_id")),
    ("GET", "3.0/mlflow/traces/<trace_id>/assessments/<assessment_id>"): _a(READS, (TRACE, "trace_id")),
    ("PATCH", "3.0/mlflow/traces/<trace_id>/assessments/<assessment_id>"): _a(WRITES, (TRACE, "trace_id")),
    ("DELETE", "3.0/mlflow/traces/<trace_id>/assessments/<assessment_id>"): _a(WRITES, (TRACE, "trace_id")),
    # what names no object
    ("GET", "3.0/mlflow/server-info"): _a(OPEN),
    ("GET", "3.0/mlflow/ui-telemetry"): _a(OPEN),
    ("POST", "3.0/mlflow/ui-telemetry"): _a(OPEN),
}
# Whole families with no owner of ours (the AI gateway's endpoints, secrets and budgets, datasets,
# scorers, issues, jobs, MCP servers, review queues, workspaces, webhooks...): operators only.
# The assistant runs tools on the server's host: MLflow serves it to localhost alone, and so
# the gateway serves it to nobody.
_API_FAMILIES = (
    ("3.0/mlflow/assistant/", REFUSED),
    *((family, OPERATOR) for family in (
        "2.0/mlflow/webhooks", "2.0/mlflow/gateway-proxy", "2.0/mlflow/unified-traces", "2.0/mlflow/get-online-trace-details",
        "3.0/mlflow/datasets", "3.0/mlflow/gateway/", "3.0/mlflow/issues", "3.0/mlflow/label-schemas/",
        "3.0/mlflow/mcp-servers", "3.0/mlflow/prompt-optimization/", "3.0/mlflow/review-queues/", "3.0/mlflow/scorers/",
        "3.0/mlflow/workspaces", "3.0/mlflow/jobs", "3.0/jobs", "3.0/mlflow/demo/", "3.0/mlflow/genai/",
        "3.0/mlflow/scorer/")),
)
# Outside api/ and ajax-api/.
_ROOT = {
    ("GET", "health"): _a(PUBLIC_), ("GET", "version"): _a(PUBLIC_),
    ("GET", ""): _a(OPEN), ("GET", "static-files/<path:path>"): _a(OPEN), ("GET", "build/<path:filename>"): _a(OPEN),
    ("GET", "get-artifact"): _a(READS, _RUN_ID),
    ("GET", "model-versions/get-artifact"): _a(READS, _RM),
    # GraphQL resolves runs, experiments, artifacts and model versions inside one query (its nested
    # modelVersions leaked in mlflow#25905): each field judged as its REST route (gateway.graphql).
    ("GET", "graphql"): _a(READS, search=GRAPHQL), ("POST", "graphql"): _a(READS, search=GRAPHQL),
    ("POST", "v1/traces"): _ADMIN,  # OTLP: spans for any experiment, named in a header
}
_ROOT_FAMILIES = (("gateway/", OPERATOR),)


def _pattern(template: str) -> re.Pattern:
    out, last = [], 0
    for m in re.finditer(r"<(?:(\w+):)?(\w+)>|\{(\w+)(?::(\w+))?\}", template):
        out.append(re.escape(template[last:m.start()]))
        name = m.group(2) or m.group(3)
        wide = (m.group(1) or m.group(4)) == "path"
        out.append(f"(?P<{name}>{'.*' if wide else '[^/]+'})")
        last = m.end()
    out.append(re.escape(template[last:]))
    return re.compile("".join(out))


def _compile(table: dict):
    exact = {k: v for k, v in table.items() if "<" not in k[1] and "{" not in k[1]}
    patterned = [(method, _pattern(template), access) for (method, template), access in table.items()
                 if (method, template) not in exact]
    return exact, patterned


_API_EXACT, _API_PATTERNED = _compile(_API)
_ROOT_EXACT, _ROOT_PATTERNED = _compile(_ROOT)


def access_of(method: str, path: str) -> tuple[Access, dict[str, str]] | None:
    """What ``method path`` (as MLflow reads it) is, and its path parameters; None: refused, as an
    unknown route. HEAD is judged as GET."""
    method = "GET" if method == "HEAD" else method
    path = path.strip("/")
    if "//" in path:
        path = _SLASHES.sub("/", path)
    head, _, rest = path.partition("/")
    if head in ("api", "ajax-api"):
        exact, patterned, families, path = _API_EXACT, _API_PATTERNED, _API_FAMILIES, rest
    else:
        exact, patterned, families = _ROOT_EXACT, _ROOT_PATTERNED, _ROOT_FAMILIES
    found = exact.get((method, path))
    if found is not None:
        return found, {}
    for m, pattern, access in patterned:
        if m == method and (match := pattern.fullmatch(path)):
            return access, match.groupdict()
    for family, need in families:
        if path.startswith(family):
            return Access(need), {}
    return None
