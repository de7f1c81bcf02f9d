"""The JSON API under ``/api/v1``: bearer API keys, problem details, cursor pagination, and an
OpenAPI 3.1 document at ``/api/v1/openapi.json`` built from the same pydantic models that
validate the requests (flask-openapi3)."""

from __future__ import annotations

from flask import current_app
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from hokusai_mlflow_plugin.core.errors import HokusaiError
from hokusai_mlflow_plugin.db.errors import explain
from webhook_app.api import auth, document, events, lifecycle, models, people, problems, reconcile, tokens  # noqa: F401 (their routes)
from webhook_app.api.blueprint import SECURITY_SCHEMES, bp

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


def init_app(app) -> None:
    """Add the API to ``app`` (an OpenAPI app)."""
    app.register_api(bp)
