"""RFC 9457 problem details: the one shape of every API error, chosen by the error's kind."""

from __future__ import annotations

import logging

from flask import current_app, jsonify
from werkzeug.exceptions import HTTPException

from hokusai_mlflow_plugin.core.errors import HokusaiError
import webhook_app.problem_details as problem_details
from webhook_app.problem_details import TITLE, problem_body

_logger = logging.getLogger(__name__)


def problem(status: int, detail: str, errors: list[dict] | None = None, headers: dict | None = None):
    return _response(status, problem_body(status, detail, errors), headers)


def of_error(error: HokusaiError):
    return _response(*problem_details.of_error(error))


def _response(status: int, body: dict, headers: dict | None):
    response = jsonify(body)
    response.status_code = status
    response.mimetype = problem_details.MEDIA_TYPE
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def of_validation(error):
    """pydantic's ValidationError (flask-openapi3 hands it here) as a 422 naming every field."""
    errors = [
        {"field": ".".join(str(part) for part in e.get("loc", ())) or "body",
         "message": e.get("msg", "invalid").removeprefix("Value error, ")}
        for e in error.errors(include_url=False, include_context=False, include_input=False)
    ]
    fields = ", ".join(e["field"] if e["field"] != "body" else e["message"] for e in errors)
    return problem(422, f"The request is not valid: {fields}. See 'errors' for each field.", errors)


def of_http(error: HTTPException):
    """An HTTP error of Flask's as a problem, with the headers it says (a 405's ``Allow``)."""
    headers = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
    return problem(error.code or 500, error.description or TITLE.get(error.code, "Error"), headers=headers)


def of_unexpected(error: Exception):
    _logger.exception("API request failed")
    if current_app.debug:
        raise error
    return problem(500, "The request failed on the server; its log has the details.")
