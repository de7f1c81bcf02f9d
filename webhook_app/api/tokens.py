"""``/api/v1/tokens``: list, show and create tokens."""

from __future__ import annotations

from flask import current_app

from hokusai_mlflow_plugin.auth.keys import ADMIN, READ
from hokusai_mlflow_plugin.registration import tokens
from webhook_app.api.blueprint import bp, next_link
from webhook_app.api.auth import needs
from webhook_app.api.schemas import Problem, Token, TokenCreate, TokenDetail, TokenPage, TokenPath, TokenQuery


def _sessions():
    return current_app.extensions["hokusai"].sessions


@bp.get("/tokens", responses={200: TokenPage, 401: Problem, 403: Problem, 422: Problem}, summary="List tokens")
@needs(READ)
def list_tokens(query: TokenQuery):
    with _sessions()() as session:
        found, cursor = tokens.page_tokens(session, query.status, query.q, query.limit, query.cursor)
        return {"items": [t.to_dict() for t in found], "next": next_link(cursor)}


@bp.get("/tokens/<token_id>", responses={200: TokenDetail, 401: Problem, 403: Problem, 404: Problem}, summary="A token and every version seen for it")
@needs(READ)
def show_token(path: TokenPath):
    with _sessions()() as session:
        token = tokens.get(session, path.token_id)
        seen = tokens.registrations(session, token.token_id)
        return {**token.to_dict(), "registrations": [r.to_dict() for r in seen]}


@bp.post("/tokens", responses={201: Token, 401: Problem, 403: Problem, 409: Problem, 422: Problem}, summary="Create a draft token")
@needs(ADMIN)
def create_token(body: TokenCreate):
    with _sessions().begin() as session:
        token = tokens.create(session, body.token_id, body.metric, body.baseline)
        return token.to_dict(), 201
