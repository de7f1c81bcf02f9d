"""Who may read and write an MLflow object: the one room that decides, beside ``ownership`` (tokens).

The gateway asks here, and carries no rule of its own (DESIGN.md, "Who may do what").

- Experiments (by id) and registered models (by name) have owners: an object made through the
  gateway belongs to its creator's team (the team it joined first, where it has several), or to the
  creator where it has none. Runs, logged models, traces and artifacts go with their experiment;
  model versions with their registered model.
- A user's right on an object: ``own`` as its owner or a member of the owning team (read, write,
  share); ``edit`` or ``read`` by a share to the user or one of its teams. The key's scope is a
  ceiling: a ``read`` key writes nothing.
- Objects with no owner row (made on MLflow directly, before the gateway recorded owners, or by an
  operator's admin key) are reached by admin keys alone, as tokens with no owner are.
- A registered model's owner is also its ``hokusai_owner`` tag in MLflow (the owner's principal id),
  written with the owner row by whoever records it (the gateway, the API) and by no key: a caller
  whose every readable model has one owner (no shares to it) gets its searches narrowed by that one
  tag (``single_model_owner``); MLflow spends about 1 ms per name parsing a ``name IN (...)`` filter.
- MLflow's Default experiment (id 0) has no owner and is nobody's window: a run, logged model or
  trace that a client puts in it through the gateway goes to its owner's own default experiment,
  made at first use (``default_experiment``). Experiment 0 itself is reached by admin keys alone.
- Hidden is not forbidden: an object the caller may not read is a 404 that reads as a missing one;
  one it may read but not change is a 403.
"""

from __future__ import annotations

import shlex
from importlib import import_module

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hokusai_mlflow_plugin.auth import principals
from hokusai_mlflow_plugin.auth.keys import ADMIN, REGISTER, Caller
from hokusai_mlflow_plugin.auth.ownership import principal_ids
from hokusai_mlflow_plugin.core.errors import (
    FORBIDDEN,
    INVALID,
    NOT_FOUND,
    HokusaiError,
)
from hokusai_mlflow_plugin.db.models import (
    EXPERIMENT,
    REGISTERED_MODEL,
    SHARE_EDIT,
    SHARE_READ,
    MlflowMaker,
    MlflowObject,
    MlflowShare,
    Principal,
    TeamMember,
)

# What a caller may do with an object, in order.
NONE, READ, EDIT, OWN = 0, 1, 2, 3
KINDS = (EXPERIMENT, REGISTERED_MODEL)
PERMISSIONS = {SHARE_READ: READ, SHARE_EDIT: EDIT}
DEFAULT_EXPERIMENT = "0"  # MLflow's Default experiment, which every client uses when none is set


class MlflowObjectError(HokusaiError):
    """A request on an MLflow object that the caller may not make (404 hidden, 403 forbidden)."""


class HiddenSource(MlflowObjectError):
    """A version's source in an experiment the caller may not read: said as a missing one."""


def is_admin(caller: Caller) -> bool:
    return caller.allows(ADMIN)


def what(kind: str, object_id: str) -> str:
    return f"experiment {object_id}" if kind == EXPERIMENT else f"registered model '{object_id}'"


def hidden(kind: str, object_id: str) -> MlflowObjectError:
    """The one answer for an object that does not exist AND for one the caller may not see."""
    return MlflowObjectError(f"No {what(kind, object_id)}, or not one your key may see.", NOT_FOUND)


def judge(kind: str, object_id: str, have: int, need: int, caller: Caller) -> MlflowObjectError | None:
    """The refusal of a request that needs ``need`` on an object the caller has ``have`` on, or None."""
    if have >= need:
        return None
    if have == NONE:
        return hidden(kind, object_id)
    if need == OWN:  # a share (read or edit) lets in, never on
        return MlflowObjectError(f"Only the owner of {what(kind, object_id)} (a member of its owning team) or an admin "
                                 "may share it.", FORBIDDEN)
    word = "experiment" if kind == EXPERIMENT else "model"
    return MlflowObjectError(f"API key {caller.key_id} may read {what(kind, object_id)} but not change it: ask its owner "
                             f"for edit ('hokusai mlflow share {word} {shlex.quote(str(object_id))} TEAM --permission edit').",
                             FORBIDDEN)


