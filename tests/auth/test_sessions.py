"""auth.sessions on SQLite and PostgreSQL: a session is a row that ends on the server (sign-out, its
key's revocation or expiry, its lifetime), and the database holds only the SHA-256 of its id."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import sqlalchemy as sa

from hokusai_mlflow_plugin.auth import keys, sessions
from hokusai_mlflow_plugin.db.models import SignInSession, utcnow
from hokusai_mlflow_plugin.db.session import session_factory


def opened(db_url, scopes=("read",), expires_in=None, **kw):
    """A new key and a session signed in with it: (key id, session id)."""
    with session_factory(db_url).begin() as s:
        new = keys.create(s, "person", scopes, expires_in=expires_in)
        caller = keys.authenticate(s.connection(), new.key)
        return caller.key_id, sessions.create(s, caller, **kw)


def lookup(db_url, session_id, now=None):
    with session_factory(db_url).begin() as s:
        return sessions.lookup(s.connection(), session_id, now)


def test_a_session_names_its_key_and_the_database_holds_only_a_hash_of_its_id(db_url):
    key_id, session_id = opened(db_url, ("register",))
    assert len(session_id) == 43  # secrets.token_urlsafe(32): 256 random bits
    caller = lookup(db_url, session_id)
    assert (caller.key_id, caller.scopes) == (key_id, ("register",))
    with session_factory(db_url)() as s:
        stored = s.scalars(sa.select(SignInSession).where(SignInSession.key_id == key_id)).one()
    assert stored.id_sha256 == hashlib.sha256(session_id.encode()).hexdigest()
    assert session_id not in repr([getattr(stored, c.key) for c in SignInSession.__table__.columns])


def test_sign_out_ends_the_session_wherever_its_id_is_replayed(db_url):
    _, session_id = opened(db_url)
    _, other = opened(db_url)
    with session_factory(db_url).begin() as s:
        sessions.end(s, session_id)
    assert lookup(db_url, session_id) is None
    assert lookup(db_url, other) is not None  # only that one


def test_a_revoked_or_expired_key_ends_its_sessions(db_url):
    key_id, session_id = opened(db_url)
    with session_factory(db_url).begin() as s:
        keys.revoke(s, key_id)
    assert lookup(db_url, session_id) is None
    with session_factory(db_url)() as s:
        assert s.scalars(sa.select(SignInSession.revoked_at).where(SignInSession.key_id == key_id)).one() is not None

    _, expiring = opened(db_url, expires_in=timedelta(minutes=30))
    assert lookup(db_url, expiring) is not None
    assert lookup(db_url, expiring, now=utcnow() + timedelta(minutes=31)) is None


def test_a_session_ends_after_its_lifetime_and_old_rows_go(db_url):
    _, session_id = opened(db_url, lifetime=timedelta(hours=12))
    assert lookup(db_url, session_id, now=utcnow() + timedelta(hours=11)) is not None
    assert lookup(db_url, session_id, now=utcnow() + timedelta(hours=12, seconds=1)) is None
    # A sign-in two days later removes the rows of sessions that ended more than a day before.
    with session_factory(db_url).begin() as s:
        new = keys.create(s, "later", ("read",))
        sessions.create(s, keys.authenticate(s.connection(), new.key), now=utcnow() + timedelta(days=2))
    with session_factory(db_url)() as s:
        left = s.scalars(sa.select(SignInSession.id_sha256)).all()
    assert hashlib.sha256(session_id.encode()).hexdigest() not in left and len(left) == 1


def test_a_malformed_or_unknown_id_is_no_session(db_url):
    for session_id in (None, "", "x", "a" * 43 + "!", "' OR 1=1 --", "a" * 500, "A" * 43):
        assert lookup(db_url, session_id) is None
