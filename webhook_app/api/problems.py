"""RFC 9457 problem details: the one shape of every API error, chosen by the error's kind."""

from __future__ import annotations

import logging

from flask import current_app, jsonify
from werkzeug.exceptions import HTTPException

from hokusai_mlflow_plugin.core.errors import (
    CONFIG,
    CONFLICT,
    FORBIDDEN,
    INVALID,
    NOT_FOUND,
    UNAUTHORIZED,
    UNAVAILABLE,
    BadOption,
    HokusaiError,
)

_logger = logging.getLogger(__name__)

STATUS = {INVALID: 422, NOT_FOUND: 404, CONFLICT: 409, UNAVAILABLE: 503, CONFIG: 503, UNAUTHORIZED: 401, FORBIDDEN: 403}
TITLE = {
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
    413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
    500: "Internal Server Error", 503: "Service Unavailable",
}
RETRY_AFTER = "5"


def problem(status: int, detail: str, errors: list[dict] | None = None, headers: dict | None = None):
    body = {"type": "about:blank", "title": TITLE.get(status, "Error"), "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def of_error(error: HokusaiError):
    status = STATUS.get(error.kind, 422)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="hokusai"'
    if status == 503:
        headers["Retry-After"] = RETRY_AFTER
    errors = [{"field": error.option.lstrip("-"), "message": str(error)}] if isinstance(error, BadOption) else None
    return problem(status, str(error), errors, headers)


def of_validation(error):
    """pydantic's ValidationError (flask-openapi3 hands it here) as a 422 naming every field."""
    errors = [
        {"field": ".".join(str(part) for part in e.get("loc", ())) or "body", "message": e.get("msg", "invalid")}
        for e in error.errors(include_url=False, include_context=False, include_input=False)
    ]
    fields = ", ".join(e["field"] for e in errors)
    return problem(422, f"The request is not valid: {fields}. See 'errors' for each field.", errors)


def of_http(error: HTTPException):
    return problem(error.code or 500, error.description or TITLE.get(error.code, "Error"))


def of_unexpected(error: Exception):
    _logger.exception("API request failed")
    if current_app.debug:
        raise error
    return problem(500, "The request failed on the server; its log has the details.")
