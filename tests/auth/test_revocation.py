"""A revocation just after the database started waits for the watches the start took away
(issue 25): they are listed nowhere, and a gateway cut off across the restart may trust its
memory until one lease after it."""

from __future__ import annotations

import time

import psycopg
import pytest

from hokusai_mlflow_plugin.auth import revocation
from hokusai_mlflow_plugin.auth.key_check import KeyCheck
from hokusai_mlflow_plugin.auth.revocation import (
    LEASE_MARGIN,
    LONGEST_LEASE,
    RATE_MARGIN,
    revoke_everywhere,
)
from hokusai_mlflow_plugin.db.session import libpq_dsn, session_factory
from tests.auth.test_key_check import Loop, make, remembered, until


def longest(pg_url) -> str | None:
    with psycopg.connect(libpq_dsn(pg_url)) as conn:
        row = conn.execute("SELECT value FROM hokusai_sweep_state WHERE key = %s", (LONGEST_LEASE,)).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize(("since_start", "recorded", "wait"), [
    (100.0, "2.0", 0.0),  # started long ago: nothing to wait for
    (0.5, "2.0", 2.0 * (1 + RATE_MARGIN) + LEASE_MARGIN - 0.5),
    (0.5, "6.0", 6.0 * (1 + RATE_MARGIN) + LEASE_MARGIN - 0.5),  # the longest lease a watch recorded
    (0.5, "0.5", 2.0 * (1 + RATE_MARGIN) + LEASE_MARGIN - 0.5),  # never less than the default lease
    (0.5, None, 2.0 * (1 + RATE_MARGIN) + LEASE_MARGIN - 0.5),  # no watch recorded one yet
    (0.5, "garbage", 2.0 * (1 + RATE_MARGIN) + LEASE_MARGIN - 0.5),
    (None, "2.0", 0.0),  # a server that does not say when it started
])
def test_the_wait_after_a_start_is_the_longest_lease_left(since_start, recorded, wait):
    assert revocation.restart_wait(since_start, recorded) == pytest.approx(wait)


def test_a_watch_records_its_lease_before_memory_is_trusted_and_the_longest_is_kept(pg_url):
    check, loop = KeyCheck(pg_url, lease=3.5).start(), Loop()
    short, loop2 = KeyCheck(pg_url, lease=1.0).start(), Loop()
    key = make(pg_url)
    try:
        until(lambda: remembered(check, loop, key))
        until(lambda: remembered(short, loop2, key))
        assert float(longest(pg_url)) == 3.5
    finally:
        loop.close(check)
        loop2.close(short)


def test_a_revoke_just_after_the_database_started_waits_for_the_lease_since_the_start(pg_url, monkeypatch, caplog):
    """The server's uptime is the one thing faked here (the suite's PostgreSQL is not restarted):
    0.3 s, with a watch's recorded lease of 1 s."""
    key = make(pg_url)
    with psycopg.connect(libpq_dsn(pg_url), autocommit=True) as conn:
        conn.execute("INSERT INTO hokusai_sweep_state (key, value) VALUES (%s, '1.0') ON CONFLICT (key) DO UPDATE SET value = '1.0'",
                     (LONGEST_LEASE,))
    monkeypatch.setattr(revocation, "DEFAULT_LEASE", 1.0)
    monkeypatch.setattr(revocation, "SINCE_START", "SELECT 0.3::float, (SELECT value FROM hokusai_sweep_state WHERE key = %s)")
    started = time.monotonic()
    revoked = revoke_everywhere(session_factory(pg_url), key[3:11])
    took = time.monotonic() - started
    assert revoked.after_restart and revoked.unconfirmed == 0
    assert revoked.waited_for_lease >= 1.0 * (1 + RATE_MARGIN) + LEASE_MARGIN - 0.3
    assert took >= revoked.waited_for_lease
    assert "the database started 0.3 s before" in caplog.text
