"""How a revoked key reaches every gateway before the revocation returns (PostgreSQL).

Gateways remember the keys they checked (``auth.key_check``), so they must hear revocations:

* each gateway process keeps one connection that LISTENs on ``KEYS_CHANNEL`` (its
  ``application_name`` says it is a gateway's watch). ``keys.revoke`` NOTIFYs the key's id at
  commit; the watch forgets the key, then answers on ``KEYS_HEARD_CHANNEL``. The watch trusts
  its connection only while a notification it sends itself comes back (at the start, then every
  ``PROBE_EVERY`` seconds): a pooler that takes LISTEN and delivers nothing, or a connection that
  died without a word, leaves its gateway checking every key;
* ``revoke_everywhere`` (the CLI's and the console's revoke) commits the revocation, takes the
  watches that hear (by server process id), and waits until each has answered. When it returns,
  every gateway refuses the key. A watch that cannot answer in time is counted in the result:
  its gateway trusts nothing while its connection is down, and checks every key against the
  database at least once a minute anyway (``keys.LAST_USED_EVERY``).

What it does not cover: a watch whose server session vanished without a word (a failover that
lost the connection's FIN) is not among the watches taken, and its gateway trusts memory until
its next probe fails, ``PROBE_EVERY + PROBE_WAIT`` (13 s) at most.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.db.models import KEYS_CHANNEL, KEYS_HEARD_CHANNEL
from hokusai_mlflow_plugin.db.session import is_postgresql, libpq_dsn

_logger = logging.getLogger(__name__)

WATCH_APPLICATION = "hokusai-gateway-keys"  # application_name of every gateway's watch connection
_WATCHES = "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()"


def connect(database_url: str, **kwargs):
    import psycopg

    # TCP keepalives: a watch whose server vanished without a word notices within about 20 s.
    return psycopg.connect(libpq_dsn(database_url), autocommit=True, connect_timeout=5, keepalives=1, keepalives_idle=10,
                           keepalives_interval=5, keepalives_count=2, **kwargs)


class WatchDeaf(RuntimeError):
    """The watch's connection takes LISTEN but does not deliver notifications."""


PROBE_EVERY = 10.0  # seconds between the watch's checks that it still hears
PROBE_WAIT = 3.0  # seconds its own notification may take to come back


class RevocationWatch:
    """A gateway process's ear: ``on_revoked(key_id)`` for each revocation, then an answer to the
    revoker; ``on_state(True)`` once listening, ``on_state(False)`` when the connection is lost
    (what was revoked meanwhile was not heard: forget everything)."""

    def __init__(self, database_url: str, on_revoked: Callable[[str], None], on_state: Callable[[bool], None]):
        self.database_url = database_url
        self.on_revoked, self.on_state = on_revoked, on_state
        self.connect = connect  # a psycopg connection to the database
        self._stop = threading.Event()
        self._pid = 0

    def start(self) -> "RevocationWatch":
        threading.Thread(target=self._run, name="hokusai-key-watch", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        pause = 2.0
        while not self._stop.is_set():
            try:
                with self.connect(self.database_url, application_name=WATCH_APPLICATION + "-starting") as conn:
                    self._listen(conn)
                    pause = 2.0
            except Exception as e:  # whatever stops the watch, nothing remembered may be trusted meanwhile
                self.on_state(False)
                _logger.warning("gateway: the key watch does not hear the database (%s: %s); every key is checked until it "
                                "does", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                self._stop.wait(pause)
                pause = min(pause * 2, 30.0)
        self.on_state(False)

    def _listen(self, conn) -> None:
        # Its own channel too: the watch NOTIFYs itself, and trusts memory only once that comes
        # back (a pooler in transaction mode takes LISTEN and never delivers), then again every
        # PROBE_EVERY seconds (a connection that died without a word).
        # The server's own id for this session, as pg_stat_activity shows it (a pooler's is not).
        self._pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        own = f"{KEYS_CHANNEL}_probe_{self._pid}"
        conn.execute(f"LISTEN {KEYS_CHANNEL}")
        conn.execute(f"LISTEN {own}")
        self._hear_own(conn, own)
        # Named a watch only now: a revocation waits for the watches that hear, not for one starting.
        conn.execute("SELECT set_config('application_name', %s, false)", (WATCH_APPLICATION,))
        self.on_state(True)
        probed = time.monotonic()
        while not self._stop.is_set():
            self._serve(conn, own, timeout=1.0)
            if time.monotonic() - probed >= PROBE_EVERY:
                self._hear_own(conn, own)
                probed = time.monotonic()

    def _serve(self, conn, own: str, timeout: float) -> bool:
        """Forget and answer what was revoked; whether the watch's own probe came back."""
        came_back = False
        for note in list(conn.notifies(timeout=timeout, stop_after=1)):
            if note.channel == own:
                came_back = True
                continue
            self.on_revoked(note.payload)
            conn.execute("SELECT pg_notify(%s, %s)", (KEYS_HEARD_CHANNEL, f"{note.payload} {self._pid}"))
        return came_back

    def _hear_own(self, conn, own: str) -> None:
        conn.execute("SELECT pg_notify(%s, 'probe')", (own,))
        deadline = time.monotonic() + PROBE_WAIT
        while (left := deadline - time.monotonic()) > 0:
            if self._serve(conn, own, timeout=left):
                return
        raise WatchDeaf(f"its own notification did not come back within {PROBE_WAIT:g} s (is a connection pooler in "
                        "transaction mode in between? the watch needs a session of its own)")


@dataclass(frozen=True)
class Revoked:
    key_id: str
    name: str
    gateways: int  # gateway watches listening when it was revoked
    heard: int  # how many of them said they forgot the key before ``revoke_everywhere`` returned

    @property
    def unconfirmed(self) -> int:
        return max(0, self.gateways - self.heard)


def revoke_everywhere(sessions, key_id: str, timeout: float = 3.0) -> Revoked:
    """Revoke ``key_id`` (``keys.revoke``) and, on PostgreSQL, wait until every gateway watching
    has forgotten it, at most ``timeout`` seconds."""
    database_url = sessions.kw["bind"].url.render_as_string(hide_password=False)
    if not is_postgresql(database_url):  # gateways on another database remember nothing
        with sessions.begin() as session:
            row = keys.revoke(session, key_id)
            return Revoked(row.key_id, row.name, 0, 0)
    # LISTEN before the commit, so that no answer is missed; the watches are taken after it (by
    # their server process ids): every watch that trusted memory before the commit is named by
    # then, and one that starts trusting later forgot everything when it did.
    with connect(database_url) as ear:
        ear.execute(f"LISTEN {KEYS_HEARD_CHANNEL}")
        with sessions.begin() as session:
            row = keys.revoke(session, key_id)
            key_id, name = row.key_id, row.name
        waiting = {str(pid) for (pid,) in ear.execute(_WATCHES, (WATCH_APPLICATION,))}
        gateways = len(waiting)
        deadline = time.monotonic() + timeout
        while waiting and (left := deadline - time.monotonic()) > 0:
            for note in ear.notifies(timeout=left, stop_after=1):
                heard_key, _, pid = note.payload.partition(" ")
                if heard_key == key_id:
                    waiting.discard(pid)
    if waiting:
        _logger.warning("API key %s is revoked; %d of %d gateways did not confirm within %.0f s (they refuse it within "
                        "a minute at the latest)", key_id, len(waiting), gateways, timeout)
    return Revoked(key_id, name, gateways, gateways - len(waiting))
