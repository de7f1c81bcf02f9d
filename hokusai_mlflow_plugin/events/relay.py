"""The outbox relay: every outbox event to every configured sink, at least once.

The rows, claims, leases and attempts are the deliveries store's (``events.deliveries``); this is
the worker around it.

* One thread per sink, so a slow sink never holds back the others. ``kick(event_ids)`` wakes them
  at once (the fast path after a registration commits, or a NOTIFY): they make the delivery rows of
  just those events and claim what is due, oldest first, in one transaction, so a kicked event
  never overtakes an older one. The full fan-out over the outbox runs every ``poll_interval`` and
  while it finds work.
* Once half of its lease is gone (or less than the sink's timeout plus a second is left), a worker
  records what it has sent and renews the lease of the rest of its batch in one statement, and
  skips what is no longer its own (the lease ran out and another worker took it over). Without a
  crash, and with a lease over twice the sink's timeout (60 s against 10 s by default), no delivery
  is sent twice; after a crash the lease runs out and another worker sends it again, with the same
  ``webhook-id``.
* A sink that answers 410 Gone is disabled (``events.sink_states``): the worker stops its batch
  there and claims nothing more for it until an operator enables it again.
* Failures are recorded at once; successes ``RECORD_EVERY`` at a time in one transaction (a crash
  before that sends them again after the lease: at least once, as before).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from datetime import datetime
from typing import Iterable

from sqlalchemy.orm import Session, sessionmaker

from hokusai_mlflow_plugin.db.models import utcnow
from hokusai_mlflow_plugin.events import heartbeat
from hokusai_mlflow_plugin.events.deliveries import FANOUT_BATCH, DeliveryStore, RetryPolicy
from hokusai_mlflow_plugin.events.sink_states import enable_command
from hokusai_mlflow_plugin.events.sinks import Result, Sink
from hokusai_mlflow_plugin.monitoring import RELAY_ATTEMPTS, RELAY_SECONDS

_logger = logging.getLogger(__name__)

# Successful deliveries recorded per transaction (failures are recorded one by one, at once).
RECORD_EVERY = 25


class Relay:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        sinks: list[Sink],
        policy: RetryPolicy | None = None,
        batch_size: int = 100,
        lease: float = 60.0,
        poll_interval: float = 1.0,
    ):
        self.sinks = {sink.name: sink for sink in sinks}
        self.deliveries = DeliveryStore(sessions, policy, lease, batch_size)
        self.lease = lease
        self.poll_interval = poll_interval
        self._wake = {name: threading.Event() for name in self.sinks}
        # What kick() asked for since a sink's thread last looked: event ids, and whether a full pass.
        self._kicked: dict[str, tuple[set[str], bool]] = {name: (set(), False) for name in self.sinks}
        self._kick_lock = threading.Lock()
        # Set while a sink's thread waits with nothing to do: its last pass found nothing due, and
        # no kick came since (kick() clears it before it wakes the thread).
        self._idle = {name: threading.Event() for name in self.sinks}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        _check_lease(lease, sinks)
        self._pid: int | None = None  # the process whose threads run (see ensure_started)
        self._start_lock = threading.Lock()

    @property
    def worker_id(self) -> str:
        return self.deliveries.worker_id

    def fan_out(self, event_ids: list[str] | None = None, sinks: list[str] | None = None) -> int:
        """Delivery rows for every event that has none yet (or for ``event_ids``), for every sink."""
        return self.deliveries.fan_out(sinks or list(self.sinks), event_ids)

    def deliver_batch(self, sink_name: str, event_ids: list[str] | None = None, fan_out: list[str] | None = None) -> int:
        """Claim a batch of ``sink_name``'s due deliveries (of ``event_ids`` only, if given) and
        send them; returns how many were claimed. ``fan_out``: events just committed, whose
        delivery rows the claim makes first."""
        sink = self.sinks[sink_name]
        claimed_at = time.monotonic()  # read before the claim: the lease ends no earlier than this + lease
        batch = self.deliveries.claim(sink_name, event_ids=event_ids, fan_out=fan_out)
        lease_ends = claimed_at + self.lease
        # Renew (and record what is done) once half the lease is gone, and at the latest while one
        # more send still fits: successes wait unrecorded until then, so a send that overran the
        # lease would let another worker claim and send them again.
        renew_below = max(self.lease / 2, sink.timeout + 1.0)
        done: list[tuple[int, Result, float, datetime]] = []
        lost: set[int] = set()
        try:
            for index, (delivery_id, event_id, event_type, body) in enumerate(batch):
                if lease_ends - time.monotonic() < renew_below:
                    # the lease could run out during this send: renew what is left, all at once
                    self.deliveries.record_delivered(done)
                    done = []
                    while True:
                        renewed_at = time.monotonic()
                        rest = [d[0] for d in batch[index:] if d[0] not in lost]
                        lost |= set(rest) - self.deliveries.renew(rest)
                        lease_ends = renewed_at + self.lease
                        # A renew that came back late (the database slow, or cut off and back) earned a
                        # lease counted from before it was sent, perhaps over already: renew again
                        # until half a lease is left, or nothing is ours.
                        if delivery_id in lost or lease_ends - time.monotonic() >= self.lease / 2:
                            break
                if delivery_id in lost:
                    continue
                attempted_at = utcnow()
                result, latency_ms = _send(sink, event_id, event_type, body)
                if result.ok:
                    done.append((delivery_id, result, latency_ms, attempted_at))
                    if len(done) >= RECORD_EVERY:
                        self.deliveries.record_delivered(done)
                        done = []
                    continue
                status = self.deliveries.record(delivery_id, result, latency_ms, attempted_at)
                _logger.warning("event %s to %s: %s (%s)", event_id, sink_name, status, result.error)
                if result.gone:  # the sink is disabled now: the rest of the batch waits, unsent
                    self.deliveries.release([d[0] for d in batch[index + 1:] if d[0] not in lost])
                    _logger.warning("sink %s answered 410 Gone and is disabled; its deliveries wait for: %s",
                                    sink_name, enable_command(sink_name))
                    break
        finally:
            self.deliveries.record_delivered(done)
        return len(batch)

    def deliver_event(self, event_id: str) -> None:
        """Deliver one event to every sink now (``hokusai events redeliver``)."""
        self.fan_out([event_id])
        for name in self.sinks:
            self.deliver_batch(name, [event_id])

    def run_once(self) -> int:
        """Fan out and drain every sink of what is due now (one pass); returns deliveries tried."""
        while self.fan_out():
            pass
        total = 0
        for name in self.sinks:
            while (n := self.deliver_batch(name)) > 0:
                total += n
        return total

    # -- the worker --------------------------------------------------------------------------------

    def kick(self, event_ids: Iterable[str] | None = None) -> None:
        """Wake every sink's thread: to deliver ``event_ids`` (just committed), or, without them,
        for a full pass."""
        ids = set(event_ids or ())
        with self._kick_lock:
            for name, (pending, sweep) in self._kicked.items():
                self._kicked[name] = (pending | ids, sweep or not ids)
                self._idle[name].clear()
        for event in self._wake.values():
            event.set()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every sink's thread is idle: its last pass found nothing due and no kick has
        come since. Until an event is added, a retry falls due or a kick comes, nothing more is
        sent. False if that took longer than ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        return all(idle.wait(max(0.0, deadline - time.monotonic())) for idle in self._idle.values())

    def _take_kicked(self, name: str) -> tuple[list[str], bool]:
        with self._kick_lock:
            pending, sweep = self._kicked[name]
            self._kicked[name] = (set(), False)
        return list(pending), sweep

    def ensure_started(self) -> None:
        """Start the threads in this process if they do not run here yet (cheap when they do)."""
        if self._pid != os.getpid():
            with self._start_lock:
                if self._pid != os.getpid():
                    # A forked process (a gunicorn worker) is another worker: its own lease owner.
                    self.deliveries.worker_id = uuid.uuid4().hex
                    self._kicked = {name: (set(), False) for name in self.sinks}
                    self._idle = {name: threading.Event() for name in self.sinks}
                    self._threads = []
                    self.start()

    def start(self) -> "Relay":
        self._pid = os.getpid()
        for name in self.sinks:
            thread = threading.Thread(target=self._loop, args=(name,), name=f"hokusai-relay-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self.kick()
        for thread in self._threads:
            thread.join(timeout)
        for sink in self.sinks.values():
            sink.close()

    def _loop(self, name: str) -> None:
        wake = self._wake[name]
        next_pass = 0.0  # monotonic time of the next full fan-out
        next_beat = 0.0
        while not self._stop.is_set():
            wake.clear()
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + heartbeat.EVERY.total_seconds()
                try:
                    heartbeat.beat(self.deliveries.sessions, self.worker_id)
                except Exception:
                    _logger.warning("relay: could not record its heartbeat", exc_info=True)
            event_ids, sweep = self._take_kicked(name)
            try:
                kicked = None
                if sweep or len(event_ids) > FANOUT_BATCH or time.monotonic() >= next_pass:
                    # every event without a row yet: older ones, other relays', missed kicks
                    made = self.fan_out(sinks=[name])
                    next_pass = 0.0 if made >= FANOUT_BATCH else time.monotonic() + self.poll_interval
                elif event_ids:
                    kicked = event_ids  # the fast path: just the events named, their rows made by the claim
                busy = self.deliver_batch(name, fan_out=kicked)  # what is due, oldest first
            except Exception:
                _logger.warning("relay for %s: a pass failed; trying again", name, exc_info=True)
                busy, next_pass = None, time.monotonic() + self.poll_interval
            if not busy:
                with self._kick_lock:
                    if busy == 0 and not wake.is_set():  # a pass that failed is not idleness
                        self._idle[name].set()
                wake.wait(max(0.0, next_pass - time.monotonic()))
                self._idle[name].clear()


def _send(sink: Sink, event_id: str, event_type: str, body: str) -> tuple[Result, float]:
    """One send, timed and counted: its result and its latency in milliseconds."""
    started = time.perf_counter()
    try:
        result = sink.send(event_id, event_type, body)
    except Exception as e:  # a sink bug must not kill the relay
        result = Result(False, error=f"{type(e).__name__}: {e}")
    latency_ms = (time.perf_counter() - started) * 1000
    RELAY_SECONDS.labels(sink.name).observe(latency_ms / 1000)
    RELAY_ATTEMPTS.labels(sink.name, "delivered" if result.ok else "gone" if result.gone else "failed").inc()
    return result, latency_ms


def _check_lease(lease: float, sinks: list[Sink]) -> None:
    slowest = max((sink.timeout for sink in sinks), default=0.0)
    if lease < 2 * (slowest + 1.0):
        _logger.warning(
            "The relay's lease (%gs) is under twice the slowest sink's timeout plus a second (%gs): "
            "each delivery is then renewed before its send, and a send that outlasts the lease can "
            "be sent again by another worker. Set HOKUSAI_RELAY_LEASE above %gs.",
            lease, slowest + 1.0, 2 * (slowest + 1.0),
        )


def from_settings(settings, sessions: sessionmaker[Session], **kwargs) -> Relay:
    from hokusai_mlflow_plugin.events import sinks

    return Relay(sessions, sinks.from_settings(settings), RetryPolicy.from_settings(settings), lease=settings.relay_lease, **kwargs)
