"""The MLflow gateway on the live stack (real MLflow server, PostgreSQL, the gateway's own gunicorn
process): plain MLflow clients with only MLFLOW_TRACKING_URI (the gateway) and
MLFLOW_TRACKING_TOKEN (a Hokusai key)."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from hokusai_mlflow_plugin.auth.revocation import revoke_everywhere
from hokusai_mlflow_plugin.registration import tokens
from tests.api_helpers import assert_problem
from tests.harness import REDIS_HOST, REDIS_PORT, gunicorn_workers, require_service
from tests.live_stack import GatewayThread, gateway_in_front_of, gateway_process
from tests.mlflow_helpers import log_model
from webhook_app.gateway.scopes import scope_of


@pytest.fixture
def gateway(pg_stack, monkeypatch):
    """Plain MLflow in this process pointed at the gateway, with a register key."""
    url = pg_stack.gateway_url + "/mlflow"
    key = pg_stack.api_key("register", name="alice")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    mlflow.set_tracking_uri(url)
    yield url
    mlflow.end_run()


def test_a_training_client_logs_and_registers_through_the_gateway(pg_stack, gateway, monkeypatch, token_id, unique_name):
    pg_stack.create_token(token_id, "auroc", 0.82)
    with pg_stack.sessions.begin() as s:  # the run is made by alice's key: it counts for her tokens only
        tokens.set_owner(s, token_id, "alice")
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
    with mlflow.start_run() as run:
        mlflow.log_metric("auroc", 0.9)
        info = log_model(registered_model_name=unique_name)
    version = str(info.registered_model_version)
    # decided as through MLflow directly: the internal MLflow's webhook reaches the receiver
    assert pg_stack.wait_decided(unique_name, version).outcome == "registered"
    assert pg_stack.token(token_id)["mlflow_run_id"] == run.info.run_id
    direct = pg_stack.client.get_run(run.info.run_id)
    assert direct.data.tags["mlflow.user"] == "alice" and direct.info.user_id == "alice"  # who trained this
    assert pg_stack.wait_tag(unique_name, version, "hokusai_status") == "registered"  # tagged after the answer
    assert MlflowClient().search_model_versions(f"name = '{unique_name}'")[0].tags["hokusai_status"] == "registered"
    loaded = mlflow.sklearn.load_model(f"models:/{unique_name}/{version}")  # artifacts through the gateway
    assert loaded.predict([[0.0, 0.0, 0.0]]).shape == (1,)
    again = mlflow.register_model(info.model_uri, unique_name)  # register_model too: a second version
    assert pg_stack.client.get_model_version(unique_name, again.version).source == info.model_uri
    second = pg_stack.wait_decided(unique_name, again.version)
    assert second.outcome == "rejected"  # the token takes one model: version 1's
    assert f"Token '{token_id}' is already registered to model '{unique_name}' version {version}" in second.reason


def test_without_a_key_nothing_is_created(pg_stack, gateway, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    name = f"no-key-{uuid.uuid4().hex[:8]}"
    with pytest.raises(MlflowException, match="401|API key is required"):
        MlflowClient().create_experiment(name)
    assert pg_stack.client.get_experiment_by_name(name) is None
    answer = requests.post(gateway + "/api/2.0/mlflow/experiments/create", json={"name": name}, timeout=30)
    assert_problem(answer, 401, "An API key is required")
    assert pg_stack.client.get_experiment_by_name(name) is None


def test_a_read_key_searches_but_cannot_write_and_a_revoked_key_is_refused(pg_stack, gateway):
    read_key = pg_stack.api_key("read", name="reader")
    auth = {"Authorization": f"Bearer {read_key}"}
    # made through the gateway by the same user's register key: the user's own (one made on MLflow
    # directly has no owner, and only admin keys reach it)
    maker = {"Authorization": f"Bearer {pg_stack.api_key('register', name='reader')}"}
    experiment = requests.post(gateway + "/api/2.0/mlflow/experiments/create", json={"name": f"gw-{uuid.uuid4().hex[:8]}"},
                               headers=maker, timeout=30).json()["experiment_id"]
    search = requests.post(gateway + "/api/2.0/mlflow/runs/search", json={"experiment_ids": [experiment]}, headers=auth, timeout=30)
    assert search.status_code == 200
    assert requests.get(gateway + "/api/2.0/mlflow/experiments/get", params={"experiment_id": experiment}, headers=auth, timeout=30).ok
    created = requests.post(gateway + "/api/2.0/mlflow/runs/create", json={"experiment_id": experiment}, headers=auth, timeout=30)
    assert_problem(created, 403, "lacks the 'register' scope")
    assert pg_stack.client.search_runs([experiment]) == []
    assert revoke_everywhere(pg_stack.sessions, read_key[3:11]).unconfirmed == 0  # as the CLI and the console revoke
    assert_problem(requests.post(gateway + "/api/2.0/mlflow/runs/search", json={"experiment_ids": [experiment]}, headers=auth, timeout=30), 401, "revoked")


def test_webhooks_and_deleting_models_need_admin(pg_stack, gateway):
    auth = {"Authorization": f"Bearer {pg_stack.api_key('register')}"}
    assert_problem(requests.get(gateway + "/api/2.0/mlflow/webhooks", headers=auth, timeout=30), 403, "'admin'")
    assert_problem(requests.delete(gateway + "/api/2.0/mlflow/registered-models/delete", json={"name": "x"}, headers=auth, timeout=30), 403, "'admin'")
    admin = {"Authorization": f"Bearer {pg_stack.api_key('admin')}"}
    assert requests.get(gateway + "/api/2.0/mlflow/webhooks", headers=admin, timeout=30).status_code == 200


def test_scope_of_mlflow_requests():
    assert scope_of("GET", "health") is None
    assert scope_of("GET", "api/2.0/mlflow/experiments/get") == "read"
    assert scope_of("POST", "api/2.0/mlflow/runs/search") == "read"
    assert scope_of("POST", "ajax-api/2.0/mlflow/logged-models/search") == "read"
    assert scope_of("POST", "api/2.0/mlflow/runs/create") == "register"
    assert scope_of("PUT", "api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/model.pkl") == "register"
    assert scope_of("POST", "api/3.0/mlflow/traces/search") == "read"
    # POSTs whose paths end like a search but name what the caller chose: writes
    assert scope_of("POST", "api/2.0/mlflow-artifacts/mpu/complete/1/abc/artifacts/search") == "register"
    # the AI gateway's and MCP servers' routes have no owner of ours: operators only
    # (scopes._API_FAMILIES, _ROOT); GraphQL only reads, each field judged as its REST route
    assert scope_of("POST", "api/3.0/mlflow/mcp-servers/x/search-y/tags") == "admin"
    assert scope_of("POST", "gateway/proxy/ep/v1/chat/completions/search") == "admin"
    assert scope_of("POST", "graphql") == "read" and scope_of("GET", "graphql") == "read"
    assert scope_of("GET", "api/2.0/mlflow/webhooks") == "admin"
    assert scope_of("DELETE", "api/2.0/mlflow/registered-models/delete") == "admin"


# -- what MLflow receives --------------------------------------------------------------------------


class Recorder(BaseHTTPRequestHandler):
    """Stands where MLflow does for the gateway: records each request's headers, forwards it."""

    seen: list[dict] = []
    target = ""

    def _forward(self):
        Recorder.seen.append({k.lower(): v for k, v in self.headers.items()})
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        answer = requests.request(self.command, self.target + self.path, data=body,
                                  headers={k: v for k, v in self.headers.items() if k.lower() != "host"}, timeout=30)
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = _forward

    def log_message(self, *args):
        pass


