"""The gateway's rate limit when its storage fails: left open by design (webhook_app/gateway/
rate_limit.py: the limit protects MLflow, it is not what keeps anyone out). A gateway in front of
the PostgreSQL stack's real MLflow counts in the machine's real Redis through a TCP proxy that the
test cuts (connections refused, as for a Redis that is down) and opens again; or in a "Redis" that
accepts connections and never answers (a partition)."""

from __future__ import annotations

import logging

import pytest
import requests

from tests.events.consumers import HangingConsumer, TcpProxy
from tests.events.helpers import wait_until
from tests.harness import REDIS_HOST, REDIS_PORT, require_service
from webhook_app.gateway import rate_limit
from tests.live_stack import GatewayThread
from tests.webhook_app.test_metrics import scrape, value

SEARCH = "/mlflow/api/2.0/mlflow/experiments/search?max_results=1"
STORAGE = "the rate limit's storage"


@pytest.fixture
def redis_proxy():
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    proxy = TcpProxy(REDIS_HOST, REDIS_PORT).open()
    yield proxy
    proxy.release()


def test_redis_down_serves_requests_unlimited_says_so_once_and_the_limit_comes_back(pg_stack, redis_proxy, caplog):
    caplog.set_level(logging.INFO, logger="webhook_app")
    # 3 an hour: the window's count cannot run out while the test runs (a minute's could)
    gateway = GatewayThread({"internal_uri": pg_stack.mlflow.url, "database_url": pg_stack.db_url, "rate_limit": "3/hour",
                             "redis_url": f"redis://127.0.0.1:{redis_proxy.port.port}/0"}).start()
    key = pg_stack.api_key("admin", name="limited")  # an operator's: every search reaches MLflow
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {key}"

    def search() -> requests.Response:
        return http.get(gateway.url + SEARCH, timeout=60)

    try:
        limited = [search().status_code for _ in range(4)]
        before = scrape(gateway.url + "/metrics")
        redis_proxy.close()  # Redis unreachable
        down = [search() for _ in range(5)]
        redis_proxy.open()  # Redis back, with the count it kept
        during = scrape(gateway.url + "/metrics")
        # asked again once RETRY_STORAGE_AFTER has run out since the last failure; until then unlimited
        answers = []
        assert wait_until(lambda: answers.append(search()) or answers[-1].status_code == 429,
                          timeout=rate_limit.RETRY_STORAGE_AFTER + 30, interval=0.25)
        back = answers[-1]
        after = scrape(gateway.url + "/metrics")
    finally:
        gateway.release()

    assert limited == [200, 200, 200, 429]  # the limit, counted in Redis
    assert [a.status_code for a in down] == [200] * 5  # served while Redis is down, the limited key's too
    assert all(a.json()["experiments"] for a in down)  # MLflow's own answer
    assert value(during, "hokusai_gateway_rate_limit_unchecked_total") - value(before, "hokusai_gateway_rate_limit_unchecked_total") == 5
    assert value(during, "hokusai_gateway_requests_total", route_class="read", code="200") - \
        value(before, "hokusai_gateway_requests_total", route_class="read", code="200") == 5
    assert value(during, "hokusai_gateway_upstream_responses_total", code="200") - \
        value(before, "hokusai_gateway_upstream_responses_total", code="200") == 5
    assert {a.status_code for a in answers[:-1]} <= {200}  # unlimited until the storage was asked again
    assert back.json()["detail"].startswith("Rate limit of 3/hour for this key: retry after")  # from the count Redis kept
    assert value(after, "hokusai_gateway_rate_limit_unchecked_total") - value(during, "hokusai_gateway_rate_limit_unchecked_total") \
        == len(answers) - 1
    # said once when Redis failed and once when it answered again, not once a request; no key in it
    said = [(r.levelname, r.getMessage()) for r in caplog.records if STORAGE in r.getMessage()]
    assert len(said) == 2, said
    assert said[0][0] == "WARNING" and "requests go through unlimited until it answers again" in said[0][1]
    assert said[1] == ("WARNING", "gateway: the rate limit's storage answers again: the limit of 3/hour applies")
    assert key.split("_", 2)[2] not in caplog.text


def test_a_silent_redis_is_asked_once_and_requests_go_on_unlimited(pg_stack, monkeypatch, caplog):
    """A Redis that accepts and never answers (a partition): the first request gives up on it after
    STORAGE_TIMEOUT, and the next ones go through without asking it again, until
    RETRY_STORAGE_AFTER has run out (here a minute, longer than the test): one connection to it, not
    one a request, and every request served."""
    monkeypatch.setattr(rate_limit, "RETRY_STORAGE_AFTER", 60.0)
    caplog.set_level(logging.INFO, logger="webhook_app")
    silent = HangingConsumer().open()
    gateway = GatewayThread({"internal_uri": pg_stack.mlflow.url, "database_url": pg_stack.db_url, "rate_limit": "3/hour",
                             "redis_url": f"redis://127.0.0.1:{silent.port.port}/0"}).start()
    auth = {"Authorization": f"Bearer {pg_stack.api_key('admin', name='partitioned')}"}
    try:
        before = scrape(gateway.url + "/metrics")
        answers = [requests.get(gateway.url + SEARCH, headers=auth, timeout=60) for _ in range(5)]
        after = scrape(gateway.url + "/metrics")
    finally:
        gateway.release()
        silent.release()
    assert [a.status_code for a in answers] == [200] * 5  # over the limit of 3, and served
    assert silent.accepted == 1
    assert value(after, "hokusai_gateway_rate_limit_unchecked_total") - value(before, "hokusai_gateway_rate_limit_unchecked_total") == 5
    said = [r.getMessage() for r in caplog.records if STORAGE in r.getMessage()]
    assert said == ["gateway: the rate limit's storage failed (TimeoutError): requests go through unlimited until it answers again"]
