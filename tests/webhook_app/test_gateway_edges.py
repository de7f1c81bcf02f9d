"""The gateway at its edges, found by reading it as an attacker would: escaped paths that name
one thing to the scope rules and another to MLflow, somebody else's key id, compressed and
malformed bodies, and an MLflow that breaks off its answer. Against the real MLflow of the
PostgreSQL stack where it decides, and small stand-ins where MLflow cannot misbehave on cue."""

from __future__ import annotations

import gzip
import http.client
import json
import uuid
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from tests.api_helpers import assert_problem
from tests.live_stack import GatewayThread, gateway_in_front_of


@pytest.fixture
def gateway(pg_stack):
    url = pg_stack.gateway_url + "/mlflow"
    yield url


def test_an_escaped_path_cannot_pass_a_write_off_as_a_search(pg_stack, gateway):
    experiment = pg_stack.client.create_experiment(f"escape-{uuid.uuid4().hex[:8]}")
    run = pg_stack.client.create_run(experiment).info.run_id
    read = {"Authorization": f"Bearer {pg_stack.api_key('read')}"}
    for path in ("api/2.0/mlflow/runs/delete%3F/search", "api/2.0/mlflow/runs/delete%23/search"):
        answer = requests.post(f"{gateway}/{path}", json={"run_id": run}, headers=read, timeout=30)
        assert answer.status_code != 200, (path, answer.text)
    dotted = requests.post(f"{gateway}/api/2.0/mlflow/experiments/search-x/../../runs/delete", json={"run_id": run},
                           headers=read, timeout=30)
    assert dotted.status_code in (400, 403, 404)
    assert pg_stack.client.get_run(run).info.lifecycle_stage == "active"


def test_an_escaped_path_cannot_pass_an_admin_action_off_as_a_write(pg_stack, gateway):
    name = f"escape-{uuid.uuid4().hex[:8]}"
    pg_stack.client.create_registered_model(name)
    register = {"Authorization": f"Bearer {pg_stack.api_key('register')}"}
    answer = requests.delete(f"{gateway}/api/2.0/mlflow/registered-models/delet%2565", json={"name": name}, headers=register, timeout=30)
    assert answer.status_code != 200
    assert pg_stack.client.get_registered_model(name).name == name  # still there
    hooks = requests.get(f"{gateway}/api/2.0/mlflow/web%2568ooks", headers=register, timeout=30)
    assert hooks.status_code != 200


def _post_from(address: str, port: int, path: str, key: str) -> int:
    """A request from another loopback address (another client, as far as the gateway can tell)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(address, 0))
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_nobody_spends_another_keys_rate_limit_by_naming_its_id(pg_stack):
    victim = pg_stack.api_key("read")
    forged = f"{victim[:12]}{'A' * 43}"  # the victim's public id, a wrong secret
    limited = GatewayThread({"internal_uri": pg_stack.mlflow.url, "database_url": pg_stack.db_url, "rate_limit": "3/minute"}).start()
    search = "/mlflow/api/2.0/mlflow/experiments/search?max_results=1"
    neighbour = pg_stack.api_key("read")
    try:
        attacker = [_post_from("127.0.0.2", limited.port, search, forged) for _ in range(5)]
        victims = [_post_from("127.0.0.1", limited.port, search, victim) for _ in range(3)]
        behind_the_same_address = _post_from("127.0.0.2", limited.port, search, neighbour)
    finally:
        limited.release()
    assert attacker == [401, 401, 401, 429, 429]  # refused keys are limited by address
    assert victims == [200, 200, 200]  # the key's own limit is untouched
    assert behind_the_same_address == 200  # and a good key is never held up by its address's refusals


class StandIn(BaseHTTPRequestHandler):
    """Stands where MLflow does: records what reaches it; /broken answers less than it promised."""

    seen: list[tuple[dict, bytes]] = []

    def do_PUT(self):
        length = int(self.headers.get("Content-Length") or 0)
        StandIn.seen.append(({k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)))
        self._answer(b"{}")

    do_POST = do_PUT

    def do_GET(self):
        if self.path.endswith("/broken-small"):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
        elif self.path.endswith("/broken-big"):
            self.send_response(200)
            self.send_header("Content-Length", str(8 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(b"x" * (1024 * 1024))
        else:
            self._answer(b"{}")
        self.close_connection = True

    def _answer(self, body: bytes):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def stand_in(pg_stack):
    StandIn.seen = []
    with gateway_in_front_of(StandIn, pg_stack.db_url) as gateway:
        # An operator's key: these tests are about bodies and answers, and the stand-in keeps no
        # experiments for a user's key to own (test_gateway_teams judges those).
        yield gateway, {"Authorization": f"Bearer {pg_stack.api_key('admin', name='edge')}"}


def test_a_compressed_upload_goes_on_compressed(stand_in):
    gateway, auth = stand_in
    body = gzip.compress(b"weights " * 1000)
    answer = requests.put(gateway.url + "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/w.bin", data=body,
                          headers={**auth, "Content-Encoding": "gzip"}, timeout=30)
    assert answer.status_code == 200
    [(headers, received)] = StandIn.seen
    assert received == body and headers["content-encoding"] == "gzip" and headers["content-length"] == str(len(body))


@pytest.mark.parametrize("body", [b'{"experiment_id": "1", "tags": 5}', b"[" * 100_000, b"\xff\xfe not json"])
def test_a_malformed_run_creation_goes_to_mlflow_as_it_came(stand_in, body):
    gateway, auth = stand_in
    answer = requests.post(gateway.url + "/mlflow/api/2.0/mlflow/runs/create", data=body,
                           headers={**auth, "Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 200  # the stand-in's answer: MLflow judges the body, not the gateway
    assert StandIn.seen[-1][1] == body


def test_an_answer_that_breaks_off_is_a_502_or_a_cut_connection_never_a_short_body(stand_in):
    gateway, auth = stand_in
    small = requests.get(gateway.url + "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/broken-small", headers=auth, timeout=30)
    assert_problem(small, 502, "broke off")
    with pytest.raises(requests.exceptions.RequestException):  # the client knows it did not get it all
        requests.get(gateway.url + "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/broken-big", headers=auth, timeout=30).content
    assert requests.get(gateway.url + "/mlflow/health", timeout=30).status_code == 200  # and the gateway goes on


def test_a_key_in_a_run_creation_body_never_reaches_the_log(stand_in, caplog):
    gateway, auth = stand_in
    requests.post(gateway.url + "/mlflow/api/2.0/mlflow/runs/create", data=json.dumps({"experiment_id": "1"}),
                  headers=auth, timeout=30)
    user = json.loads(StandIn.seen[-1][1])["tags"][-1]
    assert user == {"key": "mlflow.user", "value": "edge"}
    assert auth["Authorization"][7:] not in caplog.text
