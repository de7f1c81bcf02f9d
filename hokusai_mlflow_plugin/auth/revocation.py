"""How a revoked key reaches every gateway before the revocation returns (PostgreSQL), even
across a silent partition, by leases.

Gateways remember the keys they checked (``auth.key_check``), so they must hear revocations:

* each gateway process keeps one connection that LISTENs on ``KEYS_CHANNEL``, named by its
  ``application_name`` as a gateway's watch with its lease (``hokusai-gateway-keys lease=2``).
  ``keys.revoke`` NOTIFYs the key's id at commit; the watch forgets the key, then answers on
  ``KEYS_HEARD_CHANNEL``;
* **the lease.** The watch NOTIFYs itself every quarter lease. Each time one of these comes back,
  the gateway may trust its memory until ``lease`` seconds after the moment, on its own clock,
  *before* that notification was sent. Without fresh news (a partition, a pooler that delivers
  nothing, a dead server) its memory lapses within one lease, and it reads every key: a key it
  cannot read is a 503, never let in;
* ``revoke_everywhere`` (the CLI's, the API's and the console's revoke) commits the revocation,
  takes the watches listed by the server, and waits until each has answered, or until the
  longest lease among those that did not has certainly run out since the commit. When it returns,
  every gateway refuses the key.

Why the lease is safe without comparing two machines' clocks. Each side measures only a length of
time, on its own monotonic clock (``CLOCK_BOOTTIME``, which keeps counting while a machine is
suspended), and the two lengths are joined by the database's order of events:

* a gateway's trust ends ``lease`` after it read its clock, and it read its clock before sending
  the notification that earned the trust; that notification was therefore sent, and reached the
  server, after that moment;
* if the server took it before the revocation committed, the gateway's trust ends at most
  ``lease`` after the commit. If after, the server delivers the revocation's notification first on
  the same session (notifications arrive in commit order), so the gateway forgets the key before
  it renews its trust;
* the revoker starts counting after its commit returned, and waits ``lease`` plus a margin for
  the rate of the two clocks (``RATE_MARGIN``: real clocks drift by well under 0.1 %) and
  ``LEASE_MARGIN``. No wall clock, no clock synchronisation, is involved.

How the revoker knows the gateways when one cannot answer: the server lists every watch's session
(``pg_stat_activity``) until it sees it close. A partitioned gateway's session stays listed (the
server hears no FIN either), does not answer, and is waited out. A gateway whose session the
server no longer lists either closed it (and trusts nothing since), or lost it when the server
restarted. For that one, every watch records the longest lease in use (``LONGEST_LEASE``, in
``hokusai_sweep_state``) before it first trusts memory, and a revocation that commits less than
that lease after the server started (``pg_postmaster_start_time()``, against the server's own
clock: one clock) waits until the lease has run out since the start. Not covered: a failover to a
standby started long before (its start time is its own), and a session the server ends while the
gateway is cut off (``pg_terminate_backend``, or server-side TCP timeouts shorter than a lease).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.db.models import KEYS_CHANNEL, KEYS_HEARD_CHANNEL
from hokusai_mlflow_plugin.db.session import is_postgresql, libpq_dsn

_logger = logging.getLogger(__name__)

WATCH_APPLICATION = "hokusai-gateway-keys"  # application_name of every gateway's watch connection, then " lease=<s>"
_WATCHES = ("SELECT pid, application_name FROM pg_stat_activity WHERE (application_name = %s OR application_name LIKE %s) "
            "AND datname = current_database()")

DEFAULT_LEASE = 2.0  # seconds a gateway trusts its memory after its last news from the database
LONGEST_LEASE = "gateway.key_lease.longest"  # hokusai_sweep_state's key: the longest lease a watch declared
_RECORD_LEASE = ("INSERT INTO hokusai_sweep_state (key, value) VALUES (%(key)s, %(lease)s) ON CONFLICT (key) DO UPDATE "
                 "SET value = greatest(hokusai_sweep_state.value::float, excluded.value::float)::text")
SINCE_START = ("SELECT extract(epoch FROM clock_timestamp() - pg_postmaster_start_time())::float, "
                "(SELECT value FROM hokusai_sweep_state WHERE key = %s)")
RATE_MARGIN = 0.01  # the revoker waits 1 % longer than a lease: for two clocks' rates (real drift: < 0.1 %)
LEASE_MARGIN = 0.25  # seconds, on top


def clock() -> float:
    """Seconds on this machine's monotonic clock that also counts while it is suspended."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def watch_name(lease: float) -> str:
    return f"{WATCH_APPLICATION} lease={lease:g}"


