"""Sessions of people signed in with an API key: one session opens the console and the MLflow UI
through the gateway, with one cookie.

The cookie holds a random id of 256 bits and nothing else; the database keeps only its SHA-256
(as keys keep their secret's), so a copy of the table opens nothing. A session is read on every
request it makes and ends on the server: at sign-out (its row is revoked, so a copy of the cookie
taken before is refused after), when its key is revoked or expires, and ``LIFETIME`` after the
sign-in, whatever the key. (A key's revocation records the end of its sessions: ``keys.revoke``.)
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.orm import Session

from hokusai_mlflow_plugin.auth.keys import Caller
from hokusai_mlflow_plugin.db.models import ApiKey, SignInSession, utcnow

COOKIE = "hokusai_session"
LIFETIME = timedelta(hours=12)  # a person signs in again after this, even with a good key
KEEP_ENDED = timedelta(days=1)  # rows of sessions ended longer ago are removed at the next sign-in
_ID = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)

_S, _K = SignInSession.__table__.c, ApiKey.__table__.c
FIND = (
    sa.select(_K.key_id, _K.name, _K.scopes, _K.user_id, _K.expires_at.label("key_expires_at"),
              _K.revoked_at.label("key_revoked_at"), _S.expires_at, _S.revoked_at)
    .select_from(SignInSession.__table__.join(ApiKey.__table__, _S.key_id == _K.key_id))
    .where(_S.id_sha256 == sa.bindparam("id_sha256"))
)


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def create(session: Session, caller: Caller, now: datetime | None = None, lifetime: timedelta = LIFETIME) -> str:
    """A new session for ``caller`` (a key just authenticated): the id for the cookie, shown here
    only. Rows of sessions that ended more than ``KEEP_ENDED`` ago go at the same time."""
    now = now or utcnow()
    session_id = secrets.token_urlsafe(32)
    session.execute(sa.delete(SignInSession).where(SignInSession.expires_at < now - KEEP_ENDED))
    session.add(SignInSession(id_sha256=digest(session_id), key_id=caller.key_id, created_at=now, expires_at=now + lifetime))
    session.flush()
    return session_id


def lookup(conn: sa.Connection, session_id: str | None, now: datetime | None = None) -> Caller | None:
    """The caller whose session ``session_id`` names, if the session and its key are both in
    force; else None (no such session, signed out, too old, or the key revoked or expired)."""
    if not session_id or not _ID.fullmatch(session_id):
        return None  # a malformed cookie never reaches the database
    return judge(conn.execute(FIND, {"id_sha256": digest(session_id)}).one_or_none(), now or utcnow())


def judge(row, now: datetime) -> Caller | None:
    """What a row of ``FIND`` says: the caller, or None when the session has ended."""
    if row is None or row.revoked_at is not None or row.key_revoked_at is not None or _aware(row.expires_at) <= now:
        return None
    key_expires = _aware(row.key_expires_at) if row.key_expires_at is not None else None
    if key_expires is not None and key_expires <= now:
        return None
    return Caller(row.key_id, row.name, tuple(row.scopes.split(",")), key_expires, row.user_id)


def end(session: Session, session_id: str | None, now: datetime | None = None) -> None:
    """Sign-out: the session is refused from now on, wherever its cookie is replayed."""
    if session_id and _ID.fullmatch(session_id):
        session.execute(sa.update(SignInSession).where(SignInSession.id_sha256 == digest(session_id),
                                                       SignInSession.revoked_at.is_(None)).values(revoked_at=now or utcnow()))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
