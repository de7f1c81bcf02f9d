"""Each route's access decision, declared beside its view: the scope its key needs, and how the
route meets someone else's objects (the view carries that out by asking ``auth.ownership``, the
one room that decides). The API and the console each keep a table; a route missing from its
table is refused (default deny: MLflow's auth app failed open for unlisted routes, mlflow#25065),
and ``tests/webhook_app/test_authorization_matrix.py`` fails on one.

- ``FILTERED``: a list, the caller's rights joined in its query;
- ``OBJECT``: one token or event named by the client: 404 if hidden, 403 if only readable;
- ``OPERATOR``: operators' work (owners and grants, users, teams, keys, redelivery, reconcile),
  where the admin scope is the decision;
- ``SELF``: the caller's own key;
- ``PUBLIC``: no key (the OpenAPI document, the sign-in page).
"""

from __future__ import annotations

from dataclasses import dataclass

from hokusai_mlflow_plugin.auth.keys import ADMIN

FILTERED, OBJECT, OPERATOR, SELF, PUBLIC = "filtered", "object", "operator", "self", "public"


@dataclass(frozen=True)
class Access:
    scope: str | None  # None: public
    ownership: str


class Decisions(dict):
    """endpoint (the view function's name) -> its ``Access``."""

    def needs(self, scope: str, ownership: str):
        """Mark a view as needing ``scope``, meeting others' objects as ``ownership`` says."""
        if (ownership == OPERATOR) != (scope == ADMIN):
            raise ValueError("operators' routes, and only they, need the admin scope")

        def mark(view):
            self[view.__name__] = Access(scope, ownership)
            return view

        return mark

    def public(self, view):
        self[view.__name__] = Access(None, PUBLIC)
        return view

    def of(self, endpoint: str | None) -> Access | None:
        return self.get((endpoint or "").rpartition(".")[2])
