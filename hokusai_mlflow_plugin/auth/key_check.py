"""Every gateway request's key, checked without leaving the event loop.

On PostgreSQL a key checked once is remembered, and a request with it costs no database round
trip: a request through the gateway then costs MLflow's time and little more (BENCHMARKS.md).
Memory is trusted only under a lease (``auth.revocation``): while the process's
``RevocationWatch`` has heard from the database within the last ``lease`` seconds. A revocation
is heard before the revocation returns, or the revocation waits until the lease has run out;
past the lease every key is read, and a key that cannot be read is ``DatabaseUnavailable`` (a
503), never let in. A remembered key is also read again at least once a minute, which records its
use. A read is one prepared SELECT on the gateway's own asyncio connection (psycopg).

Any other database (SQLite, the embedded default: a local file, and no notifications) is read on
every request, with SQLAlchemy in a worker thread. Both judge the row with ``keys.judge``.
"""
from __future__ import annotations

import asyncio
import hmac
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.auth.revocation import DEFAULT_LEASE, RevocationWatch, clock
from hokusai_mlflow_plugin.core.errors import DatabaseUnavailable
from hokusai_mlflow_plugin.db.errors import guarded
from hokusai_mlflow_plugin.db.models import utcnow
from hokusai_mlflow_plugin.db.session import get_engine, is_postgresql, libpq_dsn, read_engine
from hokusai_mlflow_plugin.monitoring import GATEWAY_KEY_CHECKS, GATEWAY_KEY_REFUSALS


@dataclass(frozen=True)
class _Good:
    caller: keys.Caller
    digest: str
    checked_at: datetime


