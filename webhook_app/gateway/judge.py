"""A request on MLflow's objects, judged for a caller that is not an operator: each object it names
is found where MLflow reads it (``scopes.Access``) and asked about (``owners`` ->
``auth.mlflow_objects``); searches are narrowed before the query; a run, logged model or trace put
in MLflow's Default experiment goes to the caller's own default experiment.

``await judge(...)`` returns None (go on: ``payload`` and ``query`` may have been narrowed), or the
answer that ends the request: a refusal (a ``HokusaiError``), or a search's empty page when nothing is visible."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDict

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.auth import mlflow_objects as objects
from hokusai_mlflow_plugin.auth.ownership import SOURCE, sources
from hokusai_mlflow_plugin.core import tags
from hokusai_mlflow_plugin.core.errors import FORBIDDEN, NOT_FOUND, UNAVAILABLE, HokusaiError
from hokusai_mlflow_plugin.db.models import EXPERIMENT as OWNED_EXPERIMENT
from hokusai_mlflow_plugin.db.models import MADE_LOGGED_MODEL, MADE_RUN
from hokusai_mlflow_plugin.db.models import REGISTERED_MODEL as OWNED_MODEL
import webhook_app.gateway.scopes as scopes
from webhook_app.gateway.scopes import Access

_KIND_OF = {scopes.RUN: MADE_RUN, scopes.LOGGED_MODEL: MADE_LOGGED_MODEL, scopes.TRACE: "trace"}
_NOUNS = {scopes.RUN: "run", scopes.LOGGED_MODEL: "logged model", scopes.TRACE: "trace"}
# Where MLflow says which experiment an object is in, when the gateway has no record of it.
_LOOKUP = {
    MADE_RUN: ("api/2.0/mlflow/runs/get", "run_id", ("run", "info", "experiment_id")),
    MADE_LOGGED_MODEL: ("api/2.0/mlflow/logged-models/{id}", None, ("model", "info", "experiment_id")),
    "trace": ("api/3.0/mlflow/traces/{id}", None, ("trace", "trace_info", "trace_location", "mlflow_experiment", "experiment_id")),
}


def empty_page() -> web.Response:
    return web.json_response({})  # MLflow's own answer to a search that finds nothing


async def read_whole(request: web.Request, limit: int) -> bytes | None:
    """A request's body read whole, or None when it is larger than ``limit`` bytes (read no further)."""
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class Request:
    """What is judged: the body as MLflow reads it, and the query (both may be narrowed)."""

    def __init__(self, payload, query: MultiDict, params: dict[str, str], in_body: bool):
        self.payload = payload if isinstance(payload, dict) else {}
        self.in_body = in_body  # MLflow reads this request's fields from its body (else its query)
        self.query = query
        self.params = params
        self.changed_body = False
        self.changed_query = False

    def values(self, fields: tuple[str, ...]) -> list[str]:
        """Every value that ``fields`` hold in the path, the body or the query (a list counts each)."""
        found: list = []
        for name in fields:
            if name in self.params:
                found.append(self.params[name])
                continue
            nodes = [self.payload]
            for part in name.split("."):  # a list on the way counts each of its items (models.model_id)
                nodes = [n.get(part) for n in nodes if isinstance(n, dict)]
                nodes = [i for n in nodes for i in (n if isinstance(n, list) else [n]) if i is not None]
            found += nodes
            found += self.query.getall(name, [])
        return [str(v) for v in found]


async def judge(gateway, caller: keys.Caller, access: Access, req: Request) -> web.Response | HokusaiError | None:
    owners = gateway.owners
    need = objects.EDIT if access.need == scopes.WRITES else objects.READ
    try:
        if access.default:
            await _default_experiment(gateway, caller, req)
        for kind, fields in access.subjects:
            values = req.values(fields)
            if not values and kind == scopes.ARTIFACT:
                values = [""]  # the root of the artifact store lists every experiment
            for value in values:
                experiment = await _experiment_of(gateway, kind, value)
                if kind == scopes.REGISTERED_MODEL:
                    await _require(owners, caller, OWNED_MODEL, value, need)
                else:
                    await _require(owners, caller, OWNED_EXPERIMENT, experiment, need, named=(kind, value))
        for kind, fields in access.links:  # linked to what is written: read is enough, hidden is a 404
            for value in req.values(fields):
                await _require(owners, caller, OWNED_EXPERIMENT, await _experiment_of(gateway, kind, value), objects.READ,
                               named=(kind, value))
        if access.creates == scopes.EXPERIMENT and req.payload.get("artifact_location"):
            raise HokusaiError("An experiment's artifact location is chosen by the server: leave artifact_location out "
                               "(only an operator's key may set it).", FORBIDDEN)
        if access.judges_source:
            await _readable_sources(gateway, caller, req.payload)
        if access.search:
            return await _narrow(owners, caller, access.search, req)
    except HokusaiError as e:
        return e  # the proxy answers it as a problem
    return None


