"""The outbox's Prometheus gauges, read from the database at scrape time."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily

from hokusai_mlflow_plugin.events.heartbeat import heartbeats
from hokusai_mlflow_plugin.events.outbox import outbox_health


class OutboxCollector:
    """The outbox's state at scrape time, from the database: deliveries by state, the oldest
    undelivered one's age, and the relay workers alive."""

    def __init__(self, sessions):
        self.sessions = sessions

    def collect(self):
        try:
            with self.sessions() as session:
                health = outbox_health(session)
                beats = heartbeats(session)
        except Exception:  # a scrape while the database is down: the counters still answer
            up = GaugeMetricFamily("hokusai_database_up", "Whether the token database answered this scrape.")
            up.add_metric([], 0)
            yield up
            return
        deliveries = GaugeMetricFamily("hokusai_outbox_deliveries", "Event deliveries not yet delivered, by state.", labels=["state"])
        for state in ("pending", "failed", "dead"):
            deliveries.add_metric([state], health[state])
        yield deliveries
        oldest = GaugeMetricFamily("hokusai_outbox_oldest_pending_seconds", "Age of the oldest undelivered delivery (0: none).")
        oldest.add_metric([], health["oldest_pending_seconds"] or 0.0)
        yield oldest
        alive = GaugeMetricFamily("hokusai_relay_workers_alive", "Relay workers with a heartbeat in the last 60 s.")
        alive.add_metric([], sum(1 for b in beats if b["alive"]))
        yield alive
        up = GaugeMetricFamily("hokusai_database_up", "Whether the token database answered this scrape.")
        up.add_metric([], 1)
        yield up
