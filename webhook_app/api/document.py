"""The OpenAPI document as served: flask-openapi3's, finished in this one place with what it does
not say, derived from the app's own tables and never written out by hand:

- each component schema as pydantic makes it from the model that validates the request (with
  ``dependentRequired`` and ``if``/``then``, which flask-openapi3's own schema model drops);
- each operation's id (its view's name: ``list_tokens``), its tag (the resource, the first path
  segment: ``tokens``), and its security and scope from the access table (``auth.ACCESS``);
- every error answer as ``application/problem+json`` with the ``Problem`` schema, the 401 with
  ``WWW-Authenticate``, the 503 (the database, or MLflow, unreachable) with ``Retry-After``, and
  the 422 on every operation that takes input;
- a page's ``Link`` header (``rel="next"``, the same URL as its ``next``);
- ``links`` from each answer's fields to the operations they name (a made token's ``token_id`` to
  reading it, finding it in the list, listing its registrations and events, registering a model
  for it), which drive Schemathesis's stateful phase and tell a client where to go next.
"""

from __future__ import annotations

import copy
import re

from pydantic import BaseModel

import webhook_app.api.schemas as schemas
from webhook_app.api.auth import ACCESS

PREFIX = "/api/v1"
PROBLEM = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# What names the same thing in an answer and in another resource's parameter: a token's id is the
# ``token`` of the registrations and events it has, and the ``q`` that finds it among the tokens.
SAME = {"token": "token_id", "q": "token_id"}
# The fields of a body that name the same object as the answer's field of that name.
NAMES = {"token_id"}
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": {"description": "How to authenticate: a Bearer API key.",
                                             "schema": {"type": "string", "pattern": "^Bearer"}}}
RETRY_HEADERS = {"Retry-After": {"description": "Seconds to wait before trying again.",
                                 "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
LINK_HEADERS = {"Link": {"description": 'The next page, as `<url>; rel="next"` (absent on the last page).',
                         "schema": {"type": "string"}}}


def finished(app) -> dict:
    """flask-openapi3's document for ``app``, finished (built once per app)."""
    cached = app.extensions.get("hokusai_openapi")
    if cached is None:
        cached = app.extensions["hokusai_openapi"] = _finish(copy.deepcopy(app.api_doc), app)
    return cached


def _finish(document: dict, app) -> dict:
    _component_schemas(document)
    endpoints = {(re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule), method.lower()): rule.endpoint
                 for rule in app.url_map.iter_rules() for method in rule.methods}
    tags = set()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            view = endpoints[(path, method)].rpartition(".")[2]
            operation["operationId"] = view
            tag = path[len(PREFIX):].strip("/").split("/")[0]
            operation["tags"] = [tag]
            tags.add(tag)
            _answers(operation, ACCESS.of(view))
    document["tags"] = [{"name": t} for t in sorted(tags)]
    _links(document)
    return document


def _component_schemas(document: dict) -> None:
    """Each component schema as its pydantic model makes it (the model validates the request)."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for name in list(components):
        model = getattr(schemas, name, None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        made = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for sub, schema in made.pop("$defs", {}).items():
            components.setdefault(sub, schema)
        components[name] = made


def _answers(operation: dict, access) -> None:
    responses = operation.setdefault("responses", {})
    secured = access is not None and access.scope is not None
    operation["security"] = [{"bearer": []}] if secured else []
    if secured:
        operation["description"] = (operation.get("description", "") +
                                    f"\n\nNeeds a key with the `{access.scope}` scope.").strip()
        responses.setdefault("401", {"description": "Unauthorized"})
        responses.setdefault("403", {"description": "Forbidden"})
        responses.setdefault("503", {"description": "Service Unavailable"})
    if operation.get("parameters") or operation.get("requestBody"):
        responses.setdefault("422", {"description": "Unprocessable Content"})
    for status, answer in responses.items():
        code = int(status)
        if code >= 400:
            answer["content"] = {PROBLEM: {"schema": PROBLEM_REF}}
            if code == 401:
                answer["headers"] = UNAUTHORIZED_HEADERS
            if code == 503:
                answer["headers"] = RETRY_HEADERS
        elif 200 <= code < 300 and _is_page(answer):
            answer["headers"] = LINK_HEADERS


def _is_page(answer: dict) -> bool:
    ref = answer.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
    model = getattr(schemas, ref.rpartition("/")[2], None)
    return isinstance(model, type) and issubclass(model, BaseModel) and "next" in model.model_fields


def _schema_of(document: dict, ref: str) -> dict:
    return document["components"]["schemas"].get(ref.rpartition("/")[2], {})


def _answer_fields(document: dict, answer: dict) -> dict[str, str]:
    """Each field an answer names, and where it is: its own, or a page's first item's (a page's
    links lead from its first item, as a person reading the list would)."""
    ref = answer.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
    properties = _schema_of(document, ref).get("properties", {})
    fields = {name: f"/{name}" for name in properties}
    item = properties.get("items", {}).get("items", {}).get("$ref", "")
    for name in _schema_of(document, item).get("properties", {}) if item else ():
        fields.setdefault(name, f"/items/0/{name}")
    return fields


def _body_fields(document: dict, operation: dict) -> set[str]:
    ref = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
    return set(document["components"]["schemas"].get(ref.rpartition("/")[2], {}).get("properties", {}))


def _links(document: dict) -> None:
    """From each 2xx answer's fields to the operations they name: within a resource (its tag), each
    path parameter of the same name (a made token's ``token_id`` to reading it, its grants, its
    history); across resources, only the names ``SAME`` and ``NAMES`` say mean the same object (a
    token's id to its registrations and events, and to registering a model for it), never a
    coincidence of names (a user's ``name`` is not a team's). A page's first item leads to reading
    it, and to nothing that changes it."""
    operations = [(path, method, op) for path, item in document["paths"].items() for method, op in item.items()]
    for _, _, source in operations:
        for status, answer in source["responses"].items():
            if not status.startswith("2"):
                continue
            named = _answer_fields(document, answer)
            links = {}
            for path, method, target in operations:
                if target is source:
                    continue
                # from a page's first item, only to reading (never to revoking the first key listed)
                fields = named if method == "get" else {k: v for k, v in named.items() if not v.startswith("/items/")}
                same_tag = target["tags"] == source["tags"]
                params = {p["name"]: p for p in target.get("parameters", []) if p["in"] in ("path", "query")}
                given = {name: f"$response.body#{fields[SAME.get(name, name)]}" for name, p in params.items()
                         if SAME.get(name, name) in fields and ((same_tag and p["in"] == "path") or name in SAME)}
                required = {p["name"] for p in params.values() if p.get("required")}
                makes = "201" in target["responses"]  # naming the object to the operation that makes it: a 409
                body = {} if same_tag or makes else {name: f"$response.body#{fields[name]}" for name in _body_fields(document, target)
                                                     if name in NAMES and name in fields}
                link = {"operationId": target["operationId"]}
                if given and required <= set(given):
                    link["parameters"] = given
                if body and not required:
                    link["requestBody"] = body
                if len(link) > 1:
                    links[target["operationId"]] = link
            if links:
                answer["links"] = links