def lease_of(application_name: str) -> float:
    """The lease a watch's name declares (a watch that names none is taken at ``DEFAULT_LEASE``)."""
    _, _, value = application_name.partition(" lease=")
    try:
        lease = float(value)
    except ValueError:
        return DEFAULT_LEASE
    return lease if lease > 0 else DEFAULT_LEASE


def connect(database_url: str, **kwargs):
    import psycopg

    # TCP keepalives, and a limit on unanswered sends (tcp_user_timeout): a watch whose server
    # vanished without a word gives its connection up within seconds and tries a new one. Its
    # gateway stopped trusting memory one lease after the last news anyway.
    return psycopg.connect(libpq_dsn(database_url), autocommit=True, connect_timeout=5, keepalives=1, keepalives_idle=10,
                           keepalives_interval=5, keepalives_count=2, tcp_user_timeout=5000, **kwargs)


class WatchDeaf(RuntimeError):
    """The watch's connection takes LISTEN but does not deliver notifications."""


PROBE_WAIT = 3.0  # seconds its own notification may take to come back before the connection is given up


class RevocationWatch:
    """A gateway process's ear: ``on_revoked(key_id)`` for each revocation, then an answer to the
    revoker; ``on_heard(at)`` each time the database proved the link fresh (``at``: ``clock()``
    read before the proof was asked for; trust memory until ``at + lease``); ``on_state(False)``
    when the connection is lost (what was revoked meanwhile was not heard: forget everything)."""

    def __init__(self, database_url: str, on_revoked: Callable[[str], None], on_heard: Callable[[float], None],
                 on_state: Callable[[bool], None], lease: float = DEFAULT_LEASE):
        self.database_url = database_url
        self.on_revoked, self.on_heard, self.on_state = on_revoked, on_heard, on_state
        self.lease = lease
        self.every = lease / 4  # three more tries before the lease runs out
        self.connect = connect  # a psycopg connection to the database
        self._stop = threading.Event()
        self._pid = 0

    def start(self) -> RevocationWatch:
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
        # Its own channel too: the watch NOTIFYs itself, and trusts memory only while that comes
        # back (a pooler in transaction mode takes LISTEN and never delivers; a partition delivers
        # nothing either).
        # The server's own id for this session, as pg_stat_activity shows it (a pooler's is not).
        self._pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        own = f"{KEYS_CHANNEL}_probe_{self._pid}"
        conn.execute(f"LISTEN {KEYS_CHANNEL}")
        conn.execute(f"LISTEN {own}")
        asked = self._ask(conn, own, "0")
        deadline = asked + PROBE_WAIT
        while "0" not in self._serve(conn, own, timeout=max(0.0, deadline - clock())):
            if clock() >= deadline:
                raise WatchDeaf(f"its own notification did not come back within {PROBE_WAIT:g} s (is a connection pooler "
                                "in transaction mode in between? the watch needs a session of its own)")
        # Named a watch only now: a revocation waits for the watches that hear, not for one
        # starting. One named after a revocation committed trusts nothing from before it (the
        # gateway forgets everything when its trust begins).
        conn.execute("SELECT set_config('application_name', %s, false)", (watch_name(self.lease),))
        # Before memory is first trusted: a revoker after a server restart waits for this lease.
        conn.execute(_RECORD_LEASE, {"key": LONGEST_LEASE, "lease": repr(float(self.lease))})
        self.on_heard(asked)
        sequence, pending = 0, None  # (payload, clock() before it was sent) of the probe awaited
        while not self._stop.is_set():
            now = clock()
            if pending is None and now - asked >= self.every:
                sequence += 1
                pending = (str(sequence), self._ask(conn, own, str(sequence)))
                asked = pending[1]
            elif pending is not None and now - pending[1] >= PROBE_WAIT:
                raise WatchDeaf(f"its own notification did not come back within {PROBE_WAIT:g} s")
            heard = self._serve(conn, own, timeout=max(0.01, asked + self.every - clock()))
            if pending is not None and pending[0] in heard:
                # After every revocation delivered before it (the same session, in commit order).
                self.on_heard(pending[1])
                pending = None

    def _ask(self, conn, own: str, payload: str) -> float:
        at = clock()  # before the notification leaves: the trust it earns is counted from here
        conn.execute("SELECT pg_notify(%s, %s)", (own, payload))
        return at

    def _serve(self, conn, own: str, timeout: float) -> set[str]:
        """Forget and answer what was revoked, in order; the watch's own payloads that came back."""
        own_heard = set()
        for note in list(conn.notifies(timeout=timeout, stop_after=1)):
            if note.channel == own:
                own_heard.add(note.payload)
                continue
            self.on_revoked(note.payload)
            conn.execute("SELECT pg_notify(%s, %s)", (KEYS_HEARD_CHANNEL, f"{note.payload} {self._pid}"))
        return own_heard


