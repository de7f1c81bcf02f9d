"""The outbox relay and its sinks, against real Redis, real PostgreSQL and real HTTP receivers on
loopback: every sink, retries, a sink that is down, 410, the retry horizon, redelivery, a relay
killed mid-batch, two workers on one outbox, and a slow sink beside a fast one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from standardwebhooks import Webhook

from hokusai_mlflow_plugin.cli import main as cli
from hokusai_mlflow_plugin.config import load_settings
from hokusai_mlflow_plugin.db.migrate import upgrade
from hokusai_mlflow_plugin.db.models import Attempt, Delivery, OutboxEvent, Token, utcnow
from hokusai_mlflow_plugin.db.session import session_factory
from hokusai_mlflow_plugin.mlflow_facts import VersionFacts
from hokusai_mlflow_plugin.relay import Relay, RetryPolicy, from_settings
from hokusai_mlflow_plugin.service import RegistrationService
from hokusai_mlflow_plugin.sinks import ConsoleSink, RedisStreamSink, WebhookSink, _retry_after
from tests.harness import (
    REDIS_HOST,
    REDIS_PORT,
    CaptureReceiver,
    ReservedPort,
    notify,
    require_service,
)

SECRET = "whsec_" + "aG9rdXNhaS1ldmVudHMtdGVzdC1zZWNyZXQtMzJieXRlcyE="
FAST = RetryPolicy(base=0.05, cap=0.2, horizon=60)


@pytest.fixture
def sink_server():
    servers = []

    def make(port: ReservedPort | None = None) -> CaptureReceiver:
        server = CaptureReceiver(port).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def add_events(url: str, n: int = 1) -> list[str]:
    """Write ``n`` token_ready_for_deploy events the way a registration does (rows + NOTIFY)."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with session_factory(url).begin() as session:
        session.add_all(
            OutboxEvent(
                event_id=event_id,
                event_type="token_ready_for_deploy",
                payload={"token_id": f"T{i}", "mlflow_run_id": "r", "model_name": "m", "model_version": str(i + 1),
                         "metadata": {"metric_name": "auroc", "metric_value": 0.9, "baseline_value": 0.8}},
                created_at=utcnow(),
            )
            for i, event_id in enumerate(ids)
        )
        notify(session, ids)
    return ids


def deliveries(url: str) -> list[Delivery]:
    with session_factory(url)() as s:
        return list(s.scalars(sa.select(Delivery).order_by(Delivery.outbox_id)))


def first_status(url: str) -> str | None:
    rows = deliveries(url)
    return rows[0].status if rows else None


def attempts(url: str) -> list[Attempt]:
    with session_factory(url)() as s:
        return list(s.scalars(sa.select(Attempt).order_by(Attempt.id)))


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def headers_of(captured) -> dict:
    return {k.lower(): v for k, v in captured.headers.items()}


# -- units -----------------------------------------------------------------------------------------


def test_backoff_grows_with_jitter_and_honours_retry_after():
    policy = RetryPolicy(base=10, cap=3600, horizon=3 * 86400)
    for attempts_ in range(1, 12):
        step = min(3600, 10 * 2 ** (attempts_ - 1))
        delays = {policy.delay(attempts_) for _ in range(20)}
        assert all(step / 2 <= d <= step for d in delays)
        assert len(delays) > 1  # jitter
    assert policy.delay(1, retry_after=120) >= 120