# -- rights ---------------------------------------------------------------------------------------------


def _right_query():
    user = sa.bindparam("user_id", type_=sa.Integer)
    mine = sa.union_all(sa.select(user), sa.select(TeamMember.team_id).where(TeamMember.user_id == user))
    owned = sa.exists().where(MlflowObject.kind == sa.bindparam("kind"), MlflowObject.object_id == sa.bindparam("object_id"),
                              MlflowObject.owner_id.in_(mine))
    shared = (sa.select(sa.func.max(sa.case((MlflowShare.permission == SHARE_EDIT, EDIT), else_=READ)))
              .where(MlflowShare.kind == sa.bindparam("kind"), MlflowShare.object_id == sa.bindparam("object_id"),
                     MlflowShare.principal_id.in_(mine)).scalar_subquery())
    return sa.select(owned, shared)


_RIGHT = _right_query()  # built once: the gateway asks it for each object it has not seen lately


def user_right(conn: sa.Connection | Session, user_id: int | None, kind: str, object_id: str) -> int:
    """What user ``user_id`` may do with the object, before its key's scopes (one query)."""
    if user_id is None:
        return NONE
    owned, shared = conn.execute(_RIGHT, {"user_id": user_id, "kind": kind, "object_id": str(object_id)}).one()
    return OWN if owned else int(shared or NONE)


def ceiling(caller: Caller, right: int) -> int:
    """``right`` under the key's scopes: a key without ``register`` only reads."""
    if is_admin(caller):
        return OWN
    return min(right, READ) if not caller.allows(REGISTER) else right


def right(conn: sa.Connection | Session, caller: Caller, kind: str, object_id: str) -> int:
    if is_admin(caller):
        return OWN
    return ceiling(caller, user_right(conn, caller.user_id, kind, object_id))


def visible(conn: sa.Connection | Session, caller: Caller, kind: str) -> list[str] | None:
    """The ids (experiments) or names (registered models) ``caller`` may read, sorted; None for an
    admin (everything). What the gateway narrows a search to, before the query."""
    if is_admin(caller):
        return None
    if caller.user_id is None:
        return []
    mine = principal_ids(caller.user_id)
    owned = sa.select(MlflowObject.object_id).where(MlflowObject.kind == kind, MlflowObject.owner_id.in_(mine))
    shared = sa.select(MlflowShare.object_id).where(MlflowShare.kind == kind, MlflowShare.principal_id.in_(mine))
    return sorted(conn.execute(sa.union(owned, shared)).scalars())


def single_model_owner(conn: sa.Connection | Session, caller: Caller) -> int | None:
    """The one principal whose registered models are exactly those ``caller`` may read (it is, or is a
    member of, their owner, and no model is shared with it), or None: then only the list of names
    says what it may read. Where it is one, a search is narrowed by the ``hokusai_owner`` tag."""
    if is_admin(caller) or caller.user_id is None:
        return None
    mine = principal_ids(caller.user_id)
    owners = conn.execute(sa.select(MlflowObject.owner_id).where(MlflowObject.kind == REGISTERED_MODEL,
                                                                 MlflowObject.owner_id.in_(mine)).distinct().limit(2)).scalars().all()
    shared = conn.execute(sa.select(sa.exists().where(MlflowShare.kind == REGISTERED_MODEL,
                                                      MlflowShare.principal_id.in_(mine)))).scalar()
    return owners[0] if len(owners) == 1 and not shared else None


# -- owners ---------------------------------------------------------------------------------------------


def owner_of_new(conn: sa.Connection | Session, caller: Caller) -> int | None:
    """Who owns what ``caller`` creates: its user's first team (joined first), else its user; None
    for an operator's admin key with no user (reached by admins alone)."""
    if caller.user_id is None:
        return None
    team = conn.execute(sa.select(TeamMember.team_id).where(TeamMember.user_id == caller.user_id)
                        .order_by(TeamMember.added_at, TeamMember.team_id).limit(1)).scalar()
    return team if team is not None else caller.user_id


