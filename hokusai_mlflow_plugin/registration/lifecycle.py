"""The token's life after registration: ``registered -> deployed`` (and back), and ``archived``.

Each change is a compare-and-set on the token's status, like ``draft -> registered``: of two
deployers acting at once, one wins and the other gets a 409, never a lost update. In the same
transaction each change writes its history row (``TokenTransition``: who, when, why, the version)
and its outbox event (``token_deployed``, ``token_undeployed``, ``token_archived``), delivered to
every sink with the same envelope and guarantees as ``token_ready_for_deploy``. The same call
again is a no-op: the same answer, no second row, no second event.

Who may: deploying and undeploying need ``register`` on the token (its owner, the owning team, a
``register`` grant) under a ``deploy`` key; archiving needs to own it (the owner, or a member of
the owning team) or an admin key. A token the caller may not see is a 404, as ever.
Functions take a session and never commit.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hokusai_mlflow_plugin.auth import ownership
from hokusai_mlflow_plugin.auth.keys import Caller
from hokusai_mlflow_plugin.core.errors import CONFLICT, FORBIDDEN, INVALID, HokusaiError
from hokusai_mlflow_plugin.db.models import (
    ARCHIVED,
    DEPLOYED,
    DRAFT,
    NOTIFY_CHANNEL,
    OUTCOME_REGISTERED,
    REGISTERED,
    TEAM,
    OutboxEvent,
    Principal,
    Registration,
    TeamMember,
    Token,
    TokenTransition,
    iso,
    utcnow,
)

TOKEN_DEPLOYED, TOKEN_UNDEPLOYED, TOKEN_ARCHIVED = "token_deployed", "token_undeployed", "token_archived"
# A target names where a version serves, and becomes its alias in MLflow: MLflow's alias rules
# (letters, digits, '_' and '-'; not 'latest', nor v<number>, which name versions).
_TARGET = re.compile(r"[A-Za-z0-9_-]{1,64}")
TARGET_FORM = "1 to 64 characters from A-Z, a-z, 0-9, '_' and '-', not 'latest' nor v<number>"


class LifecycleError(HokusaiError):
    """A status change the token's state or the caller's rights forbid; the message says why."""


@dataclass
class Change:
    """What a lifecycle call did: the token after it, whether it moved (False: the same call
    again, nothing written), and the outbox events it wrote."""

    token: Token
    moved: bool
    event_ids: list[str] = field(default_factory=list)


def check_target(target: str) -> str:
    target = (target or "").strip()
    if not _TARGET.fullmatch(target) or target.lower() == "latest" or re.fullmatch(r"[vV]\d+", target):
        raise LifecycleError(f"{target!r} is not a deployment target: use {TARGET_FORM}, such as 'production'.", INVALID)
    return target


def deploy(session: Session, caller: Caller, token_id: str, model_name: str, version: str, target: str) -> Change:
    """``registered -> deployed``: the token's registered version serves at ``target``."""
    target, version = check_target(target), str(version).strip()
    token = ownership.token_for(session, caller, token_id, ownership.REGISTER_RIGHT)
    if token.status == DEPLOYED and (token.model_name, token.model_version, token.deployment_target) == (model_name, version, target):
        return Change(token, False)
    _check_can_deploy(token, model_name, version, target)
    claimed = session.execute(
        sa.update(Token)
        .where(Token.token_id == token.token_id, Token.status == REGISTERED, Token.model_name == model_name,
               Token.model_version == version)
        .values(status=DEPLOYED, deployment_target=target, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    session.refresh(token)
    if claimed != 1:  # another deployer changed it between our read and our write: judge again
        if token.status == DEPLOYED and (token.model_name, token.model_version, token.deployment_target) == (model_name, version, target):
            return Change(token, False)
        _check_can_deploy(token, model_name, version, target)
        raise LifecycleError(f"Token '{token.token_id}' changed while it was being deployed: try again.", CONFLICT)
    events = _moved(session, caller, token, REGISTERED, DEPLOYED, TOKEN_DEPLOYED, target=target)
    return Change(token, True, events)


def undeploy(session: Session, caller: Caller, token_id: str) -> Change:
    """``deployed -> registered``: the version no longer serves. Undeploying a token that is not
    deployed is a no-op for a registered one, a 409 otherwise."""
    token = ownership.token_for(session, caller, token_id, ownership.REGISTER_RIGHT)
    if token.status == REGISTERED:
        return Change(token, False)
    if token.status != DEPLOYED:
        raise LifecycleError(f"Token '{token.token_id}' is {token.status}, not deployed: there is no deployment to end.", CONFLICT)
    target = token.deployment_target
    claimed = session.execute(
        sa.update(Token).where(Token.token_id == token.token_id, Token.status == DEPLOYED)
        .values(status=REGISTERED, deployment_target=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    session.refresh(token)
    if claimed != 1:
        if token.status == REGISTERED:
            return Change(token, False)
        raise LifecycleError(f"Token '{token.token_id}' is {token.status}, not deployed: there is no deployment to end.", CONFLICT)
    events = _moved(session, caller, token, DEPLOYED, REGISTERED, TOKEN_UNDEPLOYED, target=target)
    return Change(token, True, events)


def archive(session: Session, caller: Caller, token_id: str, reason: str | None = None) -> Change:
    """Any status -> ``archived``, for good: an archived token takes no model and is never
    un-archived (a new token is made instead). Its owner (or the owning team's member) or an admin."""
    token = ownership.token_for(session, caller, token_id)
    if not (ownership.is_admin(caller) or _owns(session, caller, token)):
        raise LifecycleError(f"Only token '{token.token_id}''s owner or an admin may archive it: API key {caller.key_id} "
                             "may read it but does not own it.", FORBIDDEN)
    if token.status == ARCHIVED:
        return Change(token, False)
    was = token.status
    claimed = session.execute(
        sa.update(Token).where(Token.token_id == token.token_id, Token.status == was)
        .values(status=ARCHIVED, deployment_target=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    session.refresh(token)
    if claimed != 1:
        if token.status == ARCHIVED:
            return Change(token, False)
        raise LifecycleError(f"Token '{token.token_id}' changed while it was being archived: try again.", CONFLICT)
    events = _moved(session, caller, token, was, ARCHIVED, TOKEN_ARCHIVED, reason=(reason or "").strip()[:2000] or None,
                    target=None)
    return Change(token, True, events)


def history(session: Session, caller: Caller, token_id: str) -> list[dict]:
    """Every status change of the token, oldest first: its registration (draft -> registered, the
    registration row records it) and each change after it."""
    token = ownership.token_for(session, caller, token_id)
    entries = []
    registered = session.scalars(
        sa.select(Registration).where(Registration.token_id == token.token_id, Registration.outcome == OUTCOME_REGISTERED)
    ).first()
    if registered is not None:
        entries.append({"from": DRAFT, "to": REGISTERED, "at": iso(registered.created_at), "actor": "mlflow",
                        "key_id": None, "reason": registered.reason, "model_name": registered.model_name,
                        "model_version": registered.model_version, "target": None, "run_id": registered.mlflow_run_id})
    rows = session.scalars(sa.select(TokenTransition).where(TokenTransition.token_id == token.token_id)
                           .order_by(TokenTransition.id))
    entries.extend({**row.to_dict(), "run_id": None} for row in rows)
    return entries


def _check_can_deploy(token: Token, model_name: str, version: str, target: str) -> None:
    if token.status == ARCHIVED:
        raise LifecycleError(f"Token '{token.token_id}' is archived: an archived token is never deployed nor un-archived; "
                             "make a new token instead.", CONFLICT)
    if token.status == DRAFT:
        raise LifecycleError(f"Token '{token.token_id}' is draft: register a model for it before deploying.", CONFLICT)
    if (model_name, version) != (token.model_name, token.model_version):
        raise LifecycleError(f"Model '{model_name}' version {version} is not token '{token.token_id}''s: its registered "
                             f"version is '{token.model_name}' version {token.model_version}.", CONFLICT)
    if token.status == DEPLOYED:
        raise LifecycleError(f"Token '{token.token_id}' is deployed to '{token.deployment_target}' already: undeploy it "
                             f"before deploying it to '{target}'.", CONFLICT)


def _owns(session: Session, caller: Caller, token: Token) -> bool:
    """Whether the caller's user is the token's owner or a member of its owning team."""
    if caller.user_id is None or token.owner_id is None:
        return False
    if token.owner_id == caller.user_id:
        return True
    owner = session.get(Principal, token.owner_id)
    return owner is not None and owner.kind == TEAM and session.get(TeamMember, (owner.id, caller.user_id)) is not None


# The CLI on the database holds no key: its operator has the database's credentials, which reach
# everything anyway. It acts as an admin, and the history names the OS user who ran it.
COMMAND_LINE = "cli"


def operator(os_user: str) -> Caller:
    """The caller of the CLI on the database: an admin, named by the OS user running it."""
    return Caller(COMMAND_LINE, (os_user or "unknown user").strip()[:100], ("admin",))


def actor_of(session: Session, caller: Caller) -> str:
    """Who acted, for the history: the key's user, the key's name for an operator's key, or the
    OS user of the CLI on the database."""
    if caller.key_id == COMMAND_LINE and caller.user_id is None:
        return f"{caller.name} (command line)"
    user = session.get(Principal, caller.user_id) if caller.user_id is not None else None
    return user.name if user is not None else f"key {caller.name}"


def _moved(session: Session, caller: Caller, token: Token, was: str, now: str, event_type: str, *, target: str | None,
           reason: str | None = None) -> list[str]:
    """The history row and the outbox event of a change that took, in the change's transaction."""
    at = utcnow()
    actor = actor_of(session, caller)
    session.add(TokenTransition(token_id=token.token_id, from_status=was, to_status=now, at=at, actor=actor,
                                key_id=caller.key_id, reason=reason, model_name=token.model_name,
                                model_version=token.model_version, target=target))
    event = OutboxEvent(event_id=str(uuid.uuid4()), event_type=event_type, created_at=at, payload={
        "token_id": token.token_id, "mlflow_run_id": token.mlflow_run_id, "model_name": token.model_name,
        "model_version": token.model_version,
        "metadata": {"from_status": was, "to_status": now, "target": target, "by": actor, "reason": reason,
                     "metric_name": token.metric_name, "metric_value": token.metric_value,
                     "baseline_value": token.baseline_value},
    })
    session.add(event)
    session.flush()
    if session.get_bind().dialect.name == "postgresql":  # heard at commit by the relays' watch
        session.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, event.event_id)))
    return [event.event_id]
