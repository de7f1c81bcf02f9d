"""The operator's views of the outbox, on SQLite and PostgreSQL: events of one token, the
deliveries of one event, and the outbox itself before any sink has seen it."""

from __future__ import annotations

from hokusai_mlflow_plugin.db.session import session_factory
from hokusai_mlflow_plugin.events import outbox
from hokusai_mlflow_plugin.events.relay import Relay
from hokusai_mlflow_plugin.events.sinks import ConsoleSink
from tests.events.helpers import FAST, add_events


def test_events_of_one_token_and_one_type(db_url):
    ids = add_events(db_url, 3)  # tokens T0, T1, T2
    with session_factory(db_url)() as session:
        assert [e.event_id for e in outbox.list_events(session, token_id="T1")] == [ids[1]]
        assert outbox.list_events(session, event_type="model_registered") == []
        assert [e.event_id for e in outbox.list_events(session, event_type="token_ready_for_deploy")] == ids[::-1]
        assert len(outbox.list_events(session, limit=2)) == 2


def test_before_any_sink_the_outbox_shows_its_events_as_stored(db_url):
    ids = add_events(db_url, 2)
    with session_factory(db_url)() as session:
        rows = outbox.deliveries_or_events(session)
    assert [(r["event_id"], r["status"], r["sink"]) for r in rows] == [(ids[1], "stored", None), (ids[0], "stored", None)]


def test_the_deliveries_of_one_event(db_url, capsys):
    ids = add_events(db_url, 3)
    Relay(session_factory(db_url), [ConsoleSink()], FAST).run_once()
    with session_factory(db_url)() as session:
        rows = outbox.list_deliveries(session, event_id=ids[1])
        everything = outbox.deliveries_or_events(session)
    assert [(r["event_id"], r["sink"], r["status"], r["attempts"]) for r in rows] == [(ids[1], "console", "delivered", 1)]
    assert [len(r["history"]) for r in rows] == [1]
    assert {r["status"] for r in everything} == {"delivered"} and len(everything) == 3
