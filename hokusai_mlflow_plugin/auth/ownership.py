"""Who may do what with a token, and whose model counts for it: the one room that decides.

Every route, page, CLI command and the registration service ask here, with (caller, action,
object); none carries its own rule (DESIGN.md, "Who may do what").

- A user's rights on a token: ``register`` as its owner, as a member of the owning team, or by a
  ``register`` grant (to the user or one of its teams); ``read`` by a ``read`` grant.
- A key may do what its scopes AND its user's rights allow: the scope is a ceiling, never a pass.
  An ``admin`` key is an operator's and reaches everything.
- Hidden is not forbidden: a token the caller may not read is a 404 that reads exactly as an
  unknown token's; one it may read but not change is a 403 naming what is missing.
- Lists are filtered in the query (``visible``), never fetched and then filtered.
- Provenance: a version counts for a token only if the run and the logged model it comes from
  were made (through the gateway: ``record_maker``) by someone with ``register`` on that token.
  Objects with no recorded maker follow ``HOKUSAI_PROVENANCE``: ``open`` decides them as before,
  ``required`` rejects them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hokusai_mlflow_plugin.auth.keys import ADMIN, REGISTER, Caller
from hokusai_mlflow_plugin.core import tags
from hokusai_mlflow_plugin.core.errors import FORBIDDEN, INVALID, NOT_FOUND, HokusaiError
from hokusai_mlflow_plugin.db.models import (
    GRANT_READ,
    GRANT_REGISTER,
    MADE_LOGGED_MODEL,
    MADE_RUN,
    MlflowMaker,
    OutboxEvent,
    Principal,
    Registration,
    TeamMember,
    Token,
    TokenGrant,
)

READ_RIGHT, REGISTER_RIGHT = GRANT_READ, GRANT_REGISTER
_LEVEL = {None: 0, READ_RIGHT: 1, REGISTER_RIGHT: 2}
OPEN, REQUIRED = "open", "required"
PROVENANCE_MODES = (OPEN, REQUIRED)


class OwnershipError(HokusaiError):
    """A request on a token that the caller may not make (404 hidden, 403 forbidden)."""


def unknown_token(token_id: str) -> OwnershipError:
    """The one answer for a token that does not exist AND for one the caller may not see."""
    return OwnershipError(f"Unknown token '{token_id}': create it with 'hokusai token create {token_id}'.", NOT_FOUND)


def is_admin(caller: Caller) -> bool:
    return caller.allows(ADMIN)


# -- principals in SQL -------------------------------------------------------------------------------


def principal_ids(user_id: int) -> sa.CompoundSelect:
    """The principals a user acts as: itself and each of its teams."""
    return sa.union_all(sa.select(sa.literal(user_id, sa.Integer)), sa.select(TeamMember.team_id).where(TeamMember.user_id == user_id))


def visible(caller: Caller, token_id=Token.token_id, owner_id=Token.owner_id):
    """A WHERE clause that keeps the tokens ``caller`` may read (None: no condition, for admins).
    ``token_id``/``owner_id`` are the columns to judge; for rows with no owner column (events,
    registrations) pass ``owner_id=None`` and the token id column."""
    if is_admin(caller):
        return None
    if caller.user_id is None:
        return sa.false()
    mine = principal_ids(caller.user_id)
    granted = sa.select(TokenGrant.token_id).where(TokenGrant.principal_id.in_(mine))
    if owner_id is None:
        owned = sa.select(Token.token_id).where(Token.owner_id.in_(mine))
        return token_id.in_(owned.union(granted))
    return sa.or_(owner_id.in_(mine), token_id.in_(granted))


def visible_registrations(caller: Caller):
    return visible(caller, Registration.token_id, None)


def visible_events(caller: Caller):
    return visible(caller, OutboxEvent.payload["token_id"].as_string(), None)


def user_right(conn: sa.Connection | Session, user_id: int | None, token_id: str) -> str | None:
    """``register``, ``read`` or None: what user ``user_id`` may do with ``token_id`` (one query)."""
    if user_id is None:
        return None
    mine = principal_ids(user_id)
    owns = sa.exists(sa.select(Token.token_id).where(Token.token_id == token_id, Token.owner_id.in_(mine)))
    granted = (sa.select(sa.func.max(sa.case((TokenGrant.permission == GRANT_REGISTER, 2), else_=1)))
               .where(TokenGrant.token_id == token_id, TokenGrant.principal_id.in_(mine)).scalar_subquery())
    owned, level = conn.execute(sa.select(owns, granted)).one()
    return REGISTER_RIGHT if owned or level == 2 else READ_RIGHT if level == 1 else None


def right(conn: sa.Connection | Session, caller: Caller, token_id: str) -> str | None:
    """What ``caller`` may do with the token: its user's right, under its key's scopes."""
    if is_admin(caller):
        return REGISTER_RIGHT
    found = user_right(conn, caller.user_id, token_id)
    if found == REGISTER_RIGHT and not caller.allows(REGISTER):
        return READ_RIGHT  # the scope is a ceiling
    return found


def token_for(session: Session, caller: Caller, token_id: str, need: str = READ_RIGHT) -> Token:
    """The token, if ``caller`` may ``need`` (read or register) it: 404 if it may not see it (as
    for an unknown token), 403 if it may see it but not register."""
    normalized = tags.normalize_token_id(token_id or "")
    if normalized is None:
        raise OwnershipError(f"{token_id!r} is not a token id: expected {tags.TOKEN_ID_FORM}.", INVALID)
    token = session.get(Token, normalized)
    if token is None:
        raise unknown_token(normalized)
    have = right(session, caller, normalized)
    if have is None:
        raise unknown_token(normalized)
    if _LEVEL[have] < _LEVEL[need]:
        scope_is_why = user_right(session, caller.user_id, normalized) == REGISTER_RIGHT
        raise OwnershipError(
            f"API key {caller.key_id} may read token '{normalized}' but not register models for it: "
            + ("use a key created with --scope register." if scope_is_why else
               "ask an admin for a register grant ('hokusai token grant "
               f"{normalized} USER --permission register')."), FORBIDDEN)
    return token


def require_admin(caller: Caller, what: str) -> None:
    if not is_admin(caller):
        raise OwnershipError(f"API key {caller.key_id} lacks the 'admin' scope that {what} needs.", FORBIDDEN)


# -- provenance ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Maker:
    kind: str
    object_id: str
    user_id: int | None
    user: str | None
    key_id: str
    admin: bool
    may_register: bool = False  # on the token asked about: as its owner, a member of the owning team, or by grant


def _register_right_of(user_id, token_id):
    """SQL: whether ``user_id`` (a column of the enclosing query) has ``register`` on ``token_id``
    (a parameter). The teams' subqueries are correlated to the enclosing row explicitly: two
    levels down, SQLAlchemy's automatic correlation would not reach it, and the subquery would
    join every row of the enclosing table (anyone's team would do)."""
    def teams():
        return sa.select(TeamMember.team_id).where(TeamMember.user_id == user_id).correlate_except(TeamMember)

    owns = sa.exists().where(Token.token_id == token_id, sa.or_(Token.owner_id == user_id, Token.owner_id.in_(teams())))
    granted = sa.exists().where(
        TokenGrant.token_id == token_id, TokenGrant.permission == GRANT_REGISTER,
        sa.or_(TokenGrant.principal_id == user_id, TokenGrant.principal_id.in_(teams())))
    return sa.or_(owns, granted)


# Built once (a decision runs it every time): each named object's maker, and the maker's right on
# the token, in one statement.
_MAKERS = (
    sa.select(MlflowMaker.kind, MlflowMaker.object_id, MlflowMaker.user_id, MlflowMaker.key_id, MlflowMaker.admin,
              Principal.name, _register_right_of(MlflowMaker.user_id, sa.bindparam("token_id")).label("may_register"))
    .outerjoin(Principal, Principal.id == MlflowMaker.user_id)
    .where(MlflowMaker.object_id.in_(sa.bindparam("object_ids", expanding=True)))
)


def record_maker(conn: sa.Connection, kind: str, object_id: str, caller: Caller, experiment_id: str | None = None) -> None:
    """Record that ``caller`` made MLflow's ``kind`` ``object_id`` (in ``experiment_id``); the first record stands."""
    values = {"kind": kind, "object_id": object_id, "user_id": caller.user_id, "key_id": caller.key_id,
              "admin": is_admin(caller), "created_at": sa.func.current_timestamp(), "experiment_id": experiment_id}
    table = MlflowMaker.__table__
    if conn.dialect.name in ("postgresql", "sqlite"):
        insert = import_module(f"sqlalchemy.dialects.{conn.dialect.name}").insert
        conn.execute(insert(table).values(**values).on_conflict_do_nothing(index_elements=["object_id", "kind"]))
        return
    try:  # MySQL and the rest: the primary key refuses a second record
        with conn.begin_nested():
            conn.execute(sa.insert(table).values(**values))
    except IntegrityError:
        pass


def makers(conn: sa.Connection, objects: list[tuple[str, str]], token_id: str | None = None) -> dict[tuple[str, str], Maker]:
    """The recorded maker of each (kind, id) of ``objects`` that has one, and whether it may
    register for ``token_id``: one query."""
    if not objects:
        return {}
    wanted = set(objects)
    rows = conn.execute(_MAKERS, {"object_ids": sorted({object_id for _, object_id in objects}), "token_id": token_id})
    return {(r.kind, r.object_id): Maker(r.kind, r.object_id, r.user_id, r.name, r.key_id, r.admin, bool(r.may_register))
            for r in rows if (r.kind, r.object_id) in wanted}


SOURCE = "source"  # a version's source that names no run or logged model (a bucket, a path)


def sources(run_id: str | None, model_id: str | None, source: str | None, model_id_field: str | None = None) -> list[tuple[str, str]]:
    """Every MLflow object a version names, as MLflow reads it: its run id, its logged model
    (the ``model_id`` field and a ``models:/m-...`` source), and a run or logged model its source
    path names (``runs:/<id>/...``, ``mlflow-artifacts:/<exp>/<run id>/artifacts/...``,
    ``.../models/m-.../artifacts``), which may differ from the declared ones. A source that names
    neither is itself a subject (``SOURCE``): nobody can be recorded as its maker, so it counts
    only where provenance is ``open``."""
    source_run, source_model = tags.source_run_id(source), tags.source_logged_model_id(source)
    found: list[tuple[str, str]] = []
    for kind, value in ((MADE_RUN, run_id), (MADE_LOGGED_MODEL, model_id), (MADE_LOGGED_MODEL, model_id_field),
                        (MADE_RUN, source_run), (MADE_LOGGED_MODEL, source_model),
                        (SOURCE, source if source and not (source_run or source_model) else None)):
        if value and (kind, value) not in found:
            found.append((kind, value))
    return found


def provenance_refusal(conn: sa.Connection, token_id: str, objects: list[tuple[str, str]], mode: str) -> str | None:
    """Why a version made from ``objects`` does not count for ``token_id``, or None if it does.
    Each object must have been made by someone with ``register`` on the token; one with no
    recorded maker passes where provenance is ``open`` and is refused where it is ``required``."""
    if not objects:
        if mode == REQUIRED:
            return (f"The version names no run or logged model that was logged through the gateway, so nobody can be "
                    f"credited with it for token '{token_id}': log the model through the gateway, then register it.")
        return None
    found = makers(conn, [o for o in objects if o[0] != SOURCE], token_id)
    for kind, object_id in objects:
        if kind == SOURCE:
            if mode == REQUIRED:
                return (f"The version's source {object_id} names no run or logged model, so nobody can be credited with "
                        f"it for token '{token_id}' (HOKUSAI_PROVENANCE=required): register from runs:/<run id>/... or "
                        "models:/m-... logged through the gateway.")
            continue
        what = f"{'Run' if kind == MADE_RUN else 'Logged model'} {object_id}"
        maker = found.get((kind, object_id))
        if maker is None:
            if mode == REQUIRED:
                return (f"{what} was not logged through the gateway, so its maker is unknown and it cannot count for "
                        f"token '{token_id}' (HOKUSAI_PROVENANCE=required): log it through the gateway with your key.")
            continue
        if maker.admin:
            continue
        if maker.user_id is None:
            return f"{what} was made with key {maker.key_id}, whose user no longer exists: it cannot count for token '{token_id}'."
        if not maker.may_register:
            return (f"{what} was made by user '{maker.user}', who may not register models for token '{token_id}': "
                    "a model counts only for the token of the people who made it.")
    return None


def check_mode(mode: str) -> str:
    mode = (mode or OPEN).strip().lower()
    if mode not in PROVENANCE_MODES:
        raise OwnershipError(f"HOKUSAI_PROVENANCE is {mode!r}: use 'open' or 'required'.", INVALID)
    return mode
