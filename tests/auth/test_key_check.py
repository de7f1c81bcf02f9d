"""The gateway's key check on PostgreSQL and SQLite: what is answered from memory, and that a
revocation made anywhere (here by the test's own sessions, as the CLI and the console do) is
refused on the next request the moment ``revoke_everywhere`` returns."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from datetime import timedelta

import psycopg
import pytest
import sqlalchemy as sa

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.auth.key_check import KeyCheck
from hokusai_mlflow_plugin.auth.revocation import (DEFAULT_LEASE, LEASE_MARGIN, RATE_MARGIN, WATCH_APPLICATION, lease_of,
                                                    revoke_everywhere, watch_name)
from hokusai_mlflow_plugin.db.session import libpq_dsn
from hokusai_mlflow_plugin.core.errors import DatabaseUnavailable
from hokusai_mlflow_plugin.db.session import session_factory


def make(url, *scopes, expires_in=None):
    with session_factory(url).begin() as session:
        return keys.create(session, "checked", scopes or ("read",), expires_in).key


def until(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.02)


def remembered(check, loop, key) -> bool:
    """Whether a second request with ``key`` is answered without reading the database."""
    loop.caller(check, key)
    reads = check.reads
    loop.caller(check, key)
    return check.reads == reads


class Loop:
    """One event loop for a test's KeyCheck (its asyncio connection belongs to one loop)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()

    def caller(self, check, key):
        return self.loop.run_until_complete(check.caller(key))

    def close(self, check):
        self.loop.run_until_complete(check.close())
        self.loop.close()


@pytest.fixture
def pg_check(pg_url):
    check, loop = KeyCheck(pg_url).start(), Loop()
    warm = make(pg_url)
    until(lambda: remembered(check, loop, warm))  # once the watch listens (it starts in a thread)
    yield check, loop
    loop.close(check)


def test_a_checked_key_is_answered_from_memory_and_a_revoked_one_refused_at_once(pg_url, pg_check):
    check, loop = pg_check
    key = make(pg_url, "register")
    assert loop.caller(check, key).scopes == ("register",)
    reads = check.reads
    assert [loop.caller(check, key).key_id for _ in range(20)] == [key[3:11]] * 20
    assert check.reads == reads  # twenty requests, no database read
    revoked = revoke_everywhere(session_factory(pg_url), key[3:11])
    assert revoked.gateways >= 1 and revoked.unconfirmed == 0
    with pytest.raises(keys.NotAuthenticated, match="was revoked"):  # the very next request
        loop.caller(check, key)


def test_only_the_right_secret_is_answered_from_memory(pg_url, pg_check):
    check, loop = pg_check
    key = make(pg_url)
    loop.caller(check, key)
    forged = key[:12] + ("A" if key[12] != "A" else "B") + key[13:]
    with pytest.raises(keys.NotAuthenticated, match="not known"):
        loop.caller(check, forged)
    assert loop.caller(check, key).key_id == key[3:11]


def test_a_remembered_key_is_refused_once_it_expires(pg_url, pg_check):
    check, loop = pg_check
    key = make(pg_url, expires_in=timedelta(seconds=2))
    assert remembered(check, loop, key)
    time.sleep(2.1)
    with pytest.raises(keys.NotAuthenticated, match="expired"):
        loop.caller(check, key)


def test_nothing_is_remembered_while_the_watch_is_down(pg_url, pg_check):
    check, loop = pg_check
    key = make(pg_url)
    loop.caller(check, key)
    with psycopg.connect(libpq_dsn(pg_url), autocommit=True) as conn:  # the watch's connection dies (a failover)
        killed = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s "
                              "AND datname = current_database()", (WATCH_APPLICATION + " lease=%",)).fetchall()
    assert killed == [(True,)]
    until(lambda: not remembered(check, loop, key), timeout=5)  # every request is read while it is down
    until(lambda: remembered(check, loop, key))  # and remembered again once it listens again (about 2 s)
    assert revoke_everywhere(session_factory(pg_url), key[3:11]).unconfirmed == 0
    with pytest.raises(keys.NotAuthenticated, match="was revoked"):
        loop.caller(check, key)


def test_a_gateway_that_does_not_answer_is_waited_for_until_its_lease_has_run_out(pg_url, caplog):
    key = make(pg_url)
    # a watch that is stuck (its gateway cut off), declaring a lease of 0.5 s
    with psycopg.connect(libpq_dsn(pg_url), autocommit=True, application_name=watch_name(0.5)):
        started = time.monotonic()
        revoked = revoke_everywhere(session_factory(pg_url), key[3:11])
        waited = time.monotonic() - started
    assert revoked.gateways == 1 and revoked.unconfirmed == 1
    assert 0.5 <= revoked.waited_for_lease <= waited < 0.5 * (1 + RATE_MARGIN) + LEASE_MARGIN + 2  # its lease, not longer
    assert "did not confirm" in caplog.text and "lease" in caplog.text and key[12:] not in caplog.text


