"""``/api/v1/users``, ``/api/v1/teams``, ``/api/v1/keys`` (admin) and ``/api/v1/me`` (the
caller's own key, user and teams)."""

from __future__ import annotations

from flask import current_app, g

from hokusai_mlflow_plugin.auth import keys, ownership, principals
from hokusai_mlflow_plugin.auth.keys import ADMIN, READ
from hokusai_mlflow_plugin.auth.revocation import revoke_everywhere
from hokusai_mlflow_plugin.db.models import TEAM, USER
from webhook_app.api.auth import OPERATOR, SELF, needs
from webhook_app.api.blueprint import bp
from webhook_app.api.schemas import (
    ApiKey as ApiKeySchema,
    ApiKeyList,
    KeyCreate,
    KeyPath,
    Me,
    MemberPath,
    NewApiKey,
    PrincipalCreate,
    Problem,
    Team,
    TeamList,
    TeamPath,
    User,
    UserList,
    UserPath,
)

ADMIN_ANSWERS = {401: Problem, 403: Problem, 404: Problem, 422: Problem}


def _sessions():
    return current_app.extensions["hokusai"].sessions


@bp.get("/me", responses={200: Me, 401: Problem}, summary="The calling key: its user, teams and scopes")
@needs(READ, SELF)
def show_me():
    caller = g.caller
    with _sessions()() as session:
        user = keys.get(session, caller.key_id).user
        teams = principals.user_view(session, user.name)["teams"] if user is not None else []
        return {"key_id": caller.key_id, "name": caller.name, "scopes": list(caller.scopes),
                "user": user.name if user is not None else None, "teams": teams, "admin": ownership.is_admin(caller)}


@bp.get("/users", responses={200: UserList, **ADMIN_ANSWERS}, summary="Users and their teams")
@needs(ADMIN, OPERATOR)
def list_users():
    with _sessions()() as session:
        return {"items": principals.list_users(session)}


@bp.post("/users", responses={201: User, 409: Problem, **ADMIN_ANSWERS}, summary="Create a user")
@needs(ADMIN, OPERATOR)
def create_user(body: PrincipalCreate):
    with _sessions().begin() as session:
        principals.create(session, body.name, USER)
        return principals.user_view(session, body.name.strip()), 201


@bp.get("/users/<name>", responses={200: User, **ADMIN_ANSWERS}, summary="A user and its teams")
@needs(ADMIN, OPERATOR)
def show_user(path: UserPath):
    with _sessions()() as session:
        return principals.user_view(session, path.name)


@bp.get("/teams", responses={200: TeamList, **ADMIN_ANSWERS}, summary="Teams and their members")
@needs(ADMIN, OPERATOR)
def list_teams():
    with _sessions()() as session:
        return {"items": principals.list_teams(session)}


@bp.post("/teams", responses={201: Team, 409: Problem, **ADMIN_ANSWERS}, summary="Create a team")
@needs(ADMIN, OPERATOR)
def create_team(body: PrincipalCreate):
    with _sessions().begin() as session:
        principals.create(session, body.name, TEAM)
        return principals.team_view(session, body.name.strip()), 201


@bp.get("/teams/<name>", responses={200: Team, **ADMIN_ANSWERS}, summary="A team and its members")
@needs(ADMIN, OPERATOR)
def show_team(path: TeamPath):
    with _sessions()() as session:
        return principals.team_view(session, path.name)


@bp.put("/teams/<name>/members/<user>", responses={200: Team, **ADMIN_ANSWERS}, summary="Add a user to a team")
@needs(ADMIN, OPERATOR)
def add_team_member(path: MemberPath):
    with _sessions().begin() as session:
        principals.add_member(session, path.name, path.user)
        return principals.team_view(session, path.name)


@bp.delete("/teams/<name>/members/<user>", responses={200: Team, **ADMIN_ANSWERS}, summary="Remove a user from a team")
@needs(ADMIN, OPERATOR)
def remove_team_member(path: MemberPath):
    with _sessions().begin() as session:
        principals.remove_member(session, path.name, path.user)
        return principals.team_view(session, path.name)


@bp.get("/keys", responses={200: ApiKeyList, **ADMIN_ANSWERS}, summary="API keys: ids, names, users and scopes, never a secret")
@needs(ADMIN, OPERATOR)
def list_api_keys():
    with _sessions()() as session:
        return {"items": [k.to_dict() for k in keys.list_keys(session)]}


@bp.post("/keys", responses={201: NewApiKey, 409: Problem, **ADMIN_ANSWERS},
         summary="Create an API key (its secret is shown once)")
@needs(ADMIN, OPERATOR)
def create_api_key(body: KeyCreate):
    scopes = keys.parse_scopes(",".join(body.scopes))
    lifetime = keys.parse_duration(body.expires_in) if body.expires_in else None
    with _sessions().begin() as session:
        made = keys.create(session, body.name, scopes, lifetime, user=body.user)
    return {**made.record, "key": made.key}, 201


@bp.post("/keys/<key_id>/revoke", responses={200: ApiKeySchema, **ADMIN_ANSWERS},
         summary="Revoke a key: refused by the API and every MLflow gateway when this returns")
@needs(ADMIN, OPERATOR)
def revoke_api_key(path: KeyPath):
    revoke_everywhere(_sessions(), path.key_id)
    with _sessions()() as session:
        return keys.get(session, path.key_id).to_dict()