async def _require(owners, caller, kind: str, object_id: str | None, need: int, named: tuple[str, str] | None = None) -> None:
    """``need`` on the object (``kind``, ``object_id``); ``named``: what the request named (a run, a
    logged model, a trace) when it is judged by its experiment. Hidden, it is that one the refusal
    names, worded as a missing one is: the experiment of another team's run is never said."""
    have = await owners.right(caller, kind, object_id) if object_id else objects.NONE
    refusal = objects.judge(kind, object_id or "", have, need, caller)
    if refusal is not None and refusal.kind == NOT_FOUND and named is not None and named[0] in _NOUNS:
        raise objects.MlflowObjectError(f"No {_NOUNS[named[0]]} {named[1]}, or not one your key may see.", NOT_FOUND)
    if refusal is not None:
        raise refusal


async def _experiment_of(gateway, kind: str, value: str) -> str | None:
    """The experiment that owns ``value`` (of ``kind``); None when there is none to be found."""
    if kind == scopes.EXPERIMENT:
        return value
    if kind == scopes.ARTIFACT:
        # mlflow-artifacts:/<experiment id>/<run id>/artifacts/..., /<experiment id>/models/m-.../...
        first = value.strip("/").split("/", 1)[0]
        return first if first.isdigit() else None
    if kind == scopes.REGISTERED_MODEL:
        return None
    made = _KIND_OF[kind]
    found = await gateway.owners.recorded_experiment(made, value)
    if found is None:
        found = await _ask_mlflow(gateway, made, value)
        if found is not None:
            gateway.owners.learn(made, value, found)
    return found


async def _ask_mlflow(gateway, made: str, object_id: str) -> str | None:
    path, param, where = _LOOKUP[made]
    url = f"{gateway.internal}/{path.format(id=quote(object_id, safe=''))}"
    try:
        async with gateway.session.get(url, params={param: object_id} if param else None) as answer:
            if answer.status != 200:
                return None
            found = await answer.json(content_type=None)
    except Exception:  # noqa: BLE001 - MLflow unreachable: the object cannot be judged, so it is hidden
        return None
    for name in where:
        found = found.get(name) if isinstance(found, dict) else None
    return str(found) if found is not None else None


async def _default_experiment(gateway, caller, req: Request) -> None:
    """MLflow's Default experiment (id 0, or none named) is nobody's window: the caller's run goes
    to its owner's own default experiment, made at first use."""
    named = req.payload.get("experiment_id")
    if named not in (None, "", objects.DEFAULT_EXPERIMENT, 0):
        return
    owner, found, name = await gateway.owners.default_experiment(caller)
    if owner is None:
        return  # nobody to make one for: experiment 0 is then judged as it is (admins only)
    if found is None:
        found = await _make_default(gateway, caller, name)
    req.payload["experiment_id"] = found
    req.changed_body = True


async def _make_default(gateway, caller, name: str) -> str:
    for title in (f"Default ({name})", f"Default ({name}) {uuid.uuid4().hex[:6]}"):
        body = json.dumps({"name": title}).encode()
        async with gateway.session.post(f"{gateway.internal}/api/2.0/mlflow/experiments/create", data=body,
                                        headers={"Content-Type": "application/json"}) as answer:
            made = (await answer.json(content_type=None) if answer.status == 200 else {}) or {}
            made = made.get("experiment_id") if isinstance(made, dict) else None
            if made is not None:
                made = str(made)
                await gateway.owners.record_owner(OWNED_EXPERIMENT, made, caller, is_default=True)
                _, found, _ = await gateway.owners.default_experiment(caller)
                return found or made  # two workers at once: the first recorded stands
    raise HokusaiError(f"The default experiment of '{name}' could not be made in MLflow: set an experiment "
                       "(mlflow.set_experiment) and try again.", FORBIDDEN)


async def stamp_owner(gateway, name: str, owner: int | None) -> None:
    """Tag a registered model with its recorded owner (``auth.mlflow_objects``: what narrows its
    owner's searches), as MLflow's own answer to its creation goes back."""
    if owner is None:
        return
    body = json.dumps({"name": name, "key": tags.OWNER, "value": str(owner)}).encode()
    async with gateway.session.post(f"{gateway.internal}/api/2.0/mlflow/registered-models/set-tag", data=body,
                                    headers={"Content-Type": "application/json"}) as answer:
        if answer.status != 200:
            raise HokusaiError(f"The registered model '{name}' was made, but MLflow refused its owner's tag "
                               f"({answer.status}): its owner's searches may miss it until an operator runs "
                               "'hokusai mlflow tag-owners'.",
                               UNAVAILABLE)


