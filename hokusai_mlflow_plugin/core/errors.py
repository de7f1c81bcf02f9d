"""The domain's errors, each of one kind, and the one-line form of any error for messages and logs.

Adapters map a kind, never a message text, to their answer: the CLI to an exit code, the HTTP
API to a status. Standard library only.
"""

from __future__ import annotations

# The kinds, and what an adapter should make of them.
INVALID = "invalid"  # the request holds a value that cannot be used: fix the input
NOT_FOUND = "not_found"  # what the request names does not exist
CONFLICT = "conflict"  # the state forbids it (exists already, not draft)
UNAVAILABLE = "unavailable"  # a dependency (the database, MLflow) is down: try again later
CONFIG = "config"  # the deployment is set up wrongly (a missing secret, a schema not migrated)
UNAUTHORIZED = "unauthorized"  # who is asking is not known: no, a bad, a revoked or an expired key
FORBIDDEN = "forbidden"  # the caller is known but may not do this (a missing scope)

KINDS = (INVALID, NOT_FOUND, CONFLICT, UNAVAILABLE, CONFIG, UNAUTHORIZED, FORBIDDEN)


class HokusaiError(Exception):
    """A failure the user can act on; its message says what to do and never holds a secret."""

    kind = INVALID

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        if kind is not None:
            if kind not in KINDS:
                raise ValueError(f"unknown error kind {kind!r}")
            self.kind = kind


class Unavailable(HokusaiError):
    """A transient failure: nothing was written; try again. ``service`` names what is down."""

    kind = UNAVAILABLE
    service = "a dependency"


class DatabaseUnavailable(Unavailable):
    service = "database"


class MlflowUnavailable(Unavailable):
    service = "mlflow"


class ConfigError(HokusaiError):
    """The configuration is missing something or holds a value we cannot use."""

    kind = CONFIG


class BadOption(HokusaiError):
    """A value given for ``option`` (a command-line option or a request field) cannot be used."""

    def __init__(self, option: str, message: str, kind: str | None = None):
        super().__init__(message, kind)
        self.option = option


def first_line(error: BaseException | str | None, default: str | None = None, limit: int = 300) -> str:
    """The first non-blank line of ``error`` (an exception or its text), cut at ``limit``; when it
    has none, ``default``, else an exception's type name, else ""."""
    lines = str(error if error is not None else "").strip().splitlines()
    if lines:
        return lines[0][:limit]
    if default is not None:
        return default
    return type(error).__name__ if isinstance(error, BaseException) else ""