@dataclass(frozen=True)
class Revoked:
    key_id: str
    name: str
    gateways: int  # gateway watches listening when it was revoked
    heard: int  # how many of them said they forgot the key before ``revoke_everywhere`` returned
    waited_for_lease: float = 0.0  # seconds waited for the leases of those that did not (0: all confirmed)
    after_restart: bool = False  # the server had started less than a lease before: its lost watches were waited for

    @property
    def unconfirmed(self) -> int:
        return max(0, self.gateways - self.heard)


def revoke_everywhere(sessions, key_id: str) -> Revoked:
    """Revoke ``key_id`` (``keys.revoke``) and, on PostgreSQL, wait until every gateway watching
    has forgotten it, or until the lease of each one that did not say so has run out: when this
    returns, no gateway lets the key in."""
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
        committed = clock()  # the commit is behind us: counting from here is counting from after it
        until = {str(pid): committed + _wait_for(lease_of(application))  # clock() by which each watch has forgotten the key
                 for pid, application in ear.execute(_WATCHES, (WATCH_APPLICATION, WATCH_APPLICATION + " lease=%"))}
        gateways = len(until)
        since_start, longest = ear.execute(SINCE_START, (LONGEST_LEASE,)).fetchone()
        read = clock()  # after the server read its clock: the start was at most since_start before now
        restart = restart_wait(since_start, longest)
        if restart > 0:
            # Watches the restart took away are listed nowhere, and may trust memory until a lease after it.
            until[_RESTART] = read + restart
        while until and (left := max(until.values()) - clock()) > 0:
            for note in ear.notifies(timeout=left, stop_after=1):
                heard_key, _, pid = note.payload.partition(" ")
                if heard_key == key_id:
                    until.pop(pid, None)
    waited = clock() - committed if until else 0.0
    unconfirmed = len(until) - (_RESTART in until)
    if unconfirmed:
        _logger.warning("API key %s is revoked; %d of %d gateways did not confirm, so the revoke waited %.1f s for their "
                        "lease to run out: they refuse it now (with a 503 while they cannot reach the database)", key_id,
                        unconfirmed, gateways, waited)
    elif _RESTART in until:
        _logger.warning("API key %s is revoked; the database started %.1f s before, so the revoke waited %.1f s for the lease "
                        "of any gateway it lost to run out: they refuse it now", key_id, since_start, waited)
    return Revoked(key_id, name, gateways, gateways - unconfirmed, waited, _RESTART in until)


_RESTART = "restart"  # what a revocation waits for after a recent start of the server


def restart_wait(since_start: float | None, longest: str | None) -> float:
    """Seconds still to wait after a start of the server ``since_start`` seconds ago, for watches
    with a lease up to ``longest`` (recorded by the watches; the default when none was)."""
    try:
        lease = max(float(longest), DEFAULT_LEASE) if longest else DEFAULT_LEASE
    except ValueError:
        lease = DEFAULT_LEASE
    if since_start is None:
        return 0.0
    return max(0.0, _wait_for(lease) - since_start)


def _wait_for(lease: float) -> float:
    """How long after its commit a revocation waits for a gateway that does not answer."""
    return lease * (1 + RATE_MARGIN) + LEASE_MARGIN
