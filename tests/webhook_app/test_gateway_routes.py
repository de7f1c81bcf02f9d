"""Default deny, tested against MLflow itself: every route the installed MLflow serves (its Flask
url_map, built from handlers.get_endpoints and its own @app.route views, and the FastAPI routers that
fastapi_app mounts before it) is classified by the gateway (scopes.access_of); an MLflow upgrade that
adds a route fails here until it is judged. A route the gateway does not know is refused."""

from __future__ import annotations

import re

import pytest

from webhook_app.gateway.scopes import OPERATOR, PUBLIC_, READS, REFUSED, WRITES, access_of


def _fastapi_routes(routes, prefix=""):
    from starlette.routing import Mount

    for route in routes:
        if isinstance(route, Mount):
            continue  # the Flask app, read from its own url_map below
        if hasattr(route, "path"):
            for method in getattr(route, "methods", None) or ("GET",):
                yield method, prefix + route.path
        else:  # FastAPI's included router
            yield from _fastapi_routes(route.original_router.routes, prefix + route.include_context.prefix)


def mlflow_routes() -> set[tuple[str, str]]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.server import app as flask_app
        from mlflow.server.fastapi_app import create_fastapi_app
    found = set(_fastapi_routes(create_fastapi_app(flask_app).routes))
    for rule in flask_app.url_map.iter_rules():
        found |= {(method, rule.rule) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return found


def _filled(template: str) -> str:
    """A path of the route: each parameter given a value (a path parameter, several segments)."""
    def value(m):
        wide = "path" in (m.group(0))
        return "1/0123abcd/artifacts/model.pkl" if wide else "x1"
    return re.sub(r"<[^>]+>|\{[^}]+\}", value, template)


ROUTES = sorted(mlflow_routes())


def test_the_installed_mlflow_serves_what_the_table_was_written_against():
    assert len(ROUTES) > 400
    assert ("GET", "/api/2.0/mlflow/runs/get") in ROUTES and ("GET", "/ajax-api/2.0/mlflow/logged-models/<model_id>/artifacts/files") in ROUTES


@pytest.mark.parametrize("method,template", ROUTES)
def test_every_route_mlflow_serves_is_classified(method, template):
    found = access_of(method, _filled(template))
    assert found is not None, f"{method} {template} is served by MLflow but not classified in webhook_app/gateway/scopes.py"
    access, _ = found
    assert access.need in (PUBLIC_, "open", READS, WRITES, OPERATOR, REFUSED)
    if access.need in (READS, WRITES):
        assert access.subjects or access.search or access.creates, f"{method} {template} names no object to judge"


def test_api_and_ajax_api_are_the_same_route():
    for method, template in ROUTES:
        if template.startswith("/api/"):
            assert access_of(method, _filled(template)) == access_of(method, _filled("/ajax-api/" + template[5:]))


def test_what_the_gateway_does_not_know_is_refused():
    assert access_of("GET", "api/2.0/mlflow/runs/get-everything") is None
    assert access_of("POST", "api/2.0/mlflow/runs/get") is None  # a method MLflow does not serve there
    assert access_of("GET", "api/9.0/mlflow/runs/get") is None


def test_objects_are_found_where_mlflow_reads_them():
    access, params = access_of("PUT", "api/2.0/mlflow-artifacts/artifacts/7/abc/artifacts/model.pkl")
    assert access.need == WRITES and access.subjects == (("artifact", ("artifact_path",)),)
    assert params == {"artifact_path": "7/abc/artifacts/model.pkl"}
    access, params = access_of("GET", "ajax-api/2.0/mlflow/logged-models/m-1/artifacts/files")
    assert access.need == READS and params == {"model_id": "m-1"}
    assert access_of("HEAD", "api//2.0/mlflow/runs/get/")[0].subjects == (("run", ("run_id", "run_uuid")),)
    assert access_of("POST", "graphql")[0].need == READS  # each field judged as its REST route (gateway.graphql)
    assert access_of("POST", "ajax-api/3.0/mlflow/assistant/message")[0].need == REFUSED
