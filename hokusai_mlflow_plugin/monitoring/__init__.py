"""Prometheus metrics (``prometheus-client``): what the receiver, the relay and the sweep count,
and the gauges an operator alerts on, read from the database at scrape time.

Under gunicorn, set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory) before the workers start and
serve with ``-c python:webhook_app.gunicorn_config``: each worker then writes its counters to that
directory and ``/metrics`` adds them up (prometheus-client's multiprocess mode). ``hokusai up`` and
``hokusai webhook serve`` do both.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

WEBHOOK_DELIVERIES = Counter(
    "hokusai_webhook_deliveries_total", "MLflow webhook deliveries received, by outcome and HTTP status answered.",
    ["outcome", "code"],
)
DECISION_SECONDS = Histogram(
    "hokusai_decision_seconds", "Time to decide one model version: MLflow's reads, the gate and the write.",
    buckets=LATENCY_BUCKETS,
)
REGISTRATIONS = Counter("hokusai_registrations_total", "Model versions decided, by status.", ["status"])
RELAY_ATTEMPTS = Counter("hokusai_relay_attempts_total", "Event delivery attempts, by sink and outcome.", ["sink", "outcome"])
RELAY_SECONDS = Histogram("hokusai_relay_delivery_seconds", "Time of one delivery attempt, by sink.", ["sink"],
                          buckets=LATENCY_BUCKETS)
RECONCILE_SWEEPS = Counter("hokusai_reconcile_sweeps_total", "Reconcile sweeps, by result.", ["result"])
RECONCILE_DECIDED = Counter("hokusai_reconcile_decided_total", "Versions the reconcile sweep decided, by status.", ["status"])

# The MLflow gateway (webhook_app.gateway.metrics counts its requests and MLflow's answers,
# auth.key_check its keys). A route class is what scopes.access_of makes of the route: public,
# read, write, admin, refused, or unclassified (answered before it was classified, or unknown).
GATEWAY_REQUESTS = Counter(
    "hokusai_gateway_requests_total", "Requests the MLflow gateway answered, by route class and HTTP status.",
    ["route_class", "code"],
)
UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
GATEWAY_UPSTREAM_SECONDS = Histogram(
    "hokusai_gateway_upstream_seconds",
    "MLflow's time to answer a request the gateway forwarded, to its status and headers (a streamed body not included).",
    buckets=UPSTREAM_BUCKETS,
)
GATEWAY_UPSTREAM_RESPONSES = Counter(
    "hokusai_gateway_upstream_responses_total",
    "MLflow's answers to the gateway, by HTTP status; 'unreachable' or 'timeout' when none came.", ["code"],
)
GATEWAY_KEY_CHECKS = Counter(
    "hokusai_gateway_key_checks_total",
    "API keys the gateway checked: hit (answered from its memory), miss (read from the database, good), refused.",
    ["result"],
)
GATEWAY_KEY_REFUSALS = Counter(
    "hokusai_gateway_key_refusals_total",
    "API keys the gateway refused, by reason: missing, malformed, unknown, revoked, expired, unavailable (the database).",
    ["reason"],
)
GATEWAY_RATE_LIMIT_UNCHECKED = Counter(
    "hokusai_gateway_rate_limit_unchecked_total",
    "Requests the gateway let through without counting them against the rate limit, because the limit's storage "
    "(Redis) failed: open by design.",
)
GATEWAY_SESSION_SIGNINS = Counter(
    "hokusai_gateway_session_signins_total",
    "Sign-ins that opened a session for the MLflow UI through the gateway, by result (signed_in, refused).", ["result"],
)


def exposition(collectors=()) -> bytes:
    """The text format for one scrape: this process's counters (or every gunicorn worker's, in
    multiprocess mode), then what ``collectors`` read at scrape time."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        counters = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        counters = generate_latest(REGISTRY)
    if not collectors:
        return counters
    gauges = CollectorRegistry()
    for collector in collectors:
        gauges.register(collector)
    return counters + generate_latest(gauges)