def test_memory_is_trusted_only_within_the_lease_of_the_last_news(pg_url):
    """A watch that stops hearing the database (here: its news no longer counted) leaves memory
    unused one lease after the last news, without waiting for the connection to fail."""
    check, loop = KeyCheck(pg_url, lease=0.6).start(), Loop()
    key = make(pg_url)
    try:
        until(lambda: remembered(check, loop, key))
        check._watch.on_heard = lambda at: None  # the database's news stops arriving (a silent partition)
        time.sleep(0.7)
        assert not remembered(check, loop, key)  # every request is read
        assert revoke_everywhere(session_factory(pg_url), key[3:11]).unconfirmed == 0  # the watch still forgets and answers
        with pytest.raises(keys.NotAuthenticated, match="was revoked"):
            loop.caller(check, key)
    finally:
        loop.close(check)


def test_the_lease_is_named_in_the_watch_and_read_back():
    assert lease_of(watch_name(1.5)) == 1.5
    assert lease_of(WATCH_APPLICATION) == DEFAULT_LEASE  # a watch that names none
    assert lease_of(WATCH_APPLICATION + " lease=nonsense") == DEFAULT_LEASE


def test_an_unreachable_database_is_unavailable_not_a_refusal(pg_url):
    url = sa.make_url(pg_url).set(port=9).render_as_string(hide_password=False)
    check, loop = KeyCheck(url), Loop()
    with pytest.raises(DatabaseUnavailable, match="unreachable"):
        loop.caller(check, make(pg_url))
    loop.close(check)


def test_a_database_that_never_answers_fails_every_waiting_check_within_one_deadline(pg_url):
    """Four requests with keys to check while the database accepts connections and says nothing:
    each is a 503 (DatabaseUnavailable), and they do not queue one connection timeout after another."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel accepts; nobody answers
    url = sa.make_url(pg_url).set(host="127.0.0.1", port=silent.getsockname()[1]).render_as_string(hide_password=False)
    check, loop = KeyCheck(url), Loop()
    keys_ = [f"hk_{i:08x}_{'k' * 43}" for i in range(4)]

    async def four():
        return await asyncio.gather(*(check.caller(k) for k in keys_), return_exceptions=True)

    started = time.monotonic()
    try:
        outcomes = loop.loop.run_until_complete(four())
    finally:
        waited = time.monotonic() - started
        loop.close(check)
        silent.close()
    assert all(isinstance(o, DatabaseUnavailable) for o in outcomes), outcomes
    assert waited < 12, f"the checks queued: {waited:.1f} s"  # one deadline (5 s), not four


class FreezingRelay:
    """A TCP relay to PostgreSQL that can stop passing bytes on, as a network that hangs does."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.frozen = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a, b):
        try:
            while data := a.recv(65536):
                while self.frozen.is_set():
                    time.sleep(0.05)
                b.sendall(data)
        except OSError:
            pass

    def close(self):
        for s in self.sockets:
            s.close()


def test_a_database_that_hangs_mid_connection_fails_the_checks_within_one_deadline(pg_url):
    """A live connection whose network then hangs: the waiting checks are 503s after one deadline,
    not one statement cancel after another."""
    parsed = sa.make_url(pg_url)
    relay = FreezingRelay(parsed.host or "127.0.0.1", parsed.port or 5432)
    url = parsed.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    check, loop = KeyCheck(url, remember=False), Loop()
    key = make(pg_url)
    try:
        assert loop.caller(check, key).key_id == key[3:11]  # connected, through the relay
        relay.frozen.set()

        async def three():
            return await asyncio.gather(*(check.caller(key) for _ in range(3)), return_exceptions=True)

        started = time.monotonic()
        outcomes = loop.loop.run_until_complete(three())
        waited = time.monotonic() - started
        assert all(isinstance(o, DatabaseUnavailable) for o in outcomes), outcomes
        assert waited < 9, f"the checks queued: {waited:.1f} s"  # one deadline (5 s), not three
        with pytest.raises(DatabaseUnavailable, match="a moment ago"):  # and the next fails at once
            loop.caller(check, key)
    finally:
        relay.frozen.clear()
        loop.close(check)
        relay.close()


def test_sqlite_is_read_on_every_request(tmp_path):
    from hokusai_mlflow_plugin.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    upgrade(url)
    check, loop = KeyCheck(url).start(), Loop()
    key = make(url)
    try:
        assert [loop.caller(check, key).key_id for _ in range(3)] == [key[3:11]] * 3
        assert check.reads == 3
        revoked = revoke_everywhere(session_factory(url), key[3:11])
        assert (revoked.gateways, revoked.unconfirmed) == (0, 0)
        with pytest.raises(keys.NotAuthenticated, match="was revoked"):
            loop.caller(check, key)
    finally:
        loop.close(check)


class DeafConnection:
    """A connection that takes LISTEN and delivers nothing, as behind a transaction pooler."""

    class info:
        backend_pid = 4242

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, *args):
        return self

    def fetchone(self):
        return (4242,)

    def notifies(self, timeout, stop_after):
        time.sleep(min(timeout, 0.5))
        return iter(())


def test_a_watch_that_does_not_hear_itself_is_never_trusted(caplog):
    from hokusai_mlflow_plugin.auth.revocation import PROBE_WAIT, RevocationWatch

    states = []
    watch = RevocationWatch("postgresql://nowhere/db", on_revoked=lambda key_id: None, on_heard=lambda at: states.append(True),
                            on_state=states.append)
    watch.connect = lambda url, **kwargs: DeafConnection()
    watch.start()
    try:
        until(lambda: states, timeout=PROBE_WAIT + 5)
    finally:
        watch.stop()
    assert True not in states and states[0] is False
    assert "did not come back" in caplog.text and "connection pooler" in caplog.text
