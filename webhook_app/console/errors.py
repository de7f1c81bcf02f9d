"""The console's error pages: a domain error's own sentence with the status its kind means, and
never a traceback."""

from __future__ import annotations

import logging

from flask import current_app, render_template
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DataError, SQLAlchemyError
from werkzeug.exceptions import HTTPException

from hokusai_mlflow_plugin.core import errors as kinds
from hokusai_mlflow_plugin.core.errors import HokusaiError
from hokusai_mlflow_plugin.db.errors import explain
from webhook_app.console.blueprint import bp

_logger = logging.getLogger(__name__)

STATUS_OF = {
    kinds.INVALID: 400, kinds.NOT_FOUND: 404, kinds.CONFLICT: 409, kinds.UNAVAILABLE: 503,
    kinds.CONFIG: 500, kinds.UNAUTHORIZED: 401, kinds.FORBIDDEN: 403,
}
TITLE_OF = {400: "Bad request", 401: "Not signed in", 403: "Not allowed", 404: "Not found", 405: "Not allowed",
            409: "Conflict", 500: "Something went wrong", 503: "Unavailable"}


def page(status: int, message: str):
    return render_template("console/error.html", status=status, title=TITLE_OF.get(status, "Error"), message=message), status


@bp.errorhandler(HokusaiError)
def domain_error(error: HokusaiError):
    return page(STATUS_OF.get(error.kind, 400), str(error))


@bp.errorhandler(CSRFError)
def csrf_error(error: CSRFError):
    return page(400, f"The form was refused: {error.description} Reload the page and try again.")


@bp.errorhandler(HTTPException)
def http_error(error: HTTPException):
    return page(error.code or 500, error.description)


@bp.errorhandler(SQLAlchemyError)
def database_error(error: SQLAlchemyError):
    if isinstance(error, DataError):
        return page(400, "The token database cannot read this request: check the values you gave.")
    known = explain(error, current_app.config["HOKUSAI_DATABASE_URL"])
    if known is not None:
        return domain_error(known)
    _logger.exception("console: database error")
    return page(500, "The token database failed on this page; the receiver's log has the detail.")


@bp.errorhandler(Exception)
def unexpected(error: Exception):
    _logger.exception("console: unexpected error")
    return page(500, "The page failed; the receiver's log has the detail.")
