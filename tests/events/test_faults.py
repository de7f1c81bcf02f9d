"""Faults at the consumers' end (issue 13), on real databases, a real Redis behind a proxy we cut,
and real HTTP consumers on loopback: Redis down, a consumer that hangs, one that answers 410 Gone
(the endpoint is disabled, then enabled again), and one that answers 400 forever. In every case
the other sinks, and the other events, keep flowing."""

from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner

from hokusai_mlflow_plugin.cli import main as cli
from hokusai_mlflow_plugin.db.session import session_factory
from hokusai_mlflow_plugin.events.relay import Relay, RetryPolicy
from hokusai_mlflow_plugin.events.sinks import RedisStreamSink, WebhookSink
from tests.events.consumers import HangingConsumer, ReplyLosingProxy, TcpProxy
from tests.events.helpers import FAST, SECRET, add_events, attempts, deliveries, wait_until
from tests.harness import REDIS_HOST, REDIS_PORT, require_service


def of_sink(url: str, sink: str) -> list:
    return [d for d in deliveries(url) if d.sink == sink]


def statuses(url: str, sink: str) -> set[str]:
    return {d.status for d in of_sink(url, sink)}


# -- Redis down ------------------------------------------------------------------------------------


@pytest.fixture
def redis_proxy():
    """A TCP proxy in front of the machine's Redis (which is never stopped), and a fresh stream."""
    import redis

    require_service("Redis", REDIS_HOST, REDIS_PORT)
    proxy = TcpProxy(REDIS_HOST, REDIS_PORT).open()
    stream = f"hokusai:test:{uuid.uuid4().hex[:8]}"
    direct = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    yield proxy, stream, direct
    proxy.release()
    direct.delete(stream)
    direct.close()


def test_redis_down_holds_the_stream_alone_and_it_catches_up(db_url, sink_server, redis_proxy):
    """Stands for Redis down for a minute (here a few seconds, with retries every 0.2 s at most):
    the stream's deliveries stay pending/failed and are retried, the webhook beside it gets every
    event meanwhile, and once Redis is back the stream gets every event, each once."""
    proxy, stream, direct = redis_proxy
    hook = sink_server()
    redis_sink = RedisStreamSink(f"redis://127.0.0.1:{proxy.port.port}/0", stream)
    relay = Relay(session_factory(db_url), [redis_sink, WebhookSink(hook.url, SECRET)], FAST).start()
    try:
        [before] = add_events(db_url)
        relay.kick()
        # through the proxy, pooled; and its reply back (in Redis is not enough: a reply still on its
        # way when the proxy cuts is lost, and the event is then rightly sent again, at least once)
        assert wait_until(lambda: statuses(db_url, redis_sink.name) == {"delivered"}, timeout=10)
        assert direct.xlen(stream) == 1

        proxy.close()  # Redis goes down: the relay's pooled connection is cut, new ones refused
        during = add_events(db_url, 3)
        relay.kick()
        assert hook.wait_count(4, timeout=10), "the webhook was held up by Redis"
        assert hook.ids() == [before, *during]
        waiting = lambda: [d for d in of_sink(db_url, redis_sink.name) if d.event_id in during]  # noqa: E731
        assert wait_until(lambda: all(d.attempts >= 2 for d in waiting()), timeout=10)
        assert {d.status for d in waiting()} <= {"pending", "failed"}
        assert all("ConnectionError" in d.last_error for d in waiting() if d.last_error)
        assert direct.xlen(stream) == 1

        proxy.open()  # Redis is back
        assert wait_until(lambda: statuses(db_url, redis_sink.name) == {"delivered"}, timeout=10)
    finally:
        relay.stop()
    sent = [fields[b"event_id"].decode() for _, fields in direct.xrange(stream)]
    assert sorted(sent) == sorted([before, *during]) and len(sent) == 4  # each once
    assert len(hook.requests) == 4  # the webhook was not sent anything twice


