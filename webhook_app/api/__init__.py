"""The JSON API under ``/api/v1``: bearer API keys, problem details, cursor pagination, and an
OpenAPI 3.1 document at ``/api/v1/openapi.json`` built from the same pydantic models that
validate the requests (flask-openapi3)."""

from __future__ import annotations

from flask import current_app, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from hokusai_mlflow_plugin.core.errors import HokusaiError
from hokusai_mlflow_plugin.db.errors import explain
from webhook_app.api import auth, document, events, lifecycle, mlflow_shares, models, people, problems, reconcile, tokens  # noqa: F401 (their routes)
from webhook_app.api.blueprint import CONVERTERS, SECURITY_SCHEMES, bp

__all__ = ["SECURITY_SCHEMES", "bp", "init_app", "problems"]


@bp.get("/openapi.json", security=[], doc_ui=False)
@auth.public
def openapi_document():
    return document.finished(current_app)


def _database_error(error: SQLAlchemyError):
    known = explain(error, current_app.config["HOKUSAI_DATABASE_URL"])
    return problems.of_error(known) if known is not None else problems.of_unexpected(error)


# Set up once per process: a blueprint is set up before any app registers it.
bp.before_request(auth.authenticate)
bp.register_error_handler(HokusaiError, problems.of_error)
bp.register_error_handler(SQLAlchemyError, _database_error)
bp.register_error_handler(HTTPException, problems.of_http)
bp.register_error_handler(Exception, problems.of_unexpected)


def _unrouted(error: HTTPException):
    """A path under the API's prefix that no route matches (404), or a method none serves (405):
    a problem too (Flask asks the app, not the blueprint, when routing fails). Elsewhere, Flask's own."""
    if request.path == bp.url_prefix or request.path.startswith(bp.url_prefix + "/"):
        return problems.of_http(error)
    return error


def init_app(app) -> None:
    """Add the API to ``app`` (an OpenAPI app)."""
    app.url_map.converters.update(CONVERTERS)  # before the blueprint's rules are bound
    app.register_api(bp)
    for status in (404, 405):
        app.register_error_handler(status, _unrouted)
