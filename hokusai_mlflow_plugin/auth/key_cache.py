"""The gateway's memory of good keys: a key checked against the database once is trusted without
another read until the database says that something changed, so that a request through the
gateway costs MLflow's time and not a key check's round trip as well.

How a revocation reaches every gateway at once:

* PostgreSQL: ``keys.revoke`` NOTIFYs ``KEYS_CHANNEL`` at commit, and a listening thread forgets
  that key. While the listener is not connected nothing is trusted: every request is checked.
* Any other database (SQLite, the embedded default): nothing is remembered, every request is
  checked. SQLite has no notifications, and there a check is a read of a local file, not a round
  trip to a server.

A key is checked against the database again at least once a minute anyway (``LAST_USED_EVERY``),
which records its last use and sees an expiry that a clock alone would not.
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass
from datetime import datetime

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.db import listen
from hokusai_mlflow_plugin.db.models import KEYS_CHANNEL, utcnow
from hokusai_mlflow_plugin.db.session import get_engine, read_engine


@dataclass(frozen=True)
class _Good:
    caller: keys.Caller
    digest: str
    expires_at: datetime | None
    checked_at: datetime


class KeyCache:
    """``cached(key)``: the caller, from memory, or None (then ``check(key)``, which reads the
    database and may block: call it off the event loop)."""

    def __init__(self, database_url: str):
        self.database_url = database_url
        self._engine = read_engine(get_engine(database_url))
        self._good: dict[str, _Good] = {}
        self._lock = threading.Lock()
        self._generation = 0  # moves whenever something is forgotten: a check begun before is not kept
        self._trusted = False  # whether memory may be used at all (the watch is in force)
        self._stop: threading.Event | None = None

    def start(self) -> "KeyCache":
        """Begin watching for revocations (a thread on PostgreSQL); until then nothing is trusted."""
        if listen.is_postgresql(self.database_url):
            _, self._stop = listen.start_listener(self.database_url, KEYS_CHANNEL, self._forget, on_state=self._watching)
        return self

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        self._forget_all(trusted=False)

    def cached(self, key: str | None, now: datetime | None = None) -> keys.Caller | None:
        """The caller ``key`` names if a check of it is remembered and still holds; None when the
        database must be asked. ``NotAuthenticated`` for a missing or malformed key."""
        key_id, secret = keys.split(key)
        good = self._good.get(key_id)
        if good is None or not self._trusted:
            return None
        now = now or utcnow()
        fresh = now - good.checked_at < keys.LAST_USED_EVERY and (good.expires_at is None or good.expires_at > now)
        if not fresh or not hmac.compare_digest(keys.digest(secret), good.digest):
            return None  # the database's answer is the one to give (and records the use)
        return good.caller

    def check(self, key: str | None) -> keys.Caller:
        """The caller ``key`` names, read from the database (and remembered while it holds)."""
        generation = self._generation
        now = utcnow()
        with self._engine.begin() as conn:
            caller, expires_at = keys.verified(conn, key, now)
        secret = keys.split(key)[1]
        with self._lock:
            if self._trusted and generation == self._generation:
                self._good[caller.key_id] = _Good(caller, keys.digest(secret), expires_at, now)
        return caller

    # -- the watch -------------------------------------------------------------------------------

    def _forget(self, key_id: str) -> None:
        with self._lock:
            self._generation += 1
            self._good.pop(key_id, None)

    def _forget_all(self, trusted: bool) -> None:
        with self._lock:
            self._generation += 1
            self._good.clear()
            self._trusted = trusted

    def _watching(self, connected: bool) -> None:
        # Connected or lost, what was remembered may have been revoked meanwhile: forget it all.
        self._forget_all(trusted=connected)