def record_owner(conn: sa.Connection, kind: str, object_id: str, caller: Caller, is_default: bool = False) -> int | None:
    """Record that ``caller`` created the object (its owner: ``owner_of_new``); the first record
    stands. Returns the owner recorded (a registered model's ``hokusai_owner`` tag)."""
    values = {"kind": kind, "object_id": str(object_id), "owner_id": owner_of_new(conn, caller), "creator_id": caller.user_id,
              "key_id": caller.key_id, "is_default": is_default, "created_at": sa.func.current_timestamp()}
    _insert_once(conn, MlflowObject.__table__, values, ["kind", "object_id"])
    return conn.execute(sa.select(MlflowObject.owner_id).where(MlflowObject.kind == kind,
                                                               MlflowObject.object_id == str(object_id))).scalar()


def model_owners(conn: sa.Connection | Session, name: str | None = None) -> dict[str, int]:
    """Every registered model with a recorded owner (or the one named): its name -> the owner's
    principal id (what its ``hokusai_owner`` tag in MLflow says)."""
    query = sa.select(MlflowObject.object_id, MlflowObject.owner_id).where(
        MlflowObject.kind == REGISTERED_MODEL, MlflowObject.owner_id.is_not(None))
    return dict(conn.execute(query if name is None else query.where(MlflowObject.object_id == name)).all())


def rename(conn: sa.Connection, kind: str, old: str, new: str) -> None:
    """A registered model renamed in MLflow keeps its owner and shares under its new name."""
    conn.execute(sa.delete(MlflowObject).where(MlflowObject.kind == kind, MlflowObject.object_id == new))
    conn.execute(sa.delete(MlflowShare).where(MlflowShare.kind == kind, MlflowShare.object_id == new))
    conn.execute(sa.update(MlflowObject).where(MlflowObject.kind == kind, MlflowObject.object_id == old).values(object_id=new))
    conn.execute(sa.update(MlflowShare).where(MlflowShare.kind == kind, MlflowShare.object_id == old).values(object_id=new))


def default_experiment(conn: sa.Connection, caller: Caller) -> tuple[int | None, str | None, str | None]:
    """The owner that stands for ``caller``'s runs in MLflow's Default experiment, its own default
    experiment's id if it has one yet, and the owner's name (what that experiment is called)."""
    owner = owner_of_new(conn, caller)
    if owner is None:
        return None, None, None
    found = conn.execute(sa.select(MlflowObject.object_id).where(
        MlflowObject.kind == EXPERIMENT, MlflowObject.owner_id == owner, MlflowObject.is_default.is_(True))
        .order_by(MlflowObject.created_at).limit(1)).scalar()
    return owner, found, conn.execute(sa.select(Principal.name).where(Principal.id == owner)).scalar()


def experiment_of(conn: sa.Connection, kind: str, object_id: str) -> str | None:
    """The experiment a recorded run or logged model was made in, or None if unrecorded."""
    return conn.execute(sa.select(MlflowMaker.experiment_id).where(
        MlflowMaker.object_id == object_id, MlflowMaker.kind == kind)).scalar()


def require_for_version(session: Session, caller: Caller, source: tuple[str, str] | None, model_name: str) -> None:
    """A version made outside the gateway (the API's ``POST /models/register``) keeps the gateway's
    rules where they are recorded: its source run or logged model (``source``: its maker's kind
    and id), if made in an owned experiment, must be one the caller may read (else
    ``MlflowObjectError`` 404, as a missing one), and its registered model, if owned, one it may
    write. What the gateway never recorded (made on MLflow directly) stays as it was: provenance
    judges it."""
    if is_admin(caller):
        return
    if source is not None:
        experiment = experiment_of(session, source[0], source[1])
        if experiment is not None and session.get(MlflowObject, (EXPERIMENT, experiment)) is not None \
                and right(session, caller, EXPERIMENT, experiment) < READ:
            raise HiddenSource(f"No {source[0].replace('_', ' ')} {source[1]}, or not one your key may see.", NOT_FOUND)
    if session.get(MlflowObject, (REGISTERED_MODEL, model_name)) is not None:
        refusal = judge(REGISTERED_MODEL, model_name, right(session, caller, REGISTERED_MODEL, model_name), EDIT, caller)
        if refusal is not None:
            raise refusal


