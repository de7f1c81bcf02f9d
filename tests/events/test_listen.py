"""Watching the outbox: ``hokusai events watch`` and the watch's view of late commits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid

from hokusai_mlflow_plugin.db.models import OutboxEvent, utcnow
from hokusai_mlflow_plugin.db.session import session_factory
from hokusai_mlflow_plugin.events.listen import EventWatch
from tests.events.helpers import add_events


def _read_line(stream, timeout: float) -> str:
    """One line from a child's pipe, or "" after ``timeout`` (never hang the suite)."""
    import queue as _queue

    lines: _queue.Queue = _queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except _queue.Empty:
        return ""


def test_events_watch_prints_each_new_event(db_url, tmp_path):
    env = {**os.environ, "HOKUSAI_DATABASE_URL": db_url}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "hokusai_mlflow_plugin", "events", "watch", "--poll", "0.2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert "Watching" in _read_line(watcher.stderr, 60)  # started, with its view of the past
        first, late = add_events(db_url, 2)
        printed = {json.loads(_read_line(watcher.stdout, 30))["event_id"] for _ in range(2)}
        assert printed == {first, late}
    finally:
        os.killpg(watcher.pid, signal.SIGTERM)
        watcher.wait(15)
        watcher.stdout.close()
        watcher.stderr.close()


def test_a_watcher_sees_an_event_that_commits_after_a_newer_one(db_url):
    """Outbox ids are given at insert: id 1 may commit after id 2. The watcher hands out both, once."""
    watch = EventWatch(session_factory(db_url), db_url, poll=0.1)
    try:
        late = OutboxEvent(event_id=str(uuid.uuid4()), event_type="token_ready_for_deploy", payload={}, created_at=utcnow())
        early_id = add_events(db_url)[0]
        with session_factory(db_url).begin() as session:  # committed after `early_id`, created before it was read
            session.add(late)
        assert {e.event_id for e in watch.new_events()} == {early_id, late.event_id}
        assert watch.new_events() == []
    finally:
        watch.close()
