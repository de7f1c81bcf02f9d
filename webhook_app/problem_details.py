"""RFC 9457 problem details, the one shape of every error the HTTP surfaces answer, without a web
framework: the API (Flask) and the gateway (aiohttp) both build their answers from it."""

from __future__ import annotations

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

STATUS = {INVALID: 422, NOT_FOUND: 404, CONFLICT: 409, UNAVAILABLE: 503, CONFIG: 503, UNAUTHORIZED: 401, FORBIDDEN: 403}
TITLE = {
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
    413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}
MEDIA_TYPE = "application/problem+json"
RETRY_AFTER = "5"


def problem_body(status: int, detail: str, errors: list[dict] | None = None) -> dict:
    body = {"type": "about:blank", "title": TITLE.get(status, "Error"), "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return body


def of_error(error: HokusaiError) -> tuple[int, dict, dict]:
    """A domain error as (status, body, headers), chosen by its kind: 401 says how to
    authenticate, 503 when to retry."""
    status = STATUS.get(error.kind, 422)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="hokusai"'
    if status == 503:
        headers["Retry-After"] = RETRY_AFTER
    errors = [{"field": error.option.lstrip("-"), "message": str(error)}] if isinstance(error, BadOption) else None
    return status, problem_body(status, str(error), errors), headers


# MLflow's own error codes by status: the gateway's problems carry them beside the problem's members.
MLFLOW_ERROR_CODES = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "RESOURCE_DOES_NOT_EXIST",
                      409: "RESOURCE_ALREADY_EXISTS", 413: "REQUEST_LIMIT_EXCEEDED", 422: "INVALID_PARAMETER_VALUE",
                      429: "REQUEST_LIMIT_EXCEEDED", 502: "TEMPORARILY_UNAVAILABLE", 503: "TEMPORARILY_UNAVAILABLE",
                      504: "TEMPORARILY_UNAVAILABLE"}


def with_mlflow_error(status: int, body: dict) -> dict:
    """``body`` with MLflow's own error members (``error_code``, ``message``) beside the problem's:
    MLflow's clients show them (the UI's notice of a refused click, the Python client's
    RestException), where a bare problem reads "Request Failed"."""
    return {**body, "error_code": MLFLOW_ERROR_CODES.get(status, "BAD_REQUEST"), "message": body["detail"]}