def test_the_key_and_cookies_never_reach_mlflow(pg_stack):
    Recorder.seen, Recorder.target = [], pg_stack.mlflow.url
    key = pg_stack.api_key("admin")  # sees every experiment: the search goes on to MLflow
    with gateway_in_front_of(Recorder, pg_stack.db_url) as replica:
        answer = requests.post(replica.url + "/mlflow/api/2.0/mlflow/experiments/search", json={"max_results": 1},
                               headers={"Authorization": f"Bearer {key}", "Cookie": "session=abc", "Connection": "keep-alive, X-Hop",
                                        "X-Hop": "1", "X-Request-Id": "r-1"}, timeout=30)
    assert answer.status_code == 200 and "experiments" in answer.json()
    [headers] = Recorder.seen
    assert "authorization" not in headers and "cookie" not in headers and "x-hop" not in headers
    assert key not in str(headers)
    assert headers["x-request-id"] == "r-1" and headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http" and headers["x-forwarded-host"].startswith("127.0.0.1:")


def test_a_bad_authorization_header_is_a_401_problem_and_nothing_is_forwarded(pg_stack, gateway):
    name = f"bad-auth-{uuid.uuid4().hex[:8]}"
    for header, why in (("Basic dXNlcjpwYXNz", "must be 'Bearer hk_...'"), ("Bearer hk_nope", "malformed"),
                        (f"Bearer hk_0123abcd_{'x' * 43}", "not known")):
        answer = requests.post(gateway + "/api/2.0/mlflow/experiments/create", json={"name": name},
                               headers={"Authorization": header}, timeout=30)
        assert_problem(answer, 401, why)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert pg_stack.client.get_experiment_by_name(name) is None