class KeyCheck:
    """``await check.caller(key)``: the caller ``key`` names, or ``NotAuthenticated``;
    ``DatabaseUnavailable`` when the token database cannot answer. ``start()`` in the process
    that serves requests (its watch is a thread). ``lease``: seconds memory is trusted after the
    database was last heard (``HOKUSAI_GATEWAY_KEY_LEASE``)."""

    def __init__(self, database_url: str, remember: bool = True, lease: float = DEFAULT_LEASE):
        self.database_url = database_url
        self.postgresql = is_postgresql(database_url)
        self.remember = remember and self.postgresql
        self._good: dict[str, _Good] = {}
        self._memory_lock = threading.Lock()
        self._generation = 0  # moves whenever something is forgotten: a read begun before is not kept
        self.lease = lease
        self._trusted_until = float("-inf")  # revocation.clock() before which memory may be used (the lease)
        self._watch: RevocationWatch | None = None
        self.reads = 0  # of the database: what memory saved shows against the requests served
        self._conn = None
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        self._down_until = 0.0  # time.monotonic() before which checks fail at once (the database just failed)
        if self.postgresql:
            # The statements that keys.authenticate runs, as psycopg's SQL: one source of truth.
            self._find = str(keys.FIND.compile(dialect=psycopg_dialect()))
            self._touch = str(keys.TOUCH.compile(dialect=psycopg_dialect()))
        else:
            self._engine = read_engine(get_engine(database_url))

    def start(self) -> "KeyCheck":
        if self.remember:
            self._watch = RevocationWatch(self.database_url, self._forget, self._heard, self._watching, self.lease).start()
        return self

    async def caller(self, key: str | None) -> keys.Caller:
        """Counted: a hit (from memory), a miss (read from the database), or a refusal and its reason."""
        try:
            key_id, secret = keys.split(key)  # a missing or malformed key never reaches the database
            remembered = self._remembered(key_id, secret)
            if remembered is not None:
                _HITS.inc()
                return remembered
            caller = await self._looked_up(key, key_id, secret)
        except keys.NotAuthenticated as e:
            _REFUSED.inc()
            GATEWAY_KEY_REFUSALS.labels(e.reason).inc()
            raise
        except DatabaseUnavailable:
            _REFUSED.inc()
            _UNAVAILABLE.inc()
            raise
        _MISSES.inc()
        return caller

    async def _looked_up(self, key: str, key_id: str, secret: str) -> keys.Caller:
        generation, now = self._generation, utcnow()
        caller = await self._read(key, key_id, secret)
        if self.remember:
            with self._memory_lock:
                if self._trusted and generation == self._generation:
                    self._good[key_id] = _Good(caller, keys.digest(secret), now)
        return caller

    @property
    def _trusted(self) -> bool:
        """Whether memory may be used now: the database was heard within the lease."""
        return clock() < self._trusted_until

    def _remembered(self, key_id: str, secret: str) -> keys.Caller | None:
        trusted_until = self._trusted_until  # read before the memory: _heard clears it before a new lease
        good = self._good.get(key_id)
        if good is None or clock() >= trusted_until:
            return None
        now = utcnow()
        if now - good.checked_at >= keys.LAST_USED_EVERY or (good.caller.expires_at is not None and good.caller.expires_at <= now):
            return None  # read again: records the use, or says it expired
        if not hmac.compare_digest(keys.digest(secret), good.digest):
            return None  # the database's answer is the one to give
        return good.caller

    def _forget(self, key_id: str) -> None:
        with self._memory_lock:
            self._generation += 1
            self._good.pop(key_id, None)

    def _heard(self, asked_at: float) -> None:
        """The database answered the watch's probe asked at ``asked_at`` (``clock()``): the
        lease runs ``lease`` seconds from then (revocation's docstring: why that is safe)."""
        with self._memory_lock:
            if clock() >= self._trusted_until:
                # A new run of leases (the first, or after a lapse): start with an empty memory.
                self._generation += 1
                self._good.clear()
            self._trusted_until = max(self._trusted_until, asked_at + self.lease)

    def _watching(self, listening: bool) -> None:
        # Lost (the watch says only that), what is remembered may have been revoked unheard:
        # forget it all, and trust nothing until the database is heard again.
        with self._memory_lock:
            self._generation += 1
            self._good.clear()
            self._trusted_until = float("-inf")

    async def _read(self, key: str, key_id: str, secret: str) -> keys.Caller:
        self.reads += 1
        if not self.postgresql:
            return await asyncio.get_running_loop().run_in_executor(None, guarded, self._in_thread, key)
        self._fail_fast()
        # The whole check, the wait for the connection included, has one deadline. Past it the
        # connection is cut at once (psycopg's own cancel of a statement would wait on the silent
        # server again) and the check is left to end by itself: nothing waits for it.
        task = asyncio.ensure_future(self._locked_check(key_id, secret))
        done, _ = await asyncio.wait({task}, timeout=CHECK_TIMEOUT)
        if task in done:
            return task.result()
        self._down_until = time.monotonic() + DOWN_FOR
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.pgconn.finish()
        task.cancel()
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # its end is of no interest
        raise DatabaseUnavailable(f"The token database did not answer within {CHECK_TIMEOUT:g} s")

    async def _locked_check(self, key_id: str, secret: str) -> keys.Caller:
        async with self._lock:
            self._fail_fast()  # the check before ours failed while we waited
            for attempt in (1, 2):  # a connection dropped while idle (a restart) is made again once
                fresh = self._conn is None
                try:
                    return await self._check(key_id, secret)
                except DATABASE_ERRORS as e:
                    await self._drop()
                    if attempt == 2 or fresh:
                        self._down_until = time.monotonic() + DOWN_FOR
                        raise DatabaseUnavailable(f"The token database is unreachable: {type(e).__name__}") from None

    def _fail_fast(self) -> None:
        """While the database has just failed, every check fails at once instead of queueing
        behind a connection attempt that will fail too."""
        if time.monotonic() < self._down_until:
            raise DatabaseUnavailable("The token database is unreachable (it failed a moment ago)")

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        self._watching(False)
        await self._drop()

    async def _check(self, key_id: str, secret: str) -> keys.Caller:
        if self._conn is None:
            conn = await psycopg.AsyncConnection.connect(libpq_dsn(self.database_url), autocommit=True, connect_timeout=3,
                                                         row_factory=namedtuple_row)
            self._conn = conn  # from here, what cuts it (the deadline) can see it
            # A SET, not a startup option, which connection poolers such as PgBouncer refuse.
            await conn.execute(f"SET statement_timeout = {int(CHECK_TIMEOUT * 1000)}")
        now = utcnow()
        row = await (await self._conn.execute(self._find, {"key_id": key_id}, prepare=True)).fetchone()
        caller, touch = keys.judge(row, key_id, secret, now)
        if touch:
            await self._conn.execute(self._touch, {"touched_key_id": key_id, "now": now}, prepare=True)
        return caller

    def _in_thread(self, key: str) -> keys.Caller:
        with self._engine.begin() as conn:
            return keys.authenticate(conn, key)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close_quietly(conn)


async def _close_quietly(conn) -> None:
    try:
        await conn.close()
    except Exception:
        pass  # already broken: nothing to close cleanly


_HITS, _MISSES, _REFUSED = (GATEWAY_KEY_CHECKS.labels(result) for result in ("hit", "miss", "refused"))
_UNAVAILABLE = GATEWAY_KEY_REFUSALS.labels("unavailable")

CHECK_TIMEOUT = 5.0  # seconds for one key check, the wait for the connection included
DOWN_FOR = 1.0  # seconds that checks fail at once after the database failed one

# A database that cannot answer: gone, restarting, or refusing writes (a read-only replica).
DATABASE_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.ReadOnlySqlTransaction)
