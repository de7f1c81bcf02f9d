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
