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
- ``links`` from each answer's fields to the operations whose parameters bear the same name (a
  made token's ``token_id`` to reading it, listing its registrations and events, registering for it),
  which drive Schemathesis's stateful phase and tell a client where to go next.
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
# What names the same thing in an answer and in a parameter, where the two names differ.
SAME = {"token": "token_id"}
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


def _answer_fields(document: dict, answer: dict) -> set[str]:
    ref = answer.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
    schema = document["components"]["schemas"].get(ref.rpartition("/")[2], {})
    return set(schema.get("properties", {}))


def _links(document: dict) -> None:
    """From each 2xx answer's fields to each other operation's parameters of the same name."""
    operations = [(path, method, op) for path, item in document["paths"].items() for method, op in item.items()]
    for _, _, source in operations:
        for status, answer in source["responses"].items():
            if not status.startswith("2"):
                continue
            fields = _answer_fields(document, answer)
            links = {}
            for path, method, target in operations:
                if target is source:
                    continue
                params = {p["name"]: p for p in target.get("parameters", []) if p["in"] in ("path", "query")}
                given = {name: f"$response.body#/{SAME.get(name, name)}" for name, p in params.items()
                         if SAME.get(name, name) in fields and (p["in"] == "path" or name in SAME)}
                required = {p["name"] for p in params.values() if p.get("required")}
                if given and required <= set(given):
                    links[target["operationId"]] = {"operationId": target["operationId"], "parameters": given}
            if links:
                answer["links"] = links
