"""MLflow's GraphQL (``/graphql``, which the MLflow UI's run page reads) for a key that is not an
operator's: each field answers as its REST route does through the gateway.

The request is read as MLflow reads it, parsed and validated against MLflow's own schema
(``mlflow_schema.graphql``: the installed MLflow's, which tests/webhook_app/test_gateway_graphql.py
compares) with graphql-core, the library MLflow answers it with. Then every root field the chosen
operation runs (aliases, fragments and ``@skip``/``@include`` as MLflow's executor sees them) is
judged by the rule of its REST route (``FIELDS``; its ``input`` holds that route's fields, in
camelCase) through ``judge``:

- a field that names an object the caller may not see never reaches MLflow: it answers ``null``
  with api/'s refusal in ``errors``, as MLflow answers one that does not exist;
- a search is narrowed before the query as its REST search is; one with nothing visible answers
  MLflow's empty page;
- a run's ``modelVersions`` (reached through ``mlflowGetRun`` and ``mlflowSearchRuns``) are versions of
  any registered model (mlflow#25905): those of models the caller may not read are left out of
  MLflow's answer, as api/'s narrowed version search leaves them out (the list is whole, never paged);
- introspection (``__schema``, ``__type``) and a root field not in ``FIELDS`` are refused: the MLflow
  UI asks neither.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from graphql import (
    ArgumentNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLObjectType,
    NameNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Visitor,
    build_schema,
    get_named_type,
    get_nullable_type,
    get_operation_ast,
    is_list_type,
    is_object_type,
    parse,
    print_ast,
    validate,
    visit,
)
from graphql.execution.collect_fields import collect_fields, collect_sub_fields
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.pyutils import camel_to_snake, snake_to_camel
from graphql.utilities import ast_from_value
from multidict import CIMultiDict, MultiDict
from yarl import URL

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.core.errors import FORBIDDEN, NOT_FOUND, HokusaiError
from hokusai_mlflow_plugin.db.models import REGISTERED_MODEL as OWNED_MODEL
from webhook_app import problem_details
import webhook_app.gateway.judge as judge
from webhook_app.gateway.scopes import access_of

SCHEMA = build_schema(Path(__file__).with_name("mlflow_schema.graphql").read_text(encoding="utf-8"))

# Every root field of MLflow's schema, and the REST route whose rule judges it; None: names no
# object (an echo). A field that is not here is refused.
FIELDS = {
    ("Query", "mlflowGetExperiment"): ("GET", "api/2.0/mlflow/experiments/get"),
    ("Query", "mlflowGetRun"): ("GET", "api/2.0/mlflow/runs/get"),
    ("Query", "mlflowListArtifacts"): ("GET", "api/2.0/mlflow/artifacts/list"),
    ("Query", "mlflowGetMetricHistoryBulkInterval"): ("GET", "api/2.0/mlflow/metrics/get-history-bulk-interval"),
    ("Query", "mlflowSearchModelVersions"): ("GET", "api/2.0/mlflow/model-versions/search"),
    ("Query", "mlflowSearchRuns"): ("POST", "api/2.0/mlflow/runs/search"),
    ("Mutation", "mlflowSearchRuns"): ("POST", "api/2.0/mlflow/runs/search"),
    ("Mutation", "mlflowSearchDatasets"): ("POST", "api/2.0/mlflow/experiments/search-datasets"),
    ("Query", "test"): None,
    ("Mutation", "testMutation"): None,
}
_ACCESS = {route: access_of(*route)[0] for route in FIELDS.values() if route is not None}
# Fields below the root that reach objects other than the one their root field judged: each item
# is kept only if the caller may read its registered model (by its name). Every other field below
# the root is a part of the object judged (a run's info, data, inputs, outputs, its experiment).
NESTED = frozenset({("MlflowRunExtension", "modelVersions")})
INTROSPECTION = frozenset({"__schema", "__type"})
NAME = "hokusaiRegisteredModelName"  # the alias a version's name is asked under when the query did not ask it

LIMIT = 1024 * 1024  # the most of a GraphQL request read (the UI's are a few KiB)
MAX_TOKENS = 20_000  # the most of a query parsed
MAX_ROOT_FIELDS = 10  # as MLflow (MLFLOW_SERVER_GRAPHQL_MAX_ROOT_FIELDS's default): what is judged is bounded


def _reaching() -> frozenset[str]:
    """The object types from which a ``NESTED`` field can be reached: only those are walked."""
    found = {parent for parent, _ in NESTED}
    while True:
        more = {t.name for t in SCHEMA.type_map.values() if is_object_type(t) and t.name not in found
                and any(get_named_type(f.type).name in found for f in t.fields.values())}
        if not more:
            return frozenset(found)
        found |= more


_REACHING = _reaching()


@dataclass
class Plan:
    """A request as MLflow would run it: the operation chosen, its variables as sent and as coerced,
    and the root fields it resolves (response key -> the field's nodes)."""

    operation: OperationDefinitionNode
    root: GraphQLObjectType
    fragments: dict[str, FragmentDefinitionNode]
    variables: dict
    coerced: dict
    fields: dict[str, list[FieldNode]]
    operation_name: str | None
    hidden: dict[str, str] = field(default_factory=dict)  # response key -> api/'s refusal
    pages: dict[str, dict] = field(default_factory=dict)  # response key -> an empty page, answered here
    changed: bool = False  # a field's input narrowed, or a version's name asked


async def answer(gateway, caller: keys.Caller, request: web.Request, headers: CIMultiDict, url: URL) -> web.StreamResponse:
    """The answer to ``request`` (``/graphql``) for ``caller``, judged field by field. Timeouts and
    MLflow's connection errors are the proxy's to answer."""
    raw = await _read(request)
    if isinstance(raw, web.Response):
        return raw
    plan = planned(raw)
    if isinstance(plan, web.Response):
        return plan
    refusal = await _judge(gateway, caller, plan)
    if refusal is not None:
        return refusal
    kept = {k: nodes for k, nodes in plan.fields.items() if k not in plan.hidden and k not in plan.pages}
    versions = _nested(plan, kept, plan.root, ())
    if not kept:
        return _merged(plan, {}, None)
    if plan.hidden or plan.pages or plan.changed:
        document, used = _document(plan, kept)
        raw = json.dumps({"query": print_ast(document), "operationName": plan.operation_name,
                          "variables": {k: v for k, v in plan.variables.items() if k in used}}).encode()
    headers["Content-Type"] = "application/json"
    headers["Content-Length"] = str(len(raw))
    headers["Accept-Encoding"] = "identity"  # the answer is read
    async with gateway.session.request(request.method, url, data=raw, headers=headers, allow_redirects=False) as upstream:
        body = await upstream.read()
        status, media = upstream.status, upstream.headers.get("Content-Type", "application/json")
    found = _json(body) if status == 200 else None
    if not (plan.hidden or plan.pages or versions) or not isinstance(found, dict) or not isinstance(found.get("data"), dict):
        return web.Response(status=status, body=body, headers={"Content-Type": media})  # as MLflow answered
    visible = set(await gateway.owners.visible(caller, OWNED_MODEL) or []) if versions else set()
    for path, name in versions:
        _keep_readable(found["data"], path, name, visible)
    return _merged(plan, found["data"], found.get("errors"))


# -- reading the request as MLflow reads it -----------------------------------------------------------


async def _read(request: web.Request) -> bytes | web.Response:
    if request.method == "POST" and request.content_type != "application/json":
        return _problem(415, "Bad Request. Content-Type must be one of ['application/json']: send the GraphQL request "
                             "as a JSON object.")
    raw = await judge.read_whole(request, LIMIT)
    if raw is None:
        return _problem(413, f"The GraphQL request is larger than {LIMIT // 1024} KiB: send a smaller query.")
    return raw


def planned(raw: bytes) -> Plan | web.Response:
    """What MLflow would run for ``raw``; MLflow's own answer (200, ``errors``) to a query that does
    not validate against its schema; a 400 for a body it could not read."""
    body = _json(raw)
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return _problem(400, 'The body must be one JSON object {"query": "...", "variables": {...}, "operationName": "..."} '
                             "(MLflow answers one GraphQL request per call, never a batch).")
    variables, operation_name = body.get("variables"), body.get("operationName")
    variables = {} if variables is None else variables
    if not isinstance(variables, dict) or not (operation_name is None or isinstance(operation_name, str)):
        return _problem(400, "'variables' must be a JSON object and 'operationName' a string, where they are given.")
    try:
        document = parse(body["query"], no_location=True, max_tokens=MAX_TOKENS)
    except GraphQLError as e:
        return _problem(400, f"The GraphQL query does not parse: {e.message}")
    errors = validate(SCHEMA, document, max_errors=10)
    if errors:
        return _graphql_errors([e.message for e in errors])
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return _problem(400, "Name the operation to run in 'operationName': the query holds several, or none of that name.")
    coerced = get_variable_values(SCHEMA, operation.variable_definitions or (), variables, max_errors=10)
    if isinstance(coerced, list):
        return _graphql_errors([e.message for e in coerced])
    root = SCHEMA.get_root_type(operation.operation)
    if root is None:
        return _problem(400, f"MLflow's GraphQL has no {operation.operation.value} operations: send a query or a mutation.")
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    fields = collect_fields(SCHEMA, fragments, coerced, root, operation.selection_set)
    if len(fields) > MAX_ROOT_FIELDS:
        return _problem(400, f"The query asks {len(fields)} root fields: MLflow answers at most {MAX_ROOT_FIELDS}. "
                             "Send it in several requests.")
    return Plan(operation, root, fragments, variables, coerced, fields, operation_name)


# -- judging ---------------------------------------------------------------------------------------------


async def _judge(gateway, caller: keys.Caller, plan: Plan) -> web.Response | None:
    """Each root field judged by its REST route's rule: ``plan`` says what is hidden, what answers an
    empty page and which inputs were narrowed; a refusal of the whole request, or None."""
    for key, nodes in plan.fields.items():
        name = nodes[0].name.value
        if name == "__typename":
            continue
        if name in INTROSPECTION:
            return _problem(403, "GraphQL introspection (__schema, __type) is answered to operators' keys only: the MLflow "
                                 "UI does not ask it. The schema is MLflow's own (mlflow/server/graphql).")
        if (plan.root.name, name) not in FIELDS:
            return _problem(403, f"The GraphQL field {plan.root.name}.{name} is not served through the gateway.")
        route = FIELDS[(plan.root.name, name)]
        if route is None:
            continue
        definition = plan.root.fields[name]
        given = get_argument_values(definition, nodes[0], plan.coerced).get("input") or {}
        req = judge.Request({camel_to_snake(k): v for k, v in given.items()}, MultiDict(), {}, in_body=True)
        outcome = await judge.judge(gateway, caller, _ACCESS[route], req)
        if isinstance(outcome, HokusaiError):
            if outcome.kind not in (NOT_FOUND, FORBIDDEN):
                return _problem_of(outcome)  # the token database is down: the whole request, as api/ answers it
            plan.hidden[key] = str(outcome)
        elif outcome is not None:
            plan.pages[key] = _empty_page(plan, definition, nodes)
        elif req.changed_body:
            _set_input(nodes, definition, {snake_to_camel(k, upper=False): v for k, v in req.payload.items()})
            plan.changed = True
    return None


def _set_input(nodes: list[FieldNode], definition, value: dict) -> None:
    literal = ArgumentNode(name=NameNode(value="input"), value=ast_from_value(value, definition.args["input"].type))
    for node in nodes:
        node.arguments = (*(a for a in node.arguments or () if a.name.value != "input"), literal)


def _empty_page(plan: Plan, definition, nodes: list[FieldNode]) -> dict:
    """MLflow's answer to a search that finds nothing, in the shape the query asked."""
    page_type = get_named_type(definition.type)
    page = {}
    for key, sub in collect_sub_fields(SCHEMA, plan.fragments, plan.coerced, page_type, nodes).items():
        name = sub[0].name.value
        if name == "__typename":
            page[key] = page_type.name
            continue
        kind = get_nullable_type(page_type.fields[name].type)
        page[key] = [] if is_list_type(kind) else "" if get_named_type(kind).name == "String" else None
    return page


def _nested(plan: Plan, fields: dict[str, list[FieldNode]], parent: GraphQLObjectType, path: tuple) -> list[tuple[tuple, str]]:
    """Where the answer holds ``NESTED`` lists (response keys; ``*`` for each item of a list), and the
    key of each version's name in them (asked under ``NAME`` where the query did not ask it)."""
    found = []
    for key, nodes in fields.items():
        name = nodes[0].name.value
        if name.startswith("__"):
            continue
        kind = parent.fields[name].type
        child = get_named_type(kind)
        if (parent.name, name) in NESTED:
            sub = collect_sub_fields(SCHEMA, plan.fragments, plan.coerced, child, nodes)
            asked = next((k for k, n in sub.items() if n[0].name.value == "name"), None)
            if asked is None:
                asked = NAME
                ask = FieldNode(alias=NameNode(value=NAME), name=NameNode(value="name"), arguments=(), directives=())
                for node in nodes:
                    node.selection_set = SelectionSetNode(selections=(*node.selection_set.selections, ask))
                plan.changed = True
            found.append(((*path, key), asked))
        elif is_object_type(child) and child.name in _REACHING:
            here = (*path, key, "*") if is_list_type(get_nullable_type(kind)) else (*path, key)
            found += _nested(plan, collect_sub_fields(SCHEMA, plan.fragments, plan.coerced, child, nodes), child, here)
    return found


def _keep_readable(value, path: tuple, name: str, visible: set[str]) -> None:
    """Leave out of the list at ``path`` the versions of registered models not in ``visible``."""
    if isinstance(value, list) and path and path[0] == "*":
        for item in value:
            _keep_readable(item, path[1:], name, visible)
        return
    if not isinstance(value, dict) or not path:
        return
    if len(path) > 1:
        _keep_readable(value.get(path[0]), path[1:], name, visible)
        return
    versions = value.get(path[0])
    if isinstance(versions, list):
        kept = [v for v in versions if isinstance(v, dict) and v.get(name) in visible]
        if name == NAME:
            for v in kept:
                v.pop(NAME, None)
        value[path[0]] = kept


# -- what goes to MLflow, and what comes back ----------------------------------------------------------


class _Uses(Visitor):
    def __init__(self):
        super().__init__()
        self.fragments: set[str] = set()
        self.variables: set[str] = set()

    def enter_fragment_spread(self, node, *_):
        self.fragments.add(node.name.value)

    def enter_variable(self, node, *_):
        self.variables.add(node.name.value)


def _document(plan: Plan, kept: dict[str, list[FieldNode]]) -> tuple[DocumentNode, set[str]]:
    """The operation with its kept root fields only (each as MLflow would resolve it), the fragments
    they use, and the variables still used (definitions no longer used are dropped: MLflow refuses them)."""
    op = plan.operation
    uses = _Uses()
    selection = SelectionSetNode(selections=tuple(node for nodes in kept.values() for node in nodes))
    visit(selection, uses)
    for directive in op.directives or ():
        visit(directive, uses)
    fragments, seen = [], set()
    while uses.fragments - seen:
        name = sorted(uses.fragments - seen)[0]
        seen.add(name)
        fragments.append(plan.fragments[name])
        visit(plan.fragments[name], uses)
    definitions = tuple(d for d in op.variable_definitions or () if d.variable.name.value in uses.variables)
    operation = OperationDefinitionNode(operation=op.operation, name=op.name, variable_definitions=definitions,
                                        directives=op.directives or (), selection_set=selection)
    return DocumentNode(definitions=(operation, *fragments)), uses.variables


def _merged(plan: Plan, data: dict, errors) -> web.Response:
    """MLflow's answer (``data``, ``errors``) with the fields answered here put back in the query's order."""
    out = {}
    for key in plan.fields:
        if key in plan.hidden:
            out[key] = None
        elif key in plan.pages:
            out[key] = plan.pages[key]
        elif key in data:
            out[key] = data[key]
    errors = [*(errors if isinstance(errors, list) else []), *plan.hidden.values()]
    return web.json_response({"data": out, "errors": errors or None})


def _json(raw: bytes):
    try:
        return json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        return None


def _graphql_errors(messages: list[str]) -> web.Response:
    """MLflow's own answer to a request that does not validate: 200, no data, its messages."""
    return web.json_response({"data": None, "errors": messages})


def _problem(status: int, detail: str) -> web.Response:
    return web.json_response(problem_details.problem_body(status, detail), status=status, content_type=problem_details.MEDIA_TYPE)


def _problem_of(error: HokusaiError) -> web.Response:
    status, body, headers = problem_details.of_error(error)
    return web.json_response(body, status=status, headers=headers, content_type=problem_details.MEDIA_TYPE)