def test_retry_after_forms():
    assert _retry_after("7") == 7
    assert _retry_after(None) is None and _retry_after("soon") is None
    later = datetime.fromtimestamp(time.time() + 60, tz=timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 50 < _retry_after(later) <= 60


def test_webhook_headers_verify_with_the_standardwebhooks_library():
    sink = WebhookSink("http://127.0.0.1:9/hook?token=abc", SECRET)
    body = json.dumps({"event_id": "e1", "payload": {}})
    headers = sink.headers("e1", body)
    assert Webhook(SECRET).verify(body, headers) == {"event_id": "e1", "payload": {}}
    assert headers["webhook-id"] == "e1"
    assert sink.name == "webhook:http://127.0.0.1:9/hook"  # no query string, no credentials


def test_webhook_url_without_a_secret_is_a_configuration_error():
    settings = load_settings(environ={"HOKUSAI_EVENT_WEBHOOK_URL": "http://x/hook"})
    with pytest.raises(ValueError, match="HOKUSAI_EVENT_WEBHOOK_SECRET"):
        from_settings(settings, session_factory("sqlite://"))


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


def test_console_sink_prints_the_envelope(db_url, capsys):
    event_id = add_events(db_url)[0]
    Relay(session_factory(db_url), [ConsoleSink()]).run_once()
    printed = json.loads(capsys.readouterr().out.strip())
    assert printed["event_id"] == event_id and printed["source"] == "hokusai-ml-platform"
    assert printed["event_type"] == "token_ready_for_deploy" and printed["payload"]["token_id"] == "T0"


# -- every sink ------------------------------------------------------------------------------------


def test_one_event_reaches_every_sink(pg_url, sink_server):
    import psycopg
    import redis

    from hokusai_mlflow_plugin.watch import libpq_dsn

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
        outcome, event_ids = RegistrationService(session_factory(pg_url), client=None)._decide_and_record(facts, None, False)
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


def test_410_gone_is_dead_at_once(db_url, sink_server):
    hook = sink_server()
    hook.status = 410
    add_events(db_url)
    Relay(session_factory(db_url), [WebhookSink(hook.url, SECRET)], FAST).run_once()
    [d] = deliveries(db_url)
    assert d.status == "dead" and d.attempts == 1 and "410" in d.last_error


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
        time.sleep(1.5)  # a lease (1 s) would have run out: nothing more may arrive
    finally:
        for w in workers:
            os.killpg(w.pid, signal.SIGTERM)
        for w in workers:
            assert w.wait(15) == 0
    counts = Counter(hook.ids())
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1, [i for i, c in counts.items() if c > 1][:5]
    logs = "".join((tmp_path / f"worker-{i}.log").read_text() for i in range(2))
    assert "Traceback" not in logs


def test_a_batch_that_outlives_its_lease_keeps_it(db_url, sink_server):
    """A batch takes longer than the lease: the worker renews the rest of its batch (in one
    statement, not once per send) before the lease could run out, so a second worker that keeps
    trying to claim gets none of it, and every event arrives exactly once."""
    hook = sink_server()
    hook.delay = 0.3
    ids = add_events(db_url, 10)  # 10 sends of 0.3 s: 3 s, with a lease of 2.5 s
    sink = WebhookSink(hook.url, SECRET, timeout=1.0)  # sends while more than 2 s are left
    worker = Relay(session_factory(db_url), [sink], FAST, lease=2.5)
    other = Relay(session_factory(db_url), [WebhookSink(hook.url, SECRET)], FAST, lease=2.5)
    worker.fan_out()
    renewals = []
    renew = worker.renew
    worker.renew = lambda delivery_ids: renewals.append(len(delivery_ids)) or renew(delivery_ids)
    claimed = threading.Event()
    claim = worker.claim
    worker.claim = lambda *a, **k: (claim(*a, **k), claimed.set())[0]
    stolen: list = []
    thread = threading.Thread(target=worker.deliver_batch, args=(sink.name,))
    thread.start()
    assert claimed.wait(10)
    while thread.is_alive():
        stolen += other.claim(sink.name)
        time.sleep(0.05)
    thread.join()
    assert stolen == []
    assert 1 <= len(renewals) < len(ids)
    assert sorted(hook.ids()) == sorted(ids)
    assert {(d.status, d.attempts, d.lease_owner) for d in deliveries(db_url)} == {("delivered", 1, None)}
    assert len(attempts(db_url)) == len(ids)


def test_a_success_recorded_after_the_lease_moved_on_keeps_the_new_owners_state(db_url):
    from hokusai_mlflow_plugin.sinks import Result

    add_events(db_url)
    relay = Relay(session_factory(db_url), [ConsoleSink()], FAST)
    relay.fan_out()
    [(delivery_id, *_)] = relay.claim("console")
    with session_factory(db_url).begin() as s:  # our lease ran out; another worker holds it now
        s.execute(sa.update(Delivery).values(lease_owner="another-worker"))
    relay.record_delivered([(delivery_id, Result(True, 200), 3.0, utcnow())])
    [d] = deliveries(db_url)
    assert (d.status, d.lease_owner, d.attempts) == ("pending", "another-worker", 0)
    assert [a.status_code for a in attempts(db_url)] == [200]  # the attempt happened all the same


def test_a_kick_with_event_ids_delivers_just_those_at_once(db_url, sink_server):
    """The fast path: a kick names the events just committed; the relay delivers them without
    waiting for its next full pass, which picks up the rest."""
    hook = sink_server()
    relay = Relay(session_factory(db_url), [WebhookSink(hook.url, SECRET)], FAST, poll_interval=3600).start()
    try:
        time.sleep(0.5)  # its first full pass is over: the next one is an hour away
        unnamed = add_events(db_url, 2)
        [named] = add_events(db_url)
        relay.kick([named])
        assert hook.wait_count(1, timeout=10)
        time.sleep(0.3)
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
        time.sleep(0.5)  # its first full pass is over: the next one is an hour away
        older = add_events(db_url, 3)
        relay.fan_out(older)  # due, not delivered yet
        newer = add_events(db_url, 4)
        relay.kick(reversed(newer))
        assert hook.wait_count(7, timeout=15)
    finally:
        relay.stop()
    assert hook.ids() == older + newer


def test_a_forked_worker_holds_leases_under_its_own_name(tmp_path):
    """gunicorn --preload builds the app, and its relay, before forking the workers: each worker
    must claim as itself, or the lease-owner checks could not tell two workers apart."""
    url = f"sqlite:///{tmp_path / 'fork.db'}"
    upgrade(url)
    relay = Relay(session_factory(url), [ConsoleSink()], FAST, poll_interval=3600)
    relay.ensure_started()
    time.sleep(0.5)  # its first pass is over: no lock is held across the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        try:
            relay.ensure_started()
            os.write(write, relay.worker_id.encode())
        finally:
            os._exit(0)
    os.close(write)
    child_id = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    os.close(read)
    relay.stop()
    assert child_id and child_id != relay.worker_id


def test_webhook_sink_uses_the_proxy_of_the_environment(monkeypatch, sink_server):
    """The environment is read once when the sink is made (not on every POST), and still counts."""
    proxy = sink_server()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    sink = WebhookSink("http://consumer.invalid/hook", SECRET)
    monkeypatch.delenv("HTTP_PROXY")
    assert sink.send("e1", "token_ready_for_deploy", "{}").ok
    assert [r.path for r in proxy.requests] == ["http://consumer.invalid/hook"]


def test_fan_out_probes_the_unique_index_per_event_whatever_the_statistics(pg_url):
    """Without fresh statistics (a burst before autovacuum's ANALYZE) PostgreSQL planned the
    NOT EXISTS as an anti-join comparing every event with every delivery: seconds per pass at 10k
    events (BENCHMARKS.md). The query must probe (event, sink)'s unique index once per event."""
    relay = Relay(session_factory(pg_url), [ConsoleSink()], FAST)
    add_events(pg_url, 50)
    relay.fan_out()
    query = relay._without_delivery("console").where(OutboxEvent.created_at >= utcnow()).limit(500)
    with session_factory(pg_url)() as s:
        compiled = query.compile(s.get_bind(), compile_kwargs={"literal_binds": True})
        plan = "\n".join(s.execute(sa.text(f"EXPLAIN {compiled}")).scalars())
    assert "Anti Join" not in plan, plan
    assert "uq_hokusai_deliveries_event_sink" in plan, plan


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
    """Outbox ids are given at insert: id 1 may commit after id 2. The watcher must print both."""
    from hokusai_mlflow_plugin import outbox

    sessions = session_factory(db_url)
    with sessions() as session:
        seen = {e.event_id for e in outbox.recent_events(session)}
    late = OutboxEvent(event_id=str(uuid.uuid4()), event_type="token_ready_for_deploy", payload={}, created_at=utcnow())
    early_id = add_events(db_url)[0]
    with sessions.begin() as session:  # committed after `early_id`, but created before it was read
        session.add(late)
    with sessions() as session:
        new = [e.event_id for e in outbox.recent_events(session) if e.event_id not in seen]
    assert set(new) == {early_id, late.event_id}


def _event_at(url: str, created_at) -> str:
    event_id = str(uuid.uuid4())
    with session_factory(url).begin() as session:
        session.add(OutboxEvent(event_id=event_id, event_type="token_ready_for_deploy", payload={"token_id": "T"},
                                created_at=created_at))
    return event_id


def test_a_sink_configured_later_gets_the_last_horizon_and_late_commits(db_url, sink_server):
    from datetime import timedelta

    hook = sink_server()
    old = _event_at(db_url, utcnow() - timedelta(days=4))  # beyond the 3-day horizon
    recent = _event_at(db_url, utcnow() - timedelta(days=1))
    relay = Relay(session_factory(db_url), [WebhookSink(hook.url, SECRET)], RetryPolicy(base=0.05, cap=0.1, horizon=3 * 86400))
    relay.run_once()
    assert set(hook.ids()) == {recent}
    # an event created before the sink's cursor but committed after it (a slow transaction)
    late = _event_at(db_url, utcnow() - timedelta(minutes=2))
    relay.run_once()
    assert set(hook.ids()) == {recent, late} and old not in hook.ids()
