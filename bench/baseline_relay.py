"""Baseline for ``bench_events.py``: the relay's previous per-delivery bookkeeping, to compare the
shipped relay against in the same run. Not a benchmark by itself, not package code.

``PerDeliveryRelay`` is the package's ``Relay`` with its delivery loop as it was before the batched
bookkeeping: one transaction renewing the lease of each delivery right before it is sent, and one
transaction recording each attempt after it, success or failure; its webhook sinks' ``requests``
sessions read the environment (proxies, CA bundle, netrc) on every POST, as ``requests`` does by
default. Fan-out, claim, retries and the sinks are the package's own.

``python bench/baseline_relay.py`` runs it as a worker, configured by the environment like
``hokusai events relay`` (LISTEN/NOTIFY on PostgreSQL, stops on SIGTERM).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hokusai_mlflow_plugin.db.models import DELIVERED, utcnow
from hokusai_mlflow_plugin.events.relay import Relay, RetryPolicy
from hokusai_mlflow_plugin.events.sinks import Result, WebhookSink
from hokusai_mlflow_plugin.events.sinks import from_settings as sinks_from_settings


class PerDeliveryRelay(Relay):
    def deliver_batch(self, sink_name: str, event_ids: list[str] | None = None, fan_out: list[str] | None = None) -> int:
        sink = self.sinks[sink_name]
        batch = self.deliveries.claim(sink_name, event_ids=event_ids, fan_out=fan_out)
        for delivery_id, event_id, event_type, body in batch:
            if not self.deliveries.renew([delivery_id]):
                continue
            attempted_at = utcnow()
            started = time.perf_counter()
            try:
                result = sink.send(event_id, event_type, body)
            except Exception as e:
                result = Result(False, error=f"{type(e).__name__}: {e}")
            latency_ms = (time.perf_counter() - started) * 1000
            status = self.deliveries.record(delivery_id, result, latency_ms, attempted_at)
            if status != DELIVERED:
                print(f"event {event_id} to {sink_name}: {status} ({result.error})", file=sys.stderr)
        return len(batch)


def reading_the_environment_per_post(sinks):
    for sink in sinks:
        if isinstance(sink, WebhookSink):
            sink._session.trust_env = True
    return sinks


def baseline_from_settings(settings) -> PerDeliveryRelay:
    from hokusai_mlflow_plugin.db.session import session_factory

    sinks = reading_the_environment_per_post(sinks_from_settings(settings))
    return PerDeliveryRelay(session_factory(settings.database_url), sinks, RetryPolicy.from_settings(settings),
                            lease=settings.relay_lease)


def main() -> None:
    from hokusai_mlflow_plugin.cli.common import stop_on_signals
    from hokusai_mlflow_plugin.config import load_settings
    from hokusai_mlflow_plugin.events import listen as watch

    settings = load_settings()
    relay = baseline_from_settings(settings)
    stop = stop_on_signals()
    relay.start()
    listener_stop = None
    if watch.is_postgresql(settings.database_url):
        _, listener_stop = watch.start_listener(settings.database_url, lambda event_id: relay.kick([event_id]))
    print(f"Relaying to {', '.join(relay.sinks)} (baseline: per-delivery bookkeeping); Ctrl-C to stop.",
          file=sys.stderr, flush=True)
    stop.wait()
    if listener_stop:
        listener_stop.set()
    relay.stop()


if __name__ == "__main__":
    main()