# -- shares ---------------------------------------------------------------------------------------------


def share(session: Session, caller: Caller, kind: str, object_id: str, principal_id: int, permission: str) -> None:
    """Give ``permission`` (read or edit) on the object to a team or user: its owner (or a member of
    the owning team) and admins may; the share replaces an earlier one."""
    if kind not in KINDS:
        raise MlflowObjectError(f"{kind!r} is not an MLflow object that has owners: use experiment or model.", INVALID)
    if permission not in PERMISSIONS:
        raise MlflowObjectError(f"{permission!r} is not a permission: use read or edit.", INVALID)
    refusal = judge(kind, object_id, right(session, caller, kind, object_id), OWN, caller)
    if refusal is not None:
        raise refusal
    if session.get(MlflowObject, (kind, str(object_id))) is None:
        raise hidden(kind, object_id)  # an admin sharing an object the gateway never recorded
    row = session.get(MlflowShare, (kind, str(object_id), principal_id))
    if row is None:
        session.add(MlflowShare(kind=kind, object_id=str(object_id), principal_id=principal_id, permission=permission))
    else:
        row.permission = permission
    session.flush()


def unshare(session: Session, caller: Caller, kind: str, object_id: str, principal_id: int) -> bool:
    refusal = judge(kind, object_id, right(session, caller, kind, object_id), OWN, caller)
    if refusal is not None:
        raise refusal
    row = session.get(MlflowShare, (kind, str(object_id), principal_id))
    if row is not None:
        session.delete(row)
        session.flush()
    return row is not None


def shares(session: Session, kind: str, object_id: str) -> list[tuple[int, str]]:
    return [(r.principal_id, r.permission) for r in session.scalars(
        sa.select(MlflowShare).where(MlflowShare.kind == kind, MlflowShare.object_id == str(object_id)))]


def share_view(session: Session, caller: Caller, kind: str, object_id: str) -> dict:
    """The object's owner and its shares, by name, for a caller that may read it (404 otherwise,
    and for an object the gateway never recorded)."""
    if kind not in KINDS:
        raise MlflowObjectError(f"{kind!r} is not an MLflow object that has owners: use experiment or model.", INVALID)
    refusal = judge(kind, object_id, right(session, caller, kind, object_id), READ, caller)
    row = session.get(MlflowObject, (kind, str(object_id)))
    if refusal is not None or row is None:
        raise refusal or hidden(kind, object_id)
    owner = session.get(Principal, row.owner_id) if row.owner_id is not None else None
    found = session.execute(sa.select(Principal.name, Principal.kind, MlflowShare.permission)
                            .join(Principal, Principal.id == MlflowShare.principal_id)
                            .where(MlflowShare.kind == kind, MlflowShare.object_id == str(object_id))
                            .order_by(Principal.name)).all()
    return {"kind": kind, "object_id": str(object_id), "owner": owner.name if owner is not None else None,
            "shares": [{"name": n, "kind": k, "permission": p} for n, k, p in found]}


def share_named(session: Session, caller: Caller, kind: str, object_id: str, name: str, permission: str | None) -> dict:
    """Share the object with the team or user ``name`` (``permission`` read or edit), or take the
    share away (``permission`` None); the object's owner and shares after it."""
    if kind not in KINDS:
        raise MlflowObjectError(f"{kind!r} is not an MLflow object that has owners: use experiment or model.", INVALID)
    who = principals.find(session, name)
    if permission is None:
        unshare(session, caller, kind, object_id, who.id)
    else:
        share(session, caller, kind, object_id, who.id, permission)
    return share_view(session, caller, kind, object_id)


def _insert_once(conn: sa.Connection, table: sa.Table, values: dict, key: list[str]) -> None:
    if conn.dialect.name in ("postgresql", "sqlite"):
        insert = import_module(f"sqlalchemy.dialects.{conn.dialect.name}").insert
        conn.execute(insert(table).values(**values).on_conflict_do_nothing(index_elements=key))
        return
    try:
        with conn.begin_nested():
            conn.execute(sa.insert(table).values(**values))
    except IntegrityError:
        pass