def test_a_lost_redis_reply_is_one_failed_send_and_the_xadd_ran_once(redis_proxy):
    """A reply lost on a cut connection: the send fails, says why, and the XADD ran once. A client
    with redis-py's retries (10 through ``Redis(host=...)`` in 8.1) sends it again by itself, unseen
    by the relay and past the sink's timeout; the relay's own retry is the one that resends,
    recorded, after its backoff."""
    _, stream, direct = redis_proxy
    losing = ReplyLosingProxy(REDIS_HOST, REDIS_PORT, b"XADD").open()
    sink = RedisStreamSink(f"redis://127.0.0.1:{losing.port.port}/0", stream)
    try:
        result = sink.send("e-1", "token_ready_for_deploy", "{}")
    finally:
        sink.close()
        losing.release()
    assert not result.ok and result.error.startswith("ConnectionError"), result
    assert losing.lost == 1
    assert [fields[b"event_id"] for _, fields in direct.xrange(stream)] == [b"e-1"]


# -- a consumer that hangs -------------------------------------------------------------------------


def test_a_consumer_that_never_answers_times_out_and_the_rest_flows(db_url, sink_server):
    """The hanging consumer accepts and reads, never answers: each send ends at the sink's
    timeout (0.5 s here), is recorded as a failed attempt and retried; each of its events is
    tried (none stuck behind the first), and the other sink gets every event meanwhile."""
    hung = HangingConsumer().open()
    hook = sink_server()
    hanging_sink = WebhookSink(hung.url + "/hangs", SECRET, timeout=0.5)
    relay = Relay(session_factory(db_url), [hanging_sink, WebhookSink(hook.url, SECRET)], FAST).start()
    try:
        ids = add_events(db_url, 3)
        relay.kick()
        assert hook.wait_count(3, timeout=10)
        assert sorted(hook.ids()) == sorted(ids)
        tried = lambda: [d for d in of_sink(db_url, hanging_sink.name) if d.attempts >= 1]  # noqa: E731
        assert wait_until(lambda: len(tried()) == 3, timeout=15)
    finally:
        relay.stop(timeout=5)
        hung.release()
    rows = of_sink(db_url, hanging_sink.name)
    assert {d.event_id for d in rows} == set(ids) and {d.status for d in rows} <= {"failed", "pending"}
    assert all("Timeout" in d.last_error or "timed out" in d.last_error for d in rows if d.last_error), [d.last_error for d in rows]
    tries = [a for a in attempts(db_url) if a.delivery_id in {d.id for d in rows}]
    assert tries and all(a.status_code is None and a.error for a in tries)
    # the timeout fired: each send waited for it (0.5 s; the margin is for timer rounding), then
    # ended (the other events were tried after it)
    assert all(a.latency_ms >= 0.9 * 500 for a in tries), [a.latency_ms for a in tries]
    assert hung.accepted >= 3


# -- 400 forever -----------------------------------------------------------------------------------


def test_400_forever_is_dead_after_the_horizon_and_the_rest_flows(db_url, sink_server):
    """A consumer that refuses every event with 400: each is retried until the retry horizon
    (0.6 s here) runs out, then dead; the other sink gets every event, once."""
    refusing, hook = sink_server(), sink_server()
    refusing.status = 400
    policy = RetryPolicy(base=0.05, cap=0.1, horizon=0.6)
    refused = WebhookSink(refusing.url + "/refuses", SECRET)
    relay = Relay(session_factory(db_url), [refused, WebhookSink(hook.url, SECRET)], policy).start()
    try:
        ids = add_events(db_url, 3)
        relay.kick()
        assert hook.wait_count(3, timeout=10)
        assert wait_until(lambda: statuses(db_url, refused.name) == {"dead"}, timeout=15)
        count = len(refusing.requests)
        relay.kick()  # a full pass over everything
        assert relay.wait_idle()  # and it found nothing to send: dead is dead
        assert len(refusing.requests) == count
    finally:
        relay.stop()
    assert sorted(hook.ids()) == sorted(ids) and len(hook.requests) == 3
    rows = of_sink(db_url, refused.name)
    assert all(d.attempts >= 2 and "HTTP 400" in d.last_error and "horizon" in d.last_error for d in rows)
    assert {a.status_code for a in attempts(db_url) if a.delivery_id in {d.id for d in rows}} == {400}


