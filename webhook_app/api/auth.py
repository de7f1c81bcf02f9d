"""Bearer API keys on every API request: 401 for no usable key, 403 for a missing scope. The key
is read from the header, checked, and forgotten: it is never logged nor echoed."""

from __future__ import annotations

from flask import current_app, g, request

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.db.errors import guarded

#: endpoint (the view function's name) -> the scope it needs; endpoints not listed are public
SCOPE_OF: dict[str, str] = {}


def needs(scope: str):
    """Mark a view as needing ``scope``."""

    def mark(view):
        SCOPE_OF[view.__name__] = scope
        return view

    return mark


def authenticate() -> None:
    """``before_request`` of the API: the caller of this request, in ``g.caller``."""
    scope = SCOPE_OF.get((request.endpoint or "").rpartition(".")[2])
    if scope is None:
        return
    g.caller = caller_of(request.headers.get("Authorization"))
    keys.require(g.caller, scope)


def caller_of(header: str | None) -> keys.Caller:
    """Who the ``Authorization`` header's key names (``NotAuthenticated`` otherwise); one SELECT."""
    key = keys.bearer(header)
    engine = current_app.extensions["hokusai"].reads  # built once: an engine view per request costs

    def check():
        with engine.begin() as conn:
            return keys.authenticate(conn, key)

    return guarded(check)
