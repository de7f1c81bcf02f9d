"""The deliveries store: the retry policy, leases that outlive a batch or move to another worker,
a forked worker's own leases, and the fan-out's cursor and index probe, on real databases."""

from __future__ import annotations

import os
import threading
import time
import uuid

import sqlalchemy as sa

from hokusai_mlflow_plugin.db.migrate import upgrade
from hokusai_mlflow_plugin.db.models import Delivery, OutboxEvent, utcnow
from hokusai_mlflow_plugin.db.session import session_factory
from hokusai_mlflow_plugin.events.relay import Relay, RetryPolicy
from hokusai_mlflow_plugin.events.sinks import ConsoleSink, WebhookSink
from tests.events.helpers import FAST, SECRET, add_events, attempts, deliveries


def test_backoff_grows_with_jitter_and_honours_retry_after():
    policy = RetryPolicy(base=10, cap=3600, horizon=3 * 86400)
    for attempts_ in range(1, 12):
        step = min(3600, 10 * 2 ** (attempts_ - 1))
        delays = {policy.delay(attempts_) for _ in range(20)}
        assert all(step / 2 <= d <= step for d in delays)
        assert len(delays) > 1  # jitter
    assert policy.delay(1, retry_after=120) >= 120


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
    renew = worker.deliveries.renew
    worker.deliveries.renew = lambda delivery_ids: renewals.append(len(delivery_ids)) or renew(delivery_ids)
    claimed = threading.Event()
    claim = worker.deliveries.claim
    worker.deliveries.claim = lambda *a, **k: (claim(*a, **k), claimed.set())[0]
    stolen: list = []
    thread = threading.Thread(target=worker.deliver_batch, args=(sink.name,))
    thread.start()
    assert claimed.wait(10)
    while thread.is_alive():
        stolen += other.deliveries.claim(sink.name)
        time.sleep(0.05)
    thread.join()
    assert stolen == []
    assert 1 <= len(renewals) < len(ids)
    assert sorted(hook.ids()) == sorted(ids)
    assert {(d.status, d.attempts, d.lease_owner) for d in deliveries(db_url)} == {("delivered", 1, None)}
    assert len(attempts(db_url)) == len(ids)


def test_a_claim_makes_the_kicked_events_rows_and_takes_the_older_due_ones_first(db_url):
    """The relay's fast path (a kick after a commit) makes the new events' delivery rows inside its
    claim: they are leased in the same transaction, behind an older event that was already due, and
    no event without a row is touched."""
    older = add_events(db_url)
    relay = Relay(session_factory(db_url), [ConsoleSink()], FAST)
    relay.fan_out()
    kicked = add_events(db_url, 2)
    untouched = add_events(db_url)  # committed, but not kicked: left to the next full fan-out
    claimed = relay.deliveries.claim("console", fan_out=kicked)
    assert [event_id for _, event_id, *_ in claimed] == older + kicked
    rows = {d.event_id: d for d in deliveries(db_url)}
    assert set(rows) == set(older + kicked) and untouched[0] not in rows
    assert {rows[e].lease_owner for e in older + kicked} == {relay.worker_id}


def test_a_success_recorded_after_the_lease_moved_on_keeps_the_new_owners_state(db_url):
    from hokusai_mlflow_plugin.events.sinks import Result

    add_events(db_url)
    relay = Relay(session_factory(db_url), [ConsoleSink()], FAST)
    relay.fan_out()
    [(delivery_id, *_)] = relay.deliveries.claim("console")
    with session_factory(db_url).begin() as s:  # our lease ran out; another worker holds it now
        s.execute(sa.update(Delivery).values(lease_owner="another-worker"))
    relay.deliveries.record_delivered([(delivery_id, Result(True, 200), 3.0, utcnow())])
    [d] = deliveries(db_url)
    assert (d.status, d.lease_owner, d.attempts) == ("pending", "another-worker", 0)
    assert [a.status_code for a in attempts(db_url)] == [200]  # the attempt happened all the same


def test_a_forked_worker_holds_leases_under_its_own_name(tmp_path):
    """gunicorn --preload builds the app, and its relay, before forking the workers: each worker
    must claim as itself, or the lease-owner checks could not tell two workers apart."""
    url = f"sqlite:///{tmp_path / 'fork.db'}"
    upgrade(url)
    relay = Relay(session_factory(url), [ConsoleSink()], FAST, poll_interval=3600)
    relay.ensure_started()
    assert relay.wait_idle()  # its first pass is over: no lock is held across the fork
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


def test_fan_out_probes_the_unique_index_per_event_whatever_the_statistics(pg_url):
    """Without fresh statistics (a burst before autovacuum's ANALYZE) PostgreSQL planned the
    NOT EXISTS as an anti-join comparing every event with every delivery: seconds per pass at 10k
    events (BENCHMARKS.md). The query must probe (event, sink)'s unique index once per event."""
    relay = Relay(session_factory(pg_url), [ConsoleSink()], FAST)
    add_events(pg_url, 50)
    relay.fan_out()
    query = relay.deliveries.without_delivery("console").where(OutboxEvent.created_at >= utcnow()).limit(500)
    with session_factory(pg_url)() as s:
        compiled = query.compile(s.get_bind(), compile_kwargs={"literal_binds": True})
        plan = "\n".join(s.execute(sa.text(f"EXPLAIN {compiled}")).scalars())
    assert "Anti Join" not in plan, plan
    assert "uq_hokusai_deliveries_event_sink" in plan, plan


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