# -- 410 Gone: the endpoint is disabled, listed, enabled again -------------------------------------


def events_cli(url: str, *args: str):
    return CliRunner().invoke(cli, ["--database-url", url, "events", *args])


def test_410_disables_the_endpoint_keeps_its_events_and_enable_sends_them(db_url, sink_server):
    gone, other = sink_server(), sink_server()
    gone.script = [410]
    gone_sink = WebhookSink(gone.url + "/gone", SECRET)
    relay = Relay(session_factory(db_url), [gone_sink, WebhookSink(other.url, SECRET)], FAST, poll_interval=0.1).start()
    try:
        ids = add_events(db_url, 3)
        relay.kick()
        assert other.wait_count(3, timeout=10)  # the other sink is not held up
        assert wait_until(lambda: len(of_sink(db_url, gone_sink.name)) == 3)
        relay.kick()  # a full pass
        assert relay.wait_idle()  # which sent a disabled sink nothing more
        assert gone.ids() == [ids[0]]
        rows = of_sink(db_url, gone_sink.name)
        assert {d.status for d in rows} == {"pending"}  # kept, not dead
        assert "410" in rows[0].last_error and "hokusai events enable" in rows[0].last_error

        listed = events_cli(db_url, "list")
        assert listed.exit_code == 0, listed.output
        assert f"DISABLED {gone_sink.name}" in listed.output and "HTTP 410" in listed.output
        assert f"hokusai events enable {gone_sink.name}" in listed.output and "holds 3 deliveries" in listed.output
        as_json = json.loads(events_cli(db_url, "list", "--json").output)
        assert {r["event_id"] for r in as_json if r.get("sink_disabled")} == set(ids)
        assert not any(r.get("sink_disabled") for r in as_json if r["sink"] != gone_sink.name)

        enabled = events_cli(db_url, "enable", gone_sink.name)
        assert enabled.exit_code == 0, enabled.output
        assert "3 held deliveries" in enabled.output
        assert wait_until(lambda: statuses(db_url, gone_sink.name) == {"delivered"}, timeout=10)
    finally:
        relay.stop()
    assert gone.ids() == [ids[0], *ids]  # the 410'd event again, same webhook-id, then the rest in order
    assert "DISABLED" not in events_cli(db_url, "list").output
    again = events_cli(db_url, "enable", gone_sink.name)
    assert again.exit_code == 0 and "enabled already" in again.output


def test_enable_an_unknown_sink_is_a_clean_error(db_url):
    result = events_cli(db_url, "enable", "webhook:http://nowhere.example/hook")
    assert result.exit_code == 1, result.output
    assert "No sink 'webhook:http://nowhere.example/hook'" in result.output and "Traceback" not in result.output


def test_a_sink_disabled_by_one_relay_is_skipped_by_another(db_url, sink_server):
    """The state is in the token database, not in a worker: a second relay process (here a
    second Relay) sends nothing to a sink the first one saw answer 410."""
    gone = sink_server()
    gone.status = 410
    add_events(db_url, 2)
    Relay(session_factory(db_url), [WebhookSink(gone.url, SECRET)], FAST).run_once()
    assert len(gone.requests) == 1
    gone.status = 200
    add_events(db_url, 1)
    assert Relay(session_factory(db_url), [WebhookSink(gone.url, SECRET)], FAST).run_once() == 0
    assert len(gone.requests) == 1 and {d.status for d in deliveries(db_url)} == {"pending"}


def test_enable_over_the_api_says_it_needs_the_database(monkeypatch):
    monkeypatch.setenv("HOKUSAI_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("HOKUSAI_API_KEY", "hk_x_y")
    result = CliRunner().invoke(cli, ["events", "enable", "webhook:http://consumer.example/hook"])
    assert result.exit_code == 1 and "needs the token database" in result.output and "Traceback" not in result.output