class Redirecting(BaseHTTPRequestHandler):
    """An MLflow stand-in that redirects to itself and answers HEAD with a length and no body."""

    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/api/2.0/mlflow/experiments/list?x=1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", "12345")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_redirects_to_mlflow_point_at_the_gateway_and_head_keeps_the_length(pg_stack):
    auth = {"Authorization": f"Bearer {pg_stack.api_key('read')}"}
    with gateway_in_front_of(Redirecting, pg_stack.db_url) as replica:
        moved = requests.get(replica.url + "/mlflow/api/2.0/mlflow/experiments/get", headers=auth, allow_redirects=False, timeout=30)
        head = requests.head(replica.url + "/mlflow/get-artifact", headers=auth, timeout=30)
    assert moved.status_code == 302
    assert moved.headers["Location"] == replica.url + "/mlflow/api/2.0/mlflow/experiments/list?x=1"
    assert head.status_code == 200 and head.headers["Content-Length"] == "12345" and head.content == b""


def test_mlflow_down_is_a_502_problem_and_the_limit_a_429(pg_stack):
    key = pg_stack.api_key("admin")  # a user's search of no experiment of its own never reaches MLflow
    auth = {"Authorization": f"Bearer {key}"}
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts connections; nobody ever answers
    down = GatewayThread({"internal_uri": "http://127.0.0.1:9", "database_url": pg_stack.db_url}).start()
    hung = GatewayThread({"internal_uri": f"http://127.0.0.1:{silent.getsockname()[1]}", "database_url": pg_stack.db_url,
                          "read_timeout": 1.0}).start()
    limited = GatewayThread({"internal_uri": pg_stack.mlflow.url, "database_url": pg_stack.db_url, "rate_limit": "3/minute"}).start()
    try:
        body = assert_problem(requests.get(down.url + "/mlflow/api/2.0/mlflow/experiments/search", headers=auth, timeout=30), 502, "unreachable")
        assert "Traceback" not in str(body)
        late = requests.get(hung.url + "/mlflow/api/2.0/mlflow/experiments/search", headers=auth, timeout=30)
        assert_problem(late, 504, "did not answer in time", "HOKUSAI_GATEWAY_READ_TIMEOUT")
        assert late.headers["Retry-After"] == "5"
        answers = [requests.get(limited.url + "/mlflow/api/2.0/mlflow/experiments/search", params={"max_results": 1}, headers=auth, timeout=30)
                   for _ in range(4)]
    finally:
        down.release()
        hung.release()
        limited.release()
        silent.close()
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert_problem(answers[3], 429, "Rate limit")
    assert 0 < int(answers[3].headers["Retry-After"]) <= 60


