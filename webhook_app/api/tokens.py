"""``/api/v1/tokens``: list, show and create tokens; their owner and grants (admin)."""

from __future__ import annotations

from flask import current_app, g

from hokusai_mlflow_plugin.auth import ownership
from hokusai_mlflow_plugin.auth.keys import ADMIN, READ
from hokusai_mlflow_plugin.registration import tokens
from webhook_app.api.auth import FILTERED, OBJECT, OPERATOR, needs
from webhook_app.api.blueprint import bp, page
from webhook_app.api.schemas import (
    GrantBody,
    GrantList,
    GrantPath,
    OwnerBody,
    Problem,
    Token,
    TokenCreate,
    TokenDetail,
    TokenPage,
    TokenPath,
    TokenQuery,
)


def _sessions():
    return current_app.extensions["hokusai"].sessions


@bp.get("/tokens", responses={200: TokenPage, 401: Problem, 403: Problem, 422: Problem}, summary="List the tokens you may read")
@needs(READ, FILTERED)
def list_tokens(query: TokenQuery):
    with _sessions()() as session:
        found, cursor = tokens.page_tokens(session, query.status, query.q, query.limit, query.cursor, caller=g.caller,
                                           unowned=query.unowned)
        return page([t.to_dict() for t in found], cursor)


@bp.get("/tokens/<token_id>", responses={200: TokenDetail, 401: Problem, 403: Problem, 404: Problem, 422: Problem},
        summary="A token and every version seen for it")
@needs(READ, OBJECT)
def show_token(path: TokenPath):
    with _sessions()() as session:
        token = ownership.token_for(session, g.caller, path.token_id)
        seen = tokens.registrations(session, token.token_id)
        grants = tokens.grants(session, token.token_id) if ownership.is_admin(g.caller) else None
        return {**token.to_dict(), "registrations": [r.to_dict() for r in seen], "grants": grants}


@bp.post("/tokens", responses={201: Token, 401: Problem, 403: Problem, 404: Problem, 409: Problem, 422: Problem},
         summary="Create a draft token")
@needs(ADMIN, OPERATOR)
def create_token(body: TokenCreate):
    with _sessions().begin() as session:
        token = tokens.create(session, body.token_id, body.metric, body.baseline, owner=body.owner)
        return token.to_dict(), 201


@bp.put("/tokens/<token_id>/owner", responses={200: Token, 401: Problem, 403: Problem, 404: Problem, 422: Problem},
        summary="Give a token to a user or a team (null: to nobody, admins only)")
@needs(ADMIN, OPERATOR)
def set_token_owner(path: TokenPath, body: OwnerBody):
    with _sessions().begin() as session:
        return tokens.set_owner(session, path.token_id, body.owner).to_dict()


@bp.get("/tokens/<token_id>/grants", responses={200: GrantList, 401: Problem, 403: Problem, 404: Problem, 422: Problem},
        summary="Who besides the owner may read or register for a token")
@needs(ADMIN, OPERATOR)
def list_token_grants(path: TokenPath):
    with _sessions()() as session:
        token = tokens.get(session, path.token_id)
        return {"items": tokens.grants(session, token.token_id)}


@bp.put("/tokens/<token_id>/grants/<name>", responses={200: GrantList, 401: Problem, 403: Problem, 404: Problem, 422: Problem},
        summary="Give a user or a team read or register on a token")
@needs(ADMIN, OPERATOR)
def grant_token(path: GrantPath, body: GrantBody):
    with _sessions().begin() as session:
        token = tokens.grant(session, path.token_id, path.name, body.permission)
        return {"items": tokens.grants(session, token.token_id)}


@bp.delete("/tokens/<token_id>/grants/<name>", responses={200: GrantList, 401: Problem, 403: Problem, 404: Problem, 422: Problem},
           summary="Take a grant away")
@needs(ADMIN, OPERATOR)
def revoke_token_grant(path: GrantPath):
    with _sessions().begin() as session:
        token = tokens.revoke_grant(session, path.token_id, path.name)
        return {"items": tokens.grants(session, token.token_id)}
