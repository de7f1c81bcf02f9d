"""Wake on new outbox events: ``LISTEN hokusai_events`` on PostgreSQL, polling elsewhere."""

from __future__ import annotations

import logging
import threading
from typing import Callable

import sqlalchemy as sa

from hokusai_mlflow_plugin.events import NOTIFY_CHANNEL

_logger = logging.getLogger(__name__)


def is_postgresql(database_url: str) -> bool:
    return sa.make_url(database_url).get_backend_name() == "postgresql"


def libpq_dsn(database_url: str) -> str:
    return sa.make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


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
