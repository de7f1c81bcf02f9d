"""Bearer API keys on every API request, and each route's access decision (``webhook_app.access``):
401 for no usable key, 403 for a missing scope, and a route with no decision refused. The key is
read from the header, checked, and forgotten: never logged nor echoed."""

from __future__ import annotations

from flask import current_app, g, request

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.core.errors import FORBIDDEN, HokusaiError
from hokusai_mlflow_plugin.db.errors import guarded
from webhook_app.access import FILTERED, OBJECT, OPERATOR, PUBLIC, SELF, Decisions  # noqa: F401 (the views' words)

#: the API's decisions; an endpoint missing here is refused
ACCESS = Decisions()
needs, public = ACCESS.needs, ACCESS.public


class NoDecision(HokusaiError):
    kind = FORBIDDEN


def authenticate() -> None:
    """``before_request`` of the API: the caller of this request, in ``g.caller``."""
    access = ACCESS.of(request.endpoint)
    if access is None:
        if request.endpoint is None:
            return  # no such route: Flask answers 404
        raise NoDecision(f"The route {request.path} has no access decision, so it is refused: this is a bug, report it.")
    if access.scope is None:
        return
    g.caller = caller_of(request.headers.get("Authorization"))
    keys.require(g.caller, access.scope)


def caller_of(header: str | None) -> keys.Caller:
    """Who the ``Authorization`` header's key names (``NotAuthenticated`` otherwise); one SELECT."""
    key = keys.bearer(header)
    engine = current_app.extensions["hokusai"].reads  # built once: an engine view per request costs

    def check():
        with engine.begin() as conn:
            return keys.authenticate(conn, key)

    return guarded(check)
