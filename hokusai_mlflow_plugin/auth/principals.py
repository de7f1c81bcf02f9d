"""Users and teams: made, listed, and teams' members added and removed. Users and teams share one
namespace (one table, a unique name), so that a token's owner named by a name is never ambiguous.
Functions take a session and never commit."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hokusai_mlflow_plugin.core.errors import CONFLICT, INVALID, NOT_FOUND, HokusaiError
from hokusai_mlflow_plugin.db.models import TEAM, USER, Principal, TeamMember, iso

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
NAME_FORM = "1 to 128 characters from A-Z, a-z, 0-9, '.', '_', '@' and '-', starting with a letter or digit"


class PrincipalError(HokusaiError):
    """A user or team request that cannot be carried out; the message says what to do."""


def check_name(name: str, kind: str) -> str:
    name = (name or "").strip()
    if not NAME_RE.fullmatch(name):
        raise PrincipalError(f"{name!r} is not a {kind} name: use {NAME_FORM}.", INVALID)
    return name


def create(session: Session, name: str, kind: str) -> Principal:
    """A new user or team. A name taken by a user or a team is refused (409)."""
    name = check_name(name, kind)
    taken = session.scalars(sa.select(Principal).where(Principal.name == name)).one_or_none()
    if taken is not None:
        raise PrincipalError(f"The name '{name}' is taken by a {taken.kind} already: users and teams share one "
                             "namespace, so that an owner is never ambiguous. Choose another name.", CONFLICT)
    row = Principal(name=name, kind=kind)
    session.add(row)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise PrincipalError(f"The name '{name}' is taken already: choose another name.", CONFLICT) from None
    return row


def find(session: Session, name: str, kind: str | None = None) -> Principal:
    """The user or team ``name`` (of ``kind`` if given); 404 otherwise."""
    row = session.scalars(sa.select(Principal).where(Principal.name == (name or "").strip())).one_or_none()
    if row is not None and kind is not None and row.kind != kind:
        raise PrincipalError(f"'{row.name}' is a {row.kind}, not a {kind}: give the name of a {kind} "
                             f"(see 'hokusai {kind} list').", NOT_FOUND)  # there is no {kind} of that name
    if row is None:
        what = kind or "user or team"
        command = f"hokusai {kind} create {name}" if kind else f"hokusai user create {name}"
        raise PrincipalError(f"No {what} named '{name}': create it with '{command}'.", NOT_FOUND)
    return row


def user_named(session: Session, name: str) -> Principal:
    """The user ``name``, made if missing (what a key created without ``--user`` acts for). An
    existing user is found by its name as it is, even one the migration made from an old key's
    name that today's rules would refuse."""
    row = session.scalars(sa.select(Principal).where(Principal.name == (name or "").strip())).one_or_none()
    if row is None:
        return create(session, name, USER)
    if row.kind != USER:
        raise PrincipalError(f"'{name}' is a team, and a key acts for a user: give --user USER.", CONFLICT)
    return row


def add_member(session: Session, team: str, user: str) -> tuple[Principal, Principal, bool]:
    """Add ``user`` to ``team``; whether it was added (False: a member already)."""
    team_row, user_row = find(session, team, TEAM), find(session, user, USER)
    if session.get(TeamMember, (team_row.id, user_row.id)) is not None:
        return team_row, user_row, False
    session.add(TeamMember(team_id=team_row.id, user_id=user_row.id))
    session.flush()
    return team_row, user_row, True


def remove_member(session: Session, team: str, user: str) -> tuple[Principal, Principal]:
    team_row, user_row = find(session, team, TEAM), find(session, user, USER)
    member = session.get(TeamMember, (team_row.id, user_row.id))
    if member is None:
        raise PrincipalError(f"User '{user}' is not a member of team '{team}': see 'hokusai team list'.", NOT_FOUND)
    session.delete(member)
    session.flush()
    return team_row, user_row


def list_users(session: Session, limit: int = 1000) -> list[dict]:
    """Users, each with the teams it belongs to."""
    users = list(session.scalars(sa.select(Principal).where(Principal.kind == USER).order_by(Principal.name).limit(limit)))
    teams = _pairs(session, TeamMember.user_id, [u.id for u in users], Principal.id == TeamMember.team_id)
    return [{"name": u.name, "teams": teams.get(u.id, []), "created_at": iso(u.created_at)} for u in users]


def list_teams(session: Session, limit: int = 1000) -> list[dict]:
    """Teams, each with its members."""
    found = list(session.scalars(sa.select(Principal).where(Principal.kind == TEAM).order_by(Principal.name).limit(limit)))
    members = _pairs(session, TeamMember.team_id, [t.id for t in found], Principal.id == TeamMember.user_id)
    return [{"name": t.name, "members": members.get(t.id, []), "created_at": iso(t.created_at)} for t in found]


def team_view(session: Session, name: str) -> dict:
    team = find(session, name, TEAM)
    members = _pairs(session, TeamMember.team_id, [team.id], Principal.id == TeamMember.user_id)
    return {"name": team.name, "members": members.get(team.id, []), "created_at": iso(team.created_at)}


def user_view(session: Session, name: str) -> dict:
    user = find(session, name, USER)
    teams = _pairs(session, TeamMember.user_id, [user.id], Principal.id == TeamMember.team_id)
    return {"name": user.name, "teams": teams.get(user.id, []), "created_at": iso(user.created_at)}


def _pairs(session: Session, by, ids: list[int], join_on) -> dict[int, list[str]]:
    """For each id of ``ids``: the names on the other side of the membership, sorted."""
    if not ids:
        return {}
    found: dict[int, list[str]] = {}
    for key, name in session.execute(sa.select(by, Principal.name).join(Principal, join_on).where(by.in_(ids))
                                     .order_by(Principal.name)):
        found.setdefault(key, []).append(name)
    return found
