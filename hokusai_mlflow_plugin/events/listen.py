"""Wake on new outbox events: ``LISTEN hokusai_events`` on PostgreSQL, polling elsewhere; and
``EventWatch``, which hands out each newly committed event once."""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

from hokusai_mlflow_plugin.db import listen as db_listen
from hokusai_mlflow_plugin.db.listen import is_postgresql, libpq_dsn  # noqa: F401 (what callers of this module use)
from hokusai_mlflow_plugin.db.models import NOTIFY_CHANNEL
from hokusai_mlflow_plugin.events.outbox import recent_events


def start_listener(database_url: str, on_event: Callable[[str], None]) -> tuple[threading.Thread, threading.Event]:
    """Call ``on_event(event_id)`` for every new outbox event's NOTIFY, from a thread of its own."""
    return db_listen.start_listener(database_url, NOTIFY_CHANNEL, on_event)


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