async def _readable_sources(gateway, caller, payload: dict) -> None:
    """A version's source must be readable by its creator, as the run or logged model it names is."""
    source = payload.get("source")
    for kind, object_id in sources(payload.get("run_id") or None, None, source if isinstance(source, str) else None,
                                    payload.get("model_id") or None):
        if kind == SOURCE:
            experiment = await _experiment_of(gateway, scopes.ARTIFACT, object_id.removeprefix("mlflow-artifacts:"))
            if not object_id.startswith("mlflow-artifacts:/") or experiment is None:
                raise HokusaiError(f"The source {object_id} names no run, logged model or artifact of an experiment, so "
                                   "the gateway cannot tell who may read it: register from runs:/<run id>/..., "
                                   "models:/m-... or mlflow-artifacts:/... of an experiment you may read.", FORBIDDEN)
            named = None  # the path names its experiment
        else:
            named = (scopes.RUN if kind == MADE_RUN else scopes.LOGGED_MODEL, object_id)
            experiment = await _experiment_of(gateway, named[0], object_id)
        await _require(gateway.owners, caller, OWNED_EXPERIMENT, experiment, objects.READ, named=named)


# -- searches, narrowed before the query ----------------------------------------------------------------


def _quoted(values: list[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _plain(name: str) -> bool:
    """A name that MLflow's filter grammar takes inside quotes as it is."""
    return "'" not in name and "\\" not in name and '"' not in name


def _with_filter(req: Request, field: str, clause: str, in_body: bool) -> None:
    current = (req.payload.get(field) if in_body else req.query.get(field)) or ""
    combined = f"{clause} AND {current}" if current.strip() else clause
    if in_body:
        req.payload[field] = combined
        req.changed_body = True
    else:
        req.query[field] = combined
        req.changed_query = True


def _narrowed_ids(asked: list[str], visible: list[str]) -> list[str]:
    return [e for e in asked if e in set(visible)] if asked else list(visible)


async def _narrow(owners, caller, search: str, req: Request) -> web.Response | None:
    if search == scopes.GET_BY_NAME:
        return None  # judged on MLflow's answer (proxy)
    kind = OWNED_MODEL if search in (scopes.SEARCH_REGISTERED_MODELS, scopes.SEARCH_MODEL_VERSIONS) else OWNED_EXPERIMENT
    visible = await owners.visible(caller, kind)
    if visible is None:
        return None  # an operator's: everything
    if kind == OWNED_MODEL:
        visible = [n for n in visible if _plain(n)]
    if not visible:
        return empty_page()
    if search == scopes.SEARCH_EXPERIMENTS:
        _with_filter(req, "filter", f"attribute.experiment_id IN ({_quoted(visible)})", req.in_body)
    elif search == scopes.SEARCH_REGISTERED_MODELS and (owner := await owners.single_model_owner(caller)) is not None:
        # one owner's models, and they carry its tag: one short clause, where a list of names costs
        # MLflow about 1 ms a name to parse (BENCHMARKS.md)
        _with_filter(req, "filter", f"tags.{tags.OWNER} = '{owner}'", req.in_body)
    elif search in (scopes.SEARCH_REGISTERED_MODELS, scopes.SEARCH_MODEL_VERSIONS):
        _with_filter(req, "filter", f"name IN ({_quoted(visible)})", req.in_body)
    elif search in (scopes.SEARCH_RUNS, scopes.SEARCH_LOGGED_MODELS):
        ids = _narrowed_ids([str(e) for e in req.payload.get("experiment_ids") or []], visible)
        if not ids:
            return empty_page()
        req.payload["experiment_ids"] = ids
        req.changed_body = True
    elif search == scopes.SEARCH_TRACES_V2:
        ids = _narrowed_ids(req.query.getall("experiment_ids", []), visible)
        if not ids:
            return empty_page()
        req.query.popall("experiment_ids", None)
        for e in ids:
            req.query.add("experiment_ids", e)
        req.changed_query = True
    elif search == scopes.SEARCH_TRACES_V3:
        seen = set(visible)
        kept = [loc for loc in req.payload.get("locations") or [] if isinstance(loc, dict)
                and str((loc.get("mlflow_experiment") or {}).get("experiment_id")) in seen]
        if not kept:
            return empty_page()
        req.payload["locations"] = kept
        req.changed_body = True
    return None
