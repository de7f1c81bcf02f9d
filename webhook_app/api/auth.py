"""Bearer API keys on every API request: 401 for no usable key, 403 for a missing scope. The key
is read from the header, checked, and forgotten: it is never logged nor echoed."""

from __future__ import annotations

from flask import current_app, g, request

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.db.errors import guarded
from hokusai_mlflow_plugin.db.session import read_engine

#: endpoint (the view function's name) -> the scope it needs; endpoints not listed are public
SCOPE_OF: dict[str, str] = {}


def needs(scope: str):
    """Mark a view as needing ``scope``."""

    def mark(view):
        SCOPE_OF[view.__name__] = scope
        return view

    return mark


def bearer_key(header: str | None) -> str | None:
    if not header:
        return None
    kind, _, value = header.partition(" ")
    if kind.lower() != "bearer" or not value.strip():
        raise keys.NotAuthenticated("The Authorization header must be 'Bearer hk_...'.")
    return value.strip()


def authenticate() -> None:
    """``before_request`` of the API: the caller of this request, in ``g.caller``."""
    scope = SCOPE_OF.get((request.endpoint or "").rpartition(".")[2])
    if scope is None:
        return
    key = bearer_key(request.headers.get("Authorization"))
    engine = read_engine(current_app.extensions["hokusai"].engine)

    def check():
        with engine.begin() as conn:
            return keys.authenticate(conn, key)

    caller = guarded(check)
    keys.require(caller, scope)
    g.caller = caller
