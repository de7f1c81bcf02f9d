"""Prometheus metrics: scraped after a real registration on the live stack, added up across
gunicorn workers (multiprocess mode), and served by a relay worker on its own port."""

from __future__ import annotations

import os
import signal
import sys
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from hokusai_mlflow_plugin.db.migrate import upgrade
from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port
from tests.events.helpers import add_events
from tests.harness import gunicorn_workers
from tests.mlflow_helpers import train_and_register


def scrape(url: str) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value."""
    text = requests.get(url, timeout=30).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_registration_moves_the_counters(pg_stack, monkeypatch, token_id, unique_name):
    url = pg_stack.receiver.url + "/metrics"
    before = scrape(url)
    pg_stack.create_token(token_id, "auroc", 0.82)
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
    _, version = train_and_register(unique_name, {"auroc": 0.9})
    pg_stack.wait_decided(unique_name, version)
    deadline = time.monotonic() + 15
    while True:
        after = scrape(url)
        moved = value(after, "hokusai_webhook_deliveries_total", outcome="registered", code="200") - \
            value(before, "hokusai_webhook_deliveries_total", outcome="registered", code="200")
        if moved >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert moved >= 1
    assert value(after, "hokusai_registrations_total", status="registered") > value(before, "hokusai_registrations_total", status="registered")
    assert value(after, "hokusai_decision_seconds_count") > value(before, "hokusai_decision_seconds_count")
    assert value(after, "hokusai_database_up") == 1
    assert ("hokusai_outbox_deliveries", (("state", "dead"),)) in after
    assert ("hokusai_outbox_oldest_pending_seconds", ()) in after


def test_gunicorn_workers_add_up(tmp_path):
    """Each worker in turn is stopped (SIGSTOP), so that the other answers the forged deliveries;
    a scrape, whichever worker takes it, sums both."""
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    upgrade(url)
    port = free_port()
    env = {**os.environ, "HOKUSAI_WEBHOOK_SECRET": "metrics-test", "HOKUSAI_HOME": str(tmp_path),
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    server = ManagedProcess("receiver", [
        sys.executable, "-m", "hokusai_mlflow_plugin", "--database-url", url, "--tracking-uri", "http://127.0.0.1:9",
        "webhook", "serve", "--port", str(port), "--workers", "2",
    ], env, tmp_path / "serve.log").start()
    def forged(_):  # no signature: 401
        return requests.post(f"http://127.0.0.1:{port}/webhooks/mlflow", data=b"{}", timeout=10).status_code

    try:
        server.wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        workers = gunicorn_workers(server.pid, count=2)
        for paused in workers:  # the other worker answers all 20
            os.kill(paused, signal.SIGSTOP)
            try:
                assert set(map(forged, range(20))) == {401}
            finally:
                os.kill(paused, signal.SIGCONT)
        counts = {value(scrape(f"http://127.0.0.1:{port}/metrics"), "hokusai_webhook_deliveries_total",
                        outcome="invalid_signature", code="401") for _ in range(6)}
    finally:
        server.stop()
    assert counts == {40.0}  # whichever worker answered the scrape, the sum of both
    assert len(list((tmp_path / "prom").glob("counter_*.db"))) >= 2  # two workers wrote


def test_the_relay_worker_serves_its_metrics(tmp_path):
    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    upgrade(url)
    add_events(url, 3)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    relay = ManagedProcess("relay", [
        sys.executable, "-m", "hokusai_mlflow_plugin", "--database-url", url, "events", "relay", "--console",
        "--metrics-port", str(port),
    ], env, tmp_path / "relay.log").start()
    try:
        relay.wait_http(f"http://127.0.0.1:{port}/metrics", timeout=60)
        deadline = time.monotonic() + 30
        while True:
            samples = scrape(f"http://127.0.0.1:{port}/metrics")
            delivered = value(samples, "hokusai_relay_attempts_total", sink="console", outcome="delivered")
            if delivered >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        relay.stop()
    assert delivered == 3
    assert value(samples, "hokusai_relay_delivery_seconds_count", sink="console") == 3
    assert value(samples, "hokusai_outbox_deliveries", state="pending") == 0
    assert value(samples, "hokusai_relay_workers_alive") == 1
