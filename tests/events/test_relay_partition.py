"""A relay worker cut off from PostgreSQL in the middle of its lease (issue 25): it sends nothing
more, no other worker sends what it holds until its lease has run out, and then every event is
delivered; the one send that may repeat (in flight at the cut, unrecorded) carries its webhook-id.

Relay A reaches PostgreSQL through a relay in a network namespace of the test's own
(``tests/netns.py``), whose veth is cut silently; relay B reaches it directly. Needs root, as
tests/auth/test_partition.py does.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from datetime import datetime, timezone

import psycopg
import pytest
import sqlalchemy as sa

from hokusai_mlflow_plugin.db.session import libpq_dsn
from tests import netns
from tests.events.helpers import add_events, deliveries, wait_until
from tests.events.test_relay import relay_process


@pytest.fixture
def link():
    yield from netns.link_for_test("rly")


class Stamped(list):
    """The capture receiver's list of requests, with the wall-clock time each was recorded."""

    def __init__(self):
        super().__init__()
        self.at: list[datetime] = []

    def append(self, item):
        self.at.append(datetime.now(timezone.utc))
        super().append(item)


def lease_end(url: str) -> datetime:
    with psycopg.connect(libpq_dsn(url)) as conn:
        return conn.execute("SELECT max(locked_until) FROM hokusai_deliveries WHERE lease_owner IS NOT NULL").fetchone()[0]


def test_a_relay_cut_off_mid_lease_sends_nothing_more_and_its_lease_is_waited_out(link, pg_url, sink_server, tmp_path):
    parsed = sa.make_url(pg_url)
    relays = netns.Relays()
    port = relays.add(link.namespace, link.inside, (parsed.host or "127.0.0.1", parsed.port or 5432))
    through = parsed.set(host=link.inside, port=port).render_as_string(hide_password=False)
    hook = sink_server()
    hook.requests = Stamped()
    hook.delay = 0.2  # each send takes a while: the cut falls in the middle of the batch
    ids = add_events(pg_url, 12)
    cut_off = relay_process(through, hook.url, tmp_path, "cut-off")  # lease 1 s: renewed before each send
    direct = None
    try:
        assert hook.wait_count(3, timeout=60)
        link.cut()
        cut_at = datetime.now(timezone.utc)
        ends = lease_end(pg_url)  # the cut-off relay's lease of the rest of its batch
        sent_before = len(hook.requests)
        direct = relay_process(pg_url, hook.url, tmp_path, "direct")
        assert wait_until(lambda: {d.status for d in deliveries(pg_url)} == {"delivered"}, timeout=60)
        link.heal()
        time.sleep(1.5)  # the cut-off relay hears its lease was taken (a lease, 1 s, and more): it must send nothing
    finally:
        link.heal()
        for worker in (cut_off, direct):
            if worker is not None and worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in (cut_off, direct):
            if worker is not None:
                worker.wait(15)
        relays.close()

    assert set(hook.ids()) == set(ids)  # none lost
    after_cut = list(zip(hook.requests.at[sent_before:], hook.ids()[sent_before:]))
    early = [(at, i) for at, i in after_cut if at < ends]
    # at most the send in flight when the link went silent arrives before the lease ran out
    assert len(early) <= 1, f"sent during the cut-off relay's lease (cut {cut_at:%T.%f}, lease to {ends:%T.%f}): {early}"
    repeated = {i: n for i, n in Counter(hook.ids()).items() if n > 1}
    assert len(repeated) <= 1 and set(repeated.values()) <= {2}, repeated  # that one send, again, with its webhook-id


class LateStore:
    """A deliveries store (a unit's stand-in) whose first renew answers late, the way one sent
    just before a silent cut comes back after the link heals: after more than the lease."""

    def __init__(self, lease: float):
        self.lease, self.renews, self.sent_at_renews = lease, [], []

    def claim(self, sink, event_ids=None, fan_out=None):
        return [(1, "e1", "token_ready_for_deploy", "{}"), (2, "e2", "token_ready_for_deploy", "{}")]

    def renew(self, ids):
        self.renews.append(time.monotonic())
        if len(self.renews) == 1:
            time.sleep(self.lease * 1.2)  # the lease it earns (counted from before it was sent) is over on return
        return set(ids)

    def record_delivered(self, done):
        pass


class Sink:
    name, timeout = "hook", 0.05

    def __init__(self, store):
        self.store, self.sends = store, []

    def send(self, event_id, event_type, body):
        from hokusai_mlflow_plugin.events.sinks import Result

        self.sends.append((event_id, len(self.store.renews)))
        return Result(True, 200)


def test_a_renew_that_came_back_after_its_lease_is_renewed_again_before_a_send(tmp_path):
    from hokusai_mlflow_plugin.db.session import session_factory
    from hokusai_mlflow_plugin.events.relay import Relay

    lease = 0.3
    relay = Relay(session_factory(f"sqlite:///{tmp_path / 'unused.db'}"), [], lease=lease)
    store = LateStore(lease)
    sink = Sink(store)
    relay.sinks, relay.deliveries = {"hook": sink}, store
    relay.deliver_batch("hook")
    assert [event_id for event_id, _ in sink.sends] == ["e1", "e2"]
    assert sink.sends[0][1] >= 2, "e1 was sent on the lease of a renew that returned after it ran out"
