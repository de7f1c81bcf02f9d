"""The API's problem details as typed errors, named as the original platform's SDK names them
where they fit. Each is a ``HokusaiError`` of the matching kind, so the CLI prints them as it
prints the same failure from the database."""

from __future__ import annotations

from hokusai_mlflow_plugin.core.errors import (
    CONFLICT,
    FORBIDDEN,
    INVALID,
    NOT_FOUND,
    UNAUTHORIZED,
    HokusaiError,
    Unavailable,
)


class ApiError(HokusaiError):
    """An answer of the API that is not a success: ``status`` and the problem's ``detail``."""

    def __init__(self, detail: str, status: int, problem: dict | None = None):
        super().__init__(detail)
        self.status = status
        self.problem = problem or {}


class Unauthorized(ApiError):
    kind = UNAUTHORIZED


class Forbidden(ApiError):
    kind = FORBIDDEN


class NotFound(ApiError):
    kind = NOT_FOUND


class TokenNotFound(NotFound):
    pass


class EventNotFound(NotFound):
    pass


class TokenConflict(ApiError):
    """The token's state forbids it (409): a version that is not the token's registered one, a
    draft or archived token to deploy, a token deployed elsewhere already."""

    kind = CONFLICT


class TokenNotDraft(TokenConflict):
    """A register the token's state forbids (409): registered already, or exists already."""


class ValidationFailed(ApiError):
    """422: ``errors`` names each failing field."""

    kind = INVALID

    @property
    def errors(self) -> list[dict]:
        return self.problem.get("errors") or []


class ApiUnavailable(ApiError, Unavailable):
    """503, still after the retries: the API's database or MLflow is down. Try again later."""


def error_for(status: int, problem: dict, not_found: type[NotFound] = NotFound,
              conflict: type[TokenConflict] = TokenNotDraft) -> ApiError:
    detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
    kind = {401: Unauthorized, 403: Forbidden, 404: not_found, 409: conflict, 422: ValidationFailed,
            503: ApiUnavailable}.get(status, ApiError)
    return kind(detail, status, problem)