def test_a_chunked_upload_arrives_whole_and_comes_back_with_its_length(pg_stack, gateway):
    """No Content-Length from the client: the body goes on chunked, as it came; MLflow's answer
    comes back with its own length."""
    experiment = pg_stack.client.create_experiment(f"chunked-{uuid.uuid4().hex[:8]}")
    pg_stack.own("experiment", experiment, "alice")  # the gateway fixture's key acts for alice
    run = pg_stack.client.create_run(experiment).info
    data = os.urandom(3 * 1024 * 1024 + 17)
    auth = {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    url = f"{gateway}/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run.run_id}/artifacts/chunked.bin"
    put = requests.put(url, data=(data[i:i + 65536] for i in range(0, len(data), 65536)), headers=auth, timeout=60)
    assert put.status_code == 200, put.text
    back = requests.get(url, headers=auth, timeout=60)
    assert back.status_code == 200 and back.headers["Content-Length"] == str(len(data))
    assert hashlib.sha256(back.content).digest() == hashlib.sha256(data).digest()


def test_gateways_share_one_rate_limit_in_redis(pg_stack):
    """Two gateway processes' worth of limit, counted in one place: a key's 4th request of a
    3/minute limit is refused, whichever gateway it reaches."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    config = {"internal_uri": pg_stack.mlflow.url, "database_url": pg_stack.db_url, "rate_limit": "3/minute",
              "redis_url": f"redis://{REDIS_HOST}:{REDIS_PORT}/0"}
    first, second = GatewayThread(config).start(), GatewayThread(config).start()
    auth = {"Authorization": f"Bearer {pg_stack.api_key('read')}"}
    try:
        answers = [requests.get(gateway.url + "/mlflow/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                                headers=auth, timeout=30) for gateway in (first, second, first, second)]
    finally:
        first.release()
        second.release()
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert_problem(answers[3], 429, "Rate limit of 3/minute")


# -- big artifacts, in constant memory ---------------------------------------------------------------


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.slow
def test_a_200_mb_artifact_round_trips_in_constant_memory(pg_stack, tmp_path, monkeypatch):
    server, base = gateway_process(pg_stack.db_url, pg_stack.mlflow.url, tmp_path / "gateway.log")
    try:
        [worker] = gunicorn_workers(server.pid)
        url = f"{base}/mlflow"
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", pg_stack.api_key("register"))
        client = MlflowClient(tracking_uri=url)
        experiment = client.create_experiment(f"big-{uuid.uuid4().hex[:8]}")
        run = client.create_run(experiment)
        before = _peak_rss_kb(worker)
        source = tmp_path / "weights.bin"
        digest = hashlib.sha256()
        with source.open("wb") as f:
            for _ in range(200):
                chunk = os.urandom(1024 * 1024)
                digest.update(chunk)
                f.write(chunk)
        client.log_artifact(run.info.run_id, str(source))
        back = Path(client.download_artifacts(run.info.run_id, "weights.bin", str(tmp_path / "back")))
        growth_mb = (_peak_rss_kb(worker) - before) / 1024
    finally:
        server.stop()
    assert hashlib.sha256(back.read_bytes()).hexdigest() == digest.hexdigest()
    assert back.stat().st_size == 200 * 1024 * 1024
    assert growth_mb < 64, f"the gateway's peak RSS grew by {growth_mb:.0f} MB"
    print(f"gateway worker peak RSS grew by {growth_mb:.1f} MB for 200 MB up and down", file=sys.stderr)
