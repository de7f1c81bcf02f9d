"""Token administration (so that tokens exist without the Hokusai site). Functions take a session
and never commit."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hokusai_mlflow_plugin import gate
from hokusai_mlflow_plugin import tags as T
from hokusai_mlflow_plugin.db.models import DRAFT, TOKEN_STATUSES, Registration, Token


class TokenError(ValueError):
    """A token request that cannot be carried out; the message says what to do."""


def normalize(token_id: str) -> str:
    normalized = T.normalize_token_id(token_id)
    if normalized is None:
        raise TokenError(f"{token_id!r} is not a token id: expected {T.TOKEN_ID_FORM}.")
    return normalized


def create(session: Session, token_id: str, metric: str | None = None, baseline: float | None = None) -> Token:
    token_id = normalize(token_id)
    if baseline is not None and not metric:
        raise TokenError("A baseline needs its metric: give --metric too (for example --metric auroc).")
    try:
        m = gate.metric(metric) if metric else None
        if m is not None and baseline is not None:
            gate.check_baseline(m, baseline)
    except gate.GateError as e:
        raise TokenError(str(e)) from None
    if session.get(Token, token_id) is not None:
        raise TokenError(f"Token '{token_id}' exists already: see 'hokusai token show {token_id}'.")
    token = Token(token_id=token_id, status=DRAFT, metric_name=m.name if m else None, baseline_value=baseline)
    session.add(token)
    try:
        session.flush()  # the primary key decides a concurrent create
    except IntegrityError:
        raise TokenError(f"Token '{token_id}' exists already: see 'hokusai token show {token_id}'.") from None
    return token


def get(session: Session, token_id: str) -> Token:
    token = session.get(Token, normalize(token_id))
    if token is None:
        raise TokenError(
            f"Unknown token '{normalize(token_id)}': create it with 'hokusai token create {normalize(token_id)}'."
        )
    return token


def list_tokens(session: Session, status: str | None = None) -> list[Token]:
    query = sa.select(Token).order_by(Token.created_at, Token.token_id)
    if status:
        if status not in TOKEN_STATUSES:
            raise TokenError(f"Unknown status '{status}': use one of {', '.join(TOKEN_STATUSES)}.")
        query = query.where(Token.status == status)
    return list(session.scalars(query))


def registrations(session: Session, token_id: str | None = None, outcome: str | None = None) -> list[Registration]:
    query = sa.select(Registration).order_by(Registration.created_at.desc(), Registration.id.desc())
    if token_id:
        query = query.where(Registration.token_id == normalize(token_id))
    if outcome:
        query = query.where(Registration.outcome == outcome)
    return list(session.scalars(query))
