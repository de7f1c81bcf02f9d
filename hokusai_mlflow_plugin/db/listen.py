"""``LISTEN`` on a PostgreSQL channel from a thread of its own, reconnecting when the connection
is lost: the outbox's relay wakes on new events with it, the gateway's key cache forgets revoked
keys with it. PostgreSQL only; SQLite has no notifications."""

from __future__ import annotations

import logging
import threading
from typing import Callable

import sqlalchemy as sa

_logger = logging.getLogger(__name__)


def is_postgresql(database_url: str) -> bool:
    return sa.make_url(database_url).get_backend_name() == "postgresql"


def libpq_dsn(database_url: str) -> str:
    return sa.make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def listen(database_url: str, channel: str, on_note: Callable[[str], None], stop: threading.Event, timeout: float = 1.0,
           on_state: Callable[[bool], None] | None = None) -> None:
    """Call ``on_note(payload)`` for every NOTIFY on ``channel`` until ``stop`` is set. Reconnects
    after a lost connection; ``on_state(True)`` once listening, ``on_state(False)`` when the
    connection is lost (what was notified meanwhile is not heard)."""
    import psycopg

    while not stop.is_set():
        try:
            with psycopg.connect(libpq_dsn(database_url), autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"LISTEN {channel}")
                if on_state:
                    on_state(True)
                while not stop.is_set():
                    for note in conn.notifies(timeout=timeout, stop_after=1):
                        on_note(note.payload)
        except psycopg.OperationalError as e:
            if on_state:
                on_state(False)
            _logger.warning("LISTEN %s: %s; reconnecting", channel, str(e).splitlines()[0] if str(e) else type(e).__name__)
            stop.wait(2.0)
    if on_state:
        on_state(False)


def start_listener(database_url: str, channel: str, on_note: Callable[[str], None],
                   on_state: Callable[[bool], None] | None = None) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=listen, args=(database_url, channel, on_note, stop), kwargs={"on_state": on_state},
                              name=f"hokusai-listen-{channel}", daemon=True)
    thread.start()
    return thread, stop
