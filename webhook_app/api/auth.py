"""Bearer API keys on every API request, and each route's access decision.

Every view declares what it needs with ``needs(scope, ownership)``: the key's scope (401 for no
usable key, 403 for a missing scope) and how the route meets someone else's objects, which the
view carries out by asking ``auth.ownership`` (the one room that decides):

- ``FILTERED``: a list, the caller's rights joined in its query;
- ``OBJECT``: one token or event named by the client, 404 if hidden, 403 if only readable;
- ``OPERATOR``: operators' work (tokens' owners and grants, users, teams, keys, redelivery,
  reconcile), where the admin scope is the decision;
- ``SELF``: the caller's own key.

A route with no decision is refused (default deny, as MLflow's auth app learned in mlflow#25065);
``tests/webhook_app/test_authorization_matrix.py`` fails on one. The key is read from the header,
checked, and forgotten: never logged nor echoed."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, g, request

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.core.errors import FORBIDDEN, HokusaiError
from hokusai_mlflow_plugin.db.errors import guarded

FILTERED, OBJECT, OPERATOR, SELF, PUBLIC = "filtered", "object", "operator", "self", "public"


@dataclass(frozen=True)
class Access:
    scope: str | None  # None: public
    ownership: str


#: endpoint (the view function's name) -> its decision; an endpoint missing here is refused
ACCESS: dict[str, Access] = {}


def needs(scope: str, ownership: str):
    """Mark a view as needing ``scope``, meeting others' objects as ``ownership`` says."""
    if ownership == OPERATOR and scope != keys.ADMIN:
        raise ValueError("an OPERATOR route needs the admin scope")

    def mark(view):
        ACCESS[view.__name__] = Access(scope, ownership)
        return view

    return mark


def public(view):
    ACCESS[view.__name__] = Access(None, PUBLIC)
    return view


class NoDecision(HokusaiError):
    kind = FORBIDDEN


def authenticate() -> None:
    """``before_request`` of the API: the caller of this request, in ``g.caller``."""
    endpoint = (request.endpoint or "").rpartition(".")[2]
    access = ACCESS.get(endpoint)
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
