"""The gateway's key cache on PostgreSQL: a checked key is answered from memory until a revocation,
made by any other connection (another process's; here the test's own sessions), is heard; nothing
is trusted while the revocation watch is down. On SQLite nothing is remembered."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.auth.key_cache import KeyCache
from hokusai_mlflow_plugin.db.models import KEYS_CHANNEL, utcnow
from hokusai_mlflow_plugin.db.session import get_engine, session_factory


def make(url, *scopes, expires_in=None):
    with session_factory(url).begin() as session:
        return keys.create(session, "cached", scopes or ("read",), expires_in).key


def revoke(url, key):
    with session_factory(url).begin() as session:
        keys.revoke(session, key[3:11])


def until(predicate, timeout=10.0):
    """Wait for ``predicate()`` (a background thread's work), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not hold in time")
        time.sleep(0.01)


@pytest.fixture
def db_url(pg_url):
    return pg_url


@pytest.fixture
def cache(db_url):
    cache = KeyCache(db_url).start()
    key = make(db_url)
    until(lambda: cache.check(key) and cache.cached(key) is not None)  # once the watch listens
    yield cache
    cache.close()


def test_a_checked_key_is_answered_from_memory_until_it_is_revoked(db_url, cache):
    key = make(db_url, "register")
    assert cache.cached(key) is None  # never checked: the database must be asked
    caller = cache.check(key)
    assert caller.scopes == ("register",) and cache.cached(key) == caller
    revoke(db_url, key)
    until(lambda: cache.cached(key) is None)  # when the NOTIFY is heard: the test measures how soon
    with pytest.raises(keys.NotAuthenticated, match="revoked"):
        cache.check(key)
    assert cache.cached(key) is None


def test_only_the_right_secret_is_answered_from_memory(db_url, cache):
    key = make(db_url)
    cache.check(key)
    forged = key[:12] + ("A" if key[12] != "A" else "B") + key[13:]
    assert cache.cached(forged) is None
    with pytest.raises(keys.NotAuthenticated, match="not known"):
        cache.check(forged)
    assert cache.cached(key) is not None


def test_expiry_and_the_minute_of_last_use_send_the_key_back_to_the_database(db_url, cache):
    key = make(db_url, expires_in=timedelta(minutes=30))
    cache.check(key)
    assert cache.cached(key, now=utcnow() + timedelta(seconds=30)) is not None
    assert cache.cached(key, now=utcnow() + timedelta(minutes=1, seconds=1)) is None  # its use is recorded again
    assert cache.cached(key, now=utcnow() + timedelta(minutes=31)) is None
    with get_engine(db_url).connect() as conn:
        assert conn.execute(sa.text("SELECT last_used_at FROM hokusai_api_keys WHERE key_id = :k"), {"k": key[3:11]}).scalar() is not None


def test_a_missing_or_malformed_key_is_refused_without_the_database(db_url, cache):
    with pytest.raises(keys.NotAuthenticated, match="required"):
        cache.cached(None)
    with pytest.raises(keys.NotAuthenticated, match="malformed"):
        cache.cached("hk_nothex_secret")


def test_postgresql_trusts_nothing_while_the_watch_is_down(pg_url):
    cache = KeyCache(pg_url).start()
    key = make(pg_url)
    try:
        until(lambda: cache.check(key) and cache.cached(key) is not None)
        with get_engine(pg_url).connect() as conn:  # the watch's connection dies (a failover, a restart)
            killed = conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = :q AND datname = current_database()"
            ), {"q": f"LISTEN {KEYS_CHANNEL}"}).scalars().all()
            conn.commit()
        assert killed == [True]
        until(lambda: cache.cached(key) is None)
        cache.check(key)
        assert cache.cached(key) is None or _listening(pg_url)  # remembered again only once it listens again
        until(lambda: cache.check(key) and cache.cached(key) is not None)  # and it does (reconnects in ~2 s)
        revoke(pg_url, key)
        until(lambda: cache.cached(key) is None)
    finally:
        cache.close()


def _listening(url) -> bool:
    with get_engine(url).connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE query = :q AND datname = current_database()"),
                            {"q": f"LISTEN {KEYS_CHANNEL}"}).scalar() > 0


def test_sqlite_is_never_trusted_from_memory(tmp_path):
    """No notifications to watch: every request is checked, and a revocation holds at once."""
    from hokusai_mlflow_plugin.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    upgrade(url)
    cache = KeyCache(url).start()
    key = make(url)
    try:
        assert cache.check(key).key_id == key[3:11]
        assert cache.cached(key) is None
        revoke(url, key)
        with pytest.raises(keys.NotAuthenticated, match="revoked"):
            cache.check(key)
    finally:
        cache.close()
