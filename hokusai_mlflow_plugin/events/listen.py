"""Wake on new outbox events: ``LISTEN hokusai_events`` on PostgreSQL, polling elsewhere; and
``EventWatch``, which hands out each newly committed event once."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable, Iterator

from hokusai_mlflow_plugin.db.models import NOTIFY_CHANNEL
from hokusai_mlflow_plugin.db.session import is_postgresql, libpq_dsn
from hokusai_mlflow_plugin.events.outbox import recent_events

_logger = logging.getLogger(__name__)


def listen(database_url: str, on_event: Callable[[str], None], stop: threading.Event, timeout: float = 1.0) -> None:
    """Call ``on_event(event_id)`` for every NOTIFY on ``hokusai_events`` until ``stop`` is set.
    Reconnects after a lost connection."""
    import psycopg

    while not stop.is_set():
        try:
            with psycopg.connect(libpq_dsn(database_url), autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                while not stop.is_set():
                    for note in conn.notifies(timeout=timeout, stop_after=1):
                        on_event(note.payload)
        except psycopg.OperationalError as e:
            _logger.warning("LISTEN %s: %s; reconnecting", NOTIFY_CHANNEL, str(e).splitlines()[0] if str(e) else e)
            stop.wait(2.0)


def start_listener(database_url: str, on_event: Callable[[str], None]) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=listen, args=(database_url, on_event, stop), name="hokusai-listen", daemon=True)
    thread.start()
    return thread, stop


class EventWatch:
    """The outbox's events as they commit, each once (``hokusai events watch``).

    Ids are handed out at insert, not at commit: a lower id can commit later. So each look takes
    the window of recent events and remembers what it handed out, rather than the ids above the
    last one."""

    def __init__(self, sessions, database_url: str, poll: float = 1.0):
        self.sessions = sessions
        self.poll = poll
        with sessions() as session:
            self._seen = {e.event_id for e in recent_events(session)}  # what was there before
        self._woken: queue.Queue = queue.Queue()
        self._stop = None
        if is_postgresql(database_url):
            _, self._stop = start_listener(database_url, self._woken.put)

    def new_events(self) -> list:
        """The events committed since the last look, oldest first."""
        with self.sessions() as session:
            recent = recent_events(session)
        new = [e for e in recent if e.event_id not in self._seen]
        self._seen = {e.event_id for e in recent}
        return new

    def __iter__(self) -> Iterator:
        while True:
            try:
                self._woken.get(timeout=self.poll)
            except queue.Empty:
                pass
            yield from self.new_events()

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
