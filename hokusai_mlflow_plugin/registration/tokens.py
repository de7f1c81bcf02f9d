"""Token administration (so that tokens exist without the Hokusai site), and the views of tokens
and their registrations that the CLI and the API show. Functions take a session and never commit."""

from __future__ import annotations

import math

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hokusai_mlflow_plugin.core import cursors, gate, tags
from hokusai_mlflow_plugin.core.errors import CONFLICT, NOT_FOUND, HokusaiError
from hokusai_mlflow_plugin.core.metrics import get_metric
from hokusai_mlflow_plugin.auth import ownership, principals
from hokusai_mlflow_plugin.auth.keys import Caller
from hokusai_mlflow_plugin.db.models import (
    DRAFT,
    GRANT_READ,
    GRANT_REGISTER,
    TOKEN_STATUSES,
    Principal,
    Registration,
    Token,
    TokenGrant,
)


class TokenError(HokusaiError):
    """A token request that cannot be carried out (its kind says why); the message says what to do."""


def normalize(token_id: str) -> str:
    normalized = tags.normalize_token_id(token_id)
    if normalized is None:
        raise TokenError(f"{token_id!r} is not a token id: expected {tags.TOKEN_ID_FORM}.")
    return normalized


def create(
    session: Session, token_id: str, metric: str | None = None, baseline: float | None = None, owner: str | None = None
) -> Token:
    """A draft token, owned by the user or team ``owner`` (None: reached by admin keys only)."""
    token_id = normalize(token_id)
    owner_row = principals.find(session, owner) if owner else None
    if baseline is not None and not metric:
        raise TokenError("A baseline needs its metric: give --metric too (for example --metric auroc).")
    try:
        m = gate.metric(metric) if metric else None
        if m is not None and baseline is not None:
            gate.check_baseline(m, baseline)
    except gate.GateError as e:
        raise TokenError(str(e)) from None
    if session.get(Token, token_id) is not None:
        raise TokenError(f"Token '{token_id}' exists already: see 'hokusai token show {token_id}'.", CONFLICT)
    token = Token(token_id=token_id, status=DRAFT, metric_name=m.name if m else None, baseline_value=baseline,
                  owner=owner_row)
    session.add(token)
    try:
        session.flush()  # the primary key decides a concurrent create
    except IntegrityError:
        raise TokenError(f"Token '{token_id}' exists already: see 'hokusai token show {token_id}'.", CONFLICT) from None
    return token


def get(session: Session, token_id: str) -> Token:
    token_id = normalize(token_id)
    token = session.get(Token, token_id)
    if token is None:
        raise TokenError(f"Unknown token '{token_id}': create it with 'hokusai token create {token_id}'.", NOT_FOUND)
    return token


def set_owner(session: Session, token_id: str, owner: str | None) -> Token:
    """Give the token to the user or team ``owner`` (None: to nobody, admins only)."""
    token = get(session, token_id)
    token.owner = principals.find(session, owner) if owner else None
    session.flush()
    return token


def grant(session: Session, token_id: str, name: str, permission: str) -> Token:
    """Give user or team ``name`` ``read`` or ``register`` on the token (replacing an earlier grant)."""
    if permission not in (GRANT_READ, GRANT_REGISTER):
        raise TokenError(f"Unknown permission {permission!r}: use read or register.")
    token = get(session, token_id)
    who = principals.find(session, name)
    row = session.get(TokenGrant, (token.token_id, who.id))
    if row is None:
        session.add(TokenGrant(token_id=token.token_id, principal_id=who.id, permission=permission))
    else:
        row.permission = permission
    session.flush()
    return token


def revoke_grant(session: Session, token_id: str, name: str) -> Token:
    token = get(session, token_id)
    who = principals.find(session, name)
    row = session.get(TokenGrant, (token.token_id, who.id))
    if row is None:
        raise TokenError(f"{who.kind.capitalize()} '{who.name}' has no grant on token '{token.token_id}': see "
                         f"'hokusai token show {token.token_id}'.", NOT_FOUND)
    session.delete(row)
    session.flush()
    return token


def grants(session: Session, token_id: str) -> list[dict]:
    """Who besides the owner may read or register for the token."""
    rows = session.execute(sa.select(Principal.name, Principal.kind, TokenGrant.permission)
                           .join(Principal, Principal.id == TokenGrant.principal_id)
                           .where(TokenGrant.token_id == normalize(token_id)).order_by(Principal.name))
    return [{"name": name, "kind": kind, "permission": permission} for name, kind, permission in rows]


def check_status(status: str | None) -> None:
    if status and status not in TOKEN_STATUSES:
        raise TokenError(f"Unknown status '{status}': use one of {', '.join(TOKEN_STATUSES)}.")


