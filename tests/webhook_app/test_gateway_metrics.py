"""The MLflow gateway's /metrics, scraped after real traffic through a gateway in front of a real
MLflow server: every request by route class and status, MLflow's answers and their time, keys by
hit, miss and reason of refusal; added up across gunicorn workers (multiprocess mode)."""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import timedelta

import requests
import sqlalchemy as sa

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.db.models import ApiKey, utcnow
from hokusai_mlflow_plugin.stack.process import ManagedProcess, free_port
from tests.harness import gunicorn_workers
from tests.live_stack import GatewayThread
from tests.webhook_app.test_metrics import scrape, value

SEARCH = "/mlflow/api/2.0/mlflow/experiments/search?max_results=1"


def moved(before: dict, after: dict) -> dict:
    """What changed between two scrapes: (name, labels) -> increase, the unchanged left out."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0) and not k[0].endswith("_created")}


def gateway_counters(samples: dict) -> dict:
    return {k: v for k, v in samples.items() if k[0].startswith("hokusai_gateway_") and not k[0].endswith("_bucket")
            and not k[0].endswith("_sum")}


def test_each_request_key_and_mlflow_answer_is_counted(pg_stack):
    register = pg_stack.api_key("register", name="metrics-user")
    with pg_stack.sessions.begin() as s:
        expired = keys.create(s, "metrics-expired", ("read",), expires_in=timedelta(days=1)).key
        revoked = keys.create(s, "metrics-revoked", ("read",)).key
        s.execute(sa.update(ApiKey).where(ApiKey.key_id == expired[3:11]).values(expires_at=utcnow() - timedelta(seconds=1)))
        keys.revoke(s, revoked[3:11])
    # A long lease: the key remembered stays remembered on a loaded machine (the hits below are exact).
    gateway = GatewayThread({"internal_uri": pg_stack.mlflow.url, "database_url": pg_stack.db_url, "key_lease": 60,
                             "mlflow_ownership": False}).start()
    url = gateway.url
    http = requests.Session()

    def get(path: str, key: str | None = None, method: str = "GET", **kw) -> int:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return http.request(method, url + path, headers=headers, timeout=30, **kw).status_code

    try:
        # Until the gateway answers this key from memory (its watch has heard the database).
        deadline = time.monotonic() + 60
        while True:
            before = scrape(url + "/metrics")
            assert get(SEARCH, register) == 200
            if value(scrape(url + "/metrics"), "hokusai_gateway_key_checks_total", result="hit") > \
                    value(before, "hokusai_gateway_key_checks_total", result="hit"):
                break
            assert time.monotonic() < deadline, "the gateway never answered a key from memory"
        reader = pg_stack.api_key("read", name="metrics-reader")
        before = scrape(url + "/metrics")

        assert [get(SEARCH, register) for _ in range(3)] == [200] * 3  # hits, forwarded
        assert get(SEARCH, reader) == 200  # a miss: read from the database, then remembered
        assert get("/mlflow/api/2.0/mlflow/experiments/create", reader, "POST", json={"name": "no"}) == 403  # write
        assert get(SEARCH) == 401  # no key
        assert get(SEARCH, "hk_0123ABCD_" + "A" * 43) == 401  # an upper-case id is malformed: ids are lower-case
        assert get(SEARCH, "hk_0123abcd_" + "A" * 43) == 401  # unknown
        assert get(SEARCH, revoked) == 401
        assert get(SEARCH, expired) == 401
        assert get("/mlflow/api/2.0/mlflow/artifacts/presigned-upload-url", register, "POST", json={}) == 403  # admin
        assert get("/mlflow/api/3.0/mlflow/assistant/chat", register, "POST", json={}) == 403  # refused to every key
        assert get("/mlflow/api/2.0/mlflow/no-such-route", register) == 404  # unclassified
        assert get("/mlflow/health") == 200  # public: no key, forwarded
        assert get("/mlflow/api/2.0/mlflow/runs/get?run_id=0123456789abcdef0123456789abcdef", register) == 404  # MLflow's 404
        assert get(SEARCH + "&key=" + register) == 400  # a key in the URL: refused before anything reads it

        after = scrape(url + "/metrics")
    finally:
        gateway.release()
    counted = moved(gateway_counters(before), gateway_counters(after))
    assert counted == {
        ("hokusai_gateway_requests_total", (("code", "200"), ("route_class", "read"))): 4,
        ("hokusai_gateway_requests_total", (("code", "403"), ("route_class", "write"))): 1,
        ("hokusai_gateway_requests_total", (("code", "401"), ("route_class", "read"))): 5,
        ("hokusai_gateway_requests_total", (("code", "403"), ("route_class", "admin"))): 1,
        ("hokusai_gateway_requests_total", (("code", "403"), ("route_class", "refused"))): 1,
        ("hokusai_gateway_requests_total", (("code", "404"), ("route_class", "unclassified"))): 1,
        ("hokusai_gateway_requests_total", (("code", "200"), ("route_class", "public"))): 1,
        ("hokusai_gateway_requests_total", (("code", "404"), ("route_class", "read"))): 1,
        ("hokusai_gateway_requests_total", (("code", "400"), ("route_class", "unclassified"))): 1,
        ("hokusai_gateway_key_checks_total", (("result", "hit"),)): 3 + 1 + 4,
        ("hokusai_gateway_key_checks_total", (("result", "miss"),)): 1,
        ("hokusai_gateway_key_checks_total", (("result", "refused"),)): 5,
        ("hokusai_gateway_key_refusals_total", (("reason", "missing"),)): 1,
        ("hokusai_gateway_key_refusals_total", (("reason", "malformed"),)): 1,
        ("hokusai_gateway_key_refusals_total", (("reason", "unknown"),)): 1,
        ("hokusai_gateway_key_refusals_total", (("reason", "revoked"),)): 1,
        ("hokusai_gateway_key_refusals_total", (("reason", "expired"),)): 1,
        ("hokusai_gateway_upstream_responses_total", (("code", "200"),)): 5,
        ("hokusai_gateway_upstream_responses_total", (("code", "404"),)): 1,
        ("hokusai_gateway_upstream_seconds_count", ()): 6,
    }
    assert value(after, "hokusai_gateway_upstream_seconds_sum") > value(before, "hokusai_gateway_upstream_seconds_sum")
    assert value(after, "hokusai_gateway_upstream_seconds_bucket", le="+Inf") - \
        value(before, "hokusai_gateway_upstream_seconds_bucket", le="+Inf") == 6


def test_an_unreachable_mlflow_is_counted_as_such(pg_stack):
    key = pg_stack.api_key("admin")
    gateway = GatewayThread({"internal_uri": f"http://127.0.0.1:{free_port()}", "database_url": pg_stack.db_url}).start()
    try:
        before = scrape(gateway.url + "/metrics")
        answer = requests.get(gateway.url + SEARCH, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        after = scrape(gateway.url + "/metrics")
    finally:
        gateway.release()
    assert answer.status_code == 502
    counted = moved(gateway_counters(before), gateway_counters(after))
    assert counted[("hokusai_gateway_upstream_responses_total", (("code", "unreachable"),))] == 1
    assert counted[("hokusai_gateway_requests_total", (("code", "502"), ("route_class", "read")))] == 1
    assert ("hokusai_gateway_upstream_seconds_count", ()) not in counted  # no answer, no time


def test_gunicorn_workers_add_up(pg_stack, tmp_path):
    """``hokusai gateway serve --workers 2`` in front of the stack's MLflow: each worker in turn is
    stopped (SIGSTOP) so that the other answers; a scrape, whichever worker takes it, sums both."""
    port = free_port()
    env = {**os.environ, "HOKUSAI_HOME": str(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
           "HOKUSAI_LOG_LEVEL": "WARNING"}
    server = ManagedProcess("gateway", [
        sys.executable, "-m", "hokusai_mlflow_plugin", "--database-url", pg_stack.db_url, "gateway", "serve",
        "--port", str(port), "--workers", "2", "--internal-uri", pg_stack.mlflow.url,
    ], env, tmp_path / "serve.log").start()
    base = f"http://127.0.0.1:{port}"
    try:
        server.wait_http(base + "/health", timeout=60)
        workers = gunicorn_workers(server.pid, count=2)
        for paused in workers:  # the other worker answers all of them
            os.kill(paused, signal.SIGSTOP)
            try:
                with requests.Session() as http:
                    assert {http.get(base + SEARCH, timeout=10).status_code for _ in range(20)} == {401}
                    assert {http.get(base + "/mlflow/health", timeout=10).status_code for _ in range(10)} == {200}
            finally:
                os.kill(paused, signal.SIGCONT)
        scrapes = [scrape(base + "/metrics") for _ in range(6)]
    finally:
        server.stop()
    for samples in scrapes:  # whichever worker answered the scrape, the sum of both
        assert value(samples, "hokusai_gateway_requests_total", route_class="read", code="401") == 40
        assert value(samples, "hokusai_gateway_key_refusals_total", reason="missing") == 40
        assert value(samples, "hokusai_gateway_requests_total", route_class="public", code="200") == 20
        assert value(samples, "hokusai_gateway_upstream_seconds_count") == 20
    assert len(list((tmp_path / "prom").glob("counter_*.db"))) >= 2  # two workers wrote
