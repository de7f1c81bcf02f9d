"""The outbox relay against real Redis, real PostgreSQL and real HTTP receivers on loopback: every
sink, retries, a sink that is down, the retry horizon, redelivery, a relay killed mid-batch,
two workers on one outbox, kicks, and a slow sink beside a fast one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import datetime, timezone

import sqlalchemy as sa
from click.testing import CliRunner
from standardwebhooks import Webhook

from hokusai_mlflow_plugin.cli import main as cli
from hokusai_mlflow_plugin.db.migrate import upgrade
from hokusai_mlflow_plugin.db.models import OutboxEvent, Token
from hokusai_mlflow_plugin.db.session import session_factory
from hokusai_mlflow_plugin.events.relay import Relay, RetryPolicy
from hokusai_mlflow_plugin.events.sinks import RedisStreamSink, WebhookSink
from hokusai_mlflow_plugin.mlflow_io.facts import VersionFacts
from hokusai_mlflow_plugin.registration.service import RegistrationService
from tests.events.helpers import FAST, SECRET, add_events, attempts, deliveries, first_status, headers_of, wait_until
from tests.harness import (
    REDIS_HOST,
    REDIS_PORT,
    ReservedPort,
    require_service,
)


def test_no_sink_keeps_events_in_the_outbox(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    upgrade(url)
    add_events(url, 2)
    relay = Relay(session_factory(url), [])
    assert relay.run_once() == 0
    with session_factory(url)() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(OutboxEvent)) == 2
    result = CliRunner().invoke(cli, ["--database-url", url, "events", "list", "--json"])
    assert result.exit_code == 0 and [r["status"] for r in json.loads(result.output)] == ["stored", "stored"]


# -- every sink ------------------------------------------------------------------------------------


def test_one_event_reaches_every_sink(pg_url, sink_server):
    import psycopg
    import redis

    from hokusai_mlflow_plugin.db.session import libpq_dsn

    require_service("Redis", REDIS_HOST, REDIS_PORT)
    stream = f"hokusai:test:{uuid.uuid4().hex[:8]}"
    r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    r.xgroup_create(stream, "deployers", id="0", mkstream=True)  # the consumer group exists; its consumer is down

    with psycopg.connect(libpq_dsn(pg_url), autocommit=True) as listener:
        listener.execute("LISTEN hokusai_events")

        hook = sink_server()
        relay = Relay(
            session_factory(pg_url),
            [WebhookSink(hook.url + "/events", SECRET), RedisStreamSink(f"redis://{REDIS_HOST}:{REDIS_PORT}/0", stream)],
            FAST,
        )
        # the events as the registration service writes them: rows and NOTIFY in its one statement
        with session_factory(pg_url).begin() as s:
            s.add(Token(token_id="XRAY", metric_name="auroc", baseline_value=0.82))
        facts = VersionFacts(model_name="xray", version="1", source="models:/m-1", run_id="r" * 32, model_id="m-1",
                             version_tags={"hokusai_token_id": "XRAY"}, run_metrics={"auroc": 0.9})
        outcome, event_ids = RegistrationService(session_factory(pg_url), client=None).decide_and_record(facts)
        assert outcome.status == "registered"
        event_id = event_ids[1]  # model_registered, then token_ready_for_deploy

        notes = list(listener.notifies(timeout=5, stop_after=2))
        assert [n.payload for n in notes] == event_ids and {n.channel for n in notes} == {"hokusai_events"}

    relay.run_once()
    assert hook.wait_count(2)
    assert hook.ids() == event_ids
    received = hook.requests[1]
    envelope = Webhook(SECRET).verify(received.body, headers_of(received))
    assert envelope["event_id"] == event_id == headers_of(received)["webhook-id"]
    assert envelope["event_type"] == "token_ready_for_deploy" and envelope["payload"]["token_id"] == "XRAY"
    assert set(envelope) == {"event_id", "event_type", "source", "timestamp", "payload"}

    # the consumer comes back and reads with its group
    entries = r.xreadgroup("deployers", "deployer-1", {stream: ">"}, count=10, block=2000)
    [(_, messages)] = entries
    assert [m[1][b"event_id"].decode() for m in messages] == event_ids
    fields = messages[1][1]
    assert json.loads(fields[b"data"])["event_id"] == event_id
    r.xack(stream, "deployers", *[m[0] for m in messages])
    r.delete(stream)
    assert {d.status for d in deliveries(pg_url)} == {"delivered"}


# -- retries ---------------------------------------------------------------------------------------


def test_three_500s_then_200_is_four_attempts_with_one_webhook_id(db_url, sink_server):
    hook = sink_server()
    hook.script = [500, 500, 500]
    relay = Relay(session_factory(db_url), [WebhookSink(hook.url, SECRET)], FAST).start()
    event_id = add_events(db_url)[0]
    relay.kick()
    try:
        assert wait_until(lambda: first_status(db_url) == "delivered")
    finally:
        relay.stop()
    assert hook.ids() == [event_id] * 4
    tries = attempts(db_url)
    assert [a.status_code for a in tries] == [500, 500, 500, 200]
    assert all(a.latency_ms > 0 and a.attempted_at is not None for a in tries)
    assert deliveries(db_url)[0].attempts == 4


def test_a_sink_that_is_down_gets_the_event_when_it_comes_back(db_url, sink_server):
    port = ReservedPort()  # down (connections refused), and no other program can take it meanwhile
    relay = Relay(session_factory(db_url), [WebhookSink(port.url + "/hook", SECRET)], FAST).start()
    event_id = add_events(db_url)[0]
    relay.kick()
    try:
        assert wait_until(lambda: sum(1 for a in attempts(db_url) if a.error) >= 2)
        assert "ConnectionError" in attempts(db_url)[0].error
        hook = sink_server(port)  # the consumer is back
        assert wait_until(lambda: first_status(db_url) == "delivered")
    finally:
        relay.stop()
        port.release()  # a server that came up keeps its own socket
    assert hook.ids() == [event_id]


def test_retry_after_is_honoured(db_url, sink_server):
    hook = sink_server()
    hook.script = [(503, {"Retry-After": "30"})]
    add_events(db_url)
    Relay(session_factory(db_url), [WebhookSink(hook.url, SECRET)], FAST).run_once()
    [d] = deliveries(db_url)
    wait = d.next_attempt_at.replace(tzinfo=timezone.utc) - datetime.now(timezone.utc)
    assert d.status == "failed" and wait.total_seconds() > 25


def test_past_the_horizon_is_dead_then_listed_and_redelivered(db_url, sink_server, monkeypatch):
    hook = sink_server()
    hook.status = 500
    policy = RetryPolicy(base=0.05, cap=0.1, horizon=0.5)
    relay = Relay(session_factory(db_url), [WebhookSink(hook.url, SECRET)], policy).start()
    event_id = add_events(db_url)[0]
    relay.kick()
    try:
        assert wait_until(lambda: first_status(db_url) == "dead")
    finally:
        relay.stop()
    assert "horizon" in deliveries(db_url)[0].last_error

    args = ["--database-url", db_url, "events"]
    listed = CliRunner().invoke(cli, [*args, "list", "--status", "dead", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert row["event_id"] == event_id and row["status"] == "dead" and row["attempts"] >= 2
    assert all(h["status_code"] == 500 for h in row["history"])

    hook.status = 200
    monkeypatch.setenv("HOKUSAI_EVENT_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("HOKUSAI_EVENT_WEBHOOK_SECRET", SECRET)
    result = CliRunner().invoke(cli, [*args, "redeliver", event_id])
    assert result.exit_code == 0, result.output
    assert "delivered" in result.output
    assert set(hook.ids()) == {event_id}  # every attempt, the redelivery included, has one id
    assert deliveries(db_url)[0].status == "delivered"


def test_redeliver_an_unknown_event_is_a_clean_error(db_url, monkeypatch):
    monkeypatch.setenv("HOKUSAI_EVENT_WEBHOOK_URL", "http://127.0.0.1:9/x")
    monkeypatch.setenv("HOKUSAI_EVENT_WEBHOOK_SECRET", SECRET)
    result = CliRunner().invoke(cli, ["--database-url", db_url, "events", "redeliver", "nope"])
    assert result.exit_code == 1 and "No event 'nope'" in result.output and "Traceback" not in result.output


# -- workers as processes --------------------------------------------------------------------------


def relay_process(url: str, hook_url: str, tmp_path, name: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "HOKUSAI_DATABASE_URL": url,
        "HOKUSAI_EVENT_WEBHOOK_URL": hook_url,
        "HOKUSAI_EVENT_WEBHOOK_SECRET": SECRET,
        "HOKUSAI_RELAY_LEASE": "1",
        "HOKUSAI_RELAY_RETRY_BASE": "0.05",
    }
    with open(tmp_path / f"{name}.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "hokusai_mlflow_plugin", "events", "relay"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def test_a_relay_killed_mid_batch_loses_nothing(db_url, sink_server, tmp_path):
    hook = sink_server()
    hook.delay = 0.05
    ids = add_events(db_url, 40)
    first = relay_process(db_url, hook.url, tmp_path, "first")
    try:
        assert hook.wait_count(5, timeout=60)
        os.killpg(first.pid, signal.SIGKILL)  # in the middle of its batch
        first.wait()
        assert len(set(hook.ids())) < len(ids), "the relay finished before it was killed"
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    hook.delay = 0
    second = relay_process(db_url, hook.url, tmp_path, "second")
    try:
        assert wait_until(lambda: {d.status for d in deliveries(db_url)} == {"delivered"}, timeout=60)
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(15)
    received = hook.ids()
    assert set(received) == set(ids)  # none lost
    for captured in hook.requests:  # any duplicate is the same event under the same webhook-id
        assert Webhook(SECRET).verify(captured.body, headers_of(captured))["event_id"] == headers_of(captured)["webhook-id"]


def test_two_workers_deliver_each_of_500_events_exactly_once(pg_url, sink_server, tmp_path):
    hook = sink_server()
    ids = add_events(pg_url, 500)
    workers = [relay_process(pg_url, hook.url, tmp_path, f"worker-{i}") for i in range(2)]
    try:
        assert wait_until(lambda: len(hook.requests) >= 500 and {d.status for d in deliveries(pg_url)} == {"delivered"}, timeout=120)
    finally:
        for w in workers:
            os.killpg(w.pid, signal.SIGTERM)
        for w in workers:
            assert w.wait(15) == 0  # stopped cleanly: a send in flight has ended, none is left to arrive
    # Counted once both workers are gone: a delivered row is claimed by nobody, so a duplicate
    # could only be a send in flight, and it arrived before its worker exited.
    counts = Counter(hook.ids())
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, [i for i, c in counts.items() if c > 1][:5]
    logs = "".join((tmp_path / f"worker-{i}.log").read_text() for i in range(2))
    assert "Traceback" not in logs


def test_a_kick_with_event_ids_delivers_just_those_at_once(db_url, sink_server):
    """The fast path: a kick names the events just committed; the relay delivers them without
    waiting for its next full pass, which picks up the rest."""
    hook = sink_server()
    relay = Relay(session_factory(db_url), [WebhookSink(hook.url, SECRET)], FAST, poll_interval=3600).start()
    try:
        assert relay.wait_idle()  # its first full pass is over: the next one is an hour away
        unnamed = add_events(db_url, 2)
        [named] = add_events(db_url)
        relay.kick([named])
        assert hook.wait_count(1, timeout=10)
        assert relay.wait_idle()  # done with the kick: nothing more is on its way
        assert hook.ids() == [named]
        relay.kick()  # no ids: a full pass now
        assert hook.wait_count(3, timeout=10)
        assert sorted(hook.ids()) == sorted([named, *unnamed])
    finally:
        relay.stop()


def test_a_kicked_event_never_overtakes_an_older_one(db_url, sink_server):
    """DESIGN.md: events go out in order of creation. Deliveries already due go first, then the
    kicked events, oldest first, however many kicks arrive and in whatever order."""
    hook = sink_server()
    relay = Relay(session_factory(db_url), [WebhookSink(hook.url, SECRET)], FAST, batch_size=2, poll_interval=3600).start()
    try:
        assert relay.wait_idle()  # its first full pass is over: the next one is an hour away
        older = add_events(db_url, 3)
        relay.fan_out(older)  # due, not delivered yet
        newer = add_events(db_url, 4)
        relay.kick(reversed(newer))
        assert hook.wait_count(7, timeout=15)
    finally:
        relay.stop()
    assert hook.ids() == older + newer


def test_a_slow_sink_does_not_hold_back_the_others(db_url, sink_server):
    slow, fast = sink_server(), sink_server()
    slow.delay = 1.0
    relay = Relay(session_factory(db_url), [WebhookSink(slow.url + "/slow", SECRET), WebhookSink(fast.url + "/fast", SECRET)], FAST).start()
    ids = add_events(db_url, 5)
    relay.kick()
    try:
        assert fast.wait_count(5, timeout=30)
        assert len(slow.requests) <= 1  # still busy with its first event
        assert set(fast.ids()) == set(ids)
    finally:
        relay.stop(timeout=30)