def list_tokens(session: Session, status: str | None = None, unowned: bool = False) -> list[Token]:
    query = sa.select(Token).order_by(Token.created_at, Token.token_id)
    if unowned:
        query = query.where(Token.owner_id.is_(None))
    if status:
        check_status(status)
        query = query.where(Token.status == status)
    return list(session.scalars(query))


def page_tokens(
    session: Session, status: str | None = None, q: str | None = None, limit: int | None = None, cursor: str | None = None,
    caller: Caller | None = None, unowned: bool = False,
) -> tuple[list[Token], str | None]:
    """One page of the tokens ``caller`` may read (None: all), oldest first (status, a substring
    of the id and having no owner filter them), and the cursor of the next page, or None at the
    end. One indexed query, however deep the page: the caller's rights are in its WHERE."""
    limit = cursors.limit_of(limit)
    query = _where(sa.select(Token).order_by(Token.created_at, Token.token_id).limit(limit + 1),
                   ownership.visible(caller) if caller is not None else None)
    if unowned:
        query = query.where(Token.owner_id.is_(None))
    if status:
        check_status(status)
        query = query.where(Token.status == status)
    if q:
        # Ids are stored upper case: a plain LIKE (4x cheaper than ILIKE on a big table), with
        # '_' and '%' of the search taken literally.
        query = query.where(Token.token_id.contains(q.strip().upper(), autoescape=True))
    after = cursors.decode(cursor, 2)
    if after:
        created, token_id = cursors.time_of(after[0]), after[1]
        query = query.where(sa.or_(Token.created_at > created, sa.and_(Token.created_at == created, Token.token_id > token_id)))
    found, more = cursors.take(list(session.scalars(query)), limit)
    return found, cursors.encode(cursors.micros(found[-1].created_at), found[-1].token_id) if more else None


def page_registrations(
    session: Session,
    token_id: str | None = None,
    outcome: str | None = None,
    model_name: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    caller: Caller | None = None,
) -> tuple[list[Registration], str | None]:
    """One page of the registrations ``caller`` may read (None: all), newest first, and the next
    page's cursor (or None)."""
    limit = cursors.limit_of(limit)
    query = _registrations_of(sa.select(Registration).order_by(Registration.id.desc()).limit(limit + 1),
                              token_id, outcome, model_name)
    query = _where(query, ownership.visible_registrations(caller) if caller is not None else None)
    after = cursors.decode(cursor, 1)
    if after:
        # a row id past the column's range (a cursor of the stated form) is past every row
        query = query.where(Registration.id <= min(int(after[0]) - 1, cursors.INT_MAX))
    found, more = cursors.take(list(session.scalars(query)), limit)
    return found, cursors.encode(found[-1].id) if more else None


def _where(query: sa.Select, clause) -> sa.Select:
    return query if clause is None else query.where(clause)


def _registrations_of(query: sa.Select, token_id: str | None, outcome: str | None, model_name: str | None) -> sa.Select:
    """``query`` kept to one token's, one outcome's and one model's registrations, where given."""
    if token_id:
        query = query.where(Registration.token_id == normalize(token_id))
    if outcome:
        query = query.where(Registration.outcome == outcome)
    if model_name:
        query = query.where(Registration.model_name == model_name)
    return query


def registrations(
    session: Session,
    token_id: str | None = None,
    outcome: str | None = None,
    model_name: str | None = None,
    latest: bool = False,
) -> list[Registration]:
    """Registrations, newest first: of one token, with one outcome, of one registered model.
    ``latest`` keeps the newest version of each model among those selected (as MLflow's latest
    version: with ``outcome="rejected"``, the newest rejected one)."""
    query = _registrations_of(sa.select(Registration).order_by(Registration.created_at.desc(), Registration.id.desc()),
                              token_id, outcome, model_name)
    found = list(session.scalars(query))
    return newest_of_each_model(found) if latest else found


def newest_of_each_model(found: list) -> list:
    """The newest version of each model among ``found`` (rows, or the API's records), in order."""
    newest: dict[str, object] = {}
    for reg in found:
        seen = newest.get(reg.model_name)
        if seen is None or tags.version_key(reg.model_version) > tags.version_key(seen.model_version):
            newest[reg.model_name] = reg
    return [reg for reg in found if newest[reg.model_name] is reg]


def sort_best_first(found: list[Registration]) -> list[Registration]:
    """Best first within each metric by its direction; rows without a value last."""

    def key(reg: Registration):
        m = get_metric(reg.metric_name) if reg.metric_name else None
        if reg.metric_value is None or m is None or not math.isfinite(reg.metric_value):
            return (1, reg.metric_name is None, reg.metric_name or "", 0.0)
        return (0, False, m.name, -reg.metric_value if m.higher_is_better else reg.metric_value)

    return sorted(found, key=key)
