"""The gateway at its edges, found by reading it as an attacker would: escaped paths that name
one thing to the scope rules and another to MLflow, somebody else's key id, compressed and
malformed bodies, and an MLflow that breaks off its answer. Against the real MLflow of the
PostgreSQL stack where it decides, and small stand-ins where MLflow cannot misbehave on cue."""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import uuid
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from tests.api_helpers import assert_problem
from tests.harness import respond
from tests.live_stack import GatewayThread, gateway_in_front_of, raw_request


def _raw(base: str, method: str, path: str, key: str, body: dict | None = None) -> requests.Response:
    """``method path`` sent byte for byte as written (``raw_request``), with ``key`` and a JSON body."""
    data = json.dumps(body).encode() if body is not None else None
    headers = [("Authorization", f"Bearer {key}"), *([("Content-Type", "application/json")] if data else [])]
    return raw_request(base, method, path, headers, data)


DOTS = "The path has '.' or '..' segments"


def test_dot_segments_sent_as_written_are_refused_before_any_scope(pg_stack):
    """Raw ``..`` and ``.`` segments, and ``%2e%2e`` (``..`` once decoded, as MLflow decodes it),
    reach the gateway as written and are refused with 400, whatever they would resolve to: a read
    key's "search" that resolves to runs/delete deletes nothing."""
    experiment = pg_stack.client.create_experiment(f"escape-{uuid.uuid4().hex[:8]}")
    run = pg_stack.client.create_run(experiment).info.run_id
    read = pg_stack.api_key("read")
    for path in ("/mlflow/api/2.0/mlflow/experiments/search-x/../../runs/delete",
                 "/mlflow/api/2.0/mlflow/./runs/delete",
                 "/mlflow/api/2.0/mlflow/experiments/search-x/%2e%2e/%2E%2E/runs/delete",
                 "/mlflow/api/2.0/mlflow/experiments/search-x/.%2e/.%2E/runs/delete"):
        assert_problem(_raw(pg_stack.gateway_url, "POST", path, read, {"run_id": run}), 400, DOTS)
    # an artifact path (a route with a path of any depth) that climbs out to the webhooks
    register = pg_stack.api_key("register")
    climb = f"/mlflow/api/2.0/mlflow-artifacts/artifacts/{experiment}/%2e%2e/%2e%2e/%2e%2e/mlflow/webhooks"
    assert_problem(_raw(pg_stack.gateway_url, "GET", climb, register), 400, DOTS)
    assert pg_stack.client.get_run(run).info.lifecycle_stage == "active"


def test_an_escape_that_ends_a_segment_early_is_judged_as_mlflow_reads_it(pg_stack):
    """``delete%3F/search`` and ``delete%23/search`` end in /search, but MLflow reads them (decoded
    once) as no route of its own: the gateway refuses them as the unknown routes they are (404),
    never as the search they look like."""
    experiment = pg_stack.client.create_experiment(f"escape-{uuid.uuid4().hex[:8]}")
    run = pg_stack.client.create_run(experiment).info.run_id
    read = pg_stack.api_key("read")
    for escaped, decoded in (("delete%3F/search", "delete?/search"), ("delete%23/search", "delete#/search")):
        answer = _raw(pg_stack.gateway_url, "POST", f"/mlflow/api/2.0/mlflow/runs/{escaped}", read, {"run_id": run})
        assert_problem(answer, 404, f"POST /api/2.0/mlflow/runs/{decoded} is not an MLflow route that the gateway serves")
    assert pg_stack.client.get_run(run).info.lifecycle_stage == "active"


def test_a_single_encoded_admin_path_needs_admin(pg_stack):
    """``delet%65`` is ``delete`` and ``web%68ooks`` is ``webhooks`` to MLflow (shown below on MLflow
    itself): a register key does not reach the admin routes they name; 403 naming the scope."""
    name = f"escape-{uuid.uuid4().hex[:8]}"
    pg_stack.client.create_registered_model(name)
    pg_stack.own("registered_model", name)  # the key's user owns it: only the scope stands in the way
    register = pg_stack.api_key("register")
    assert _raw(pg_stack.mlflow.url, "GET", "/api/2.0/mlflow/web%68ooks", "-").json()["webhooks"]  # MLflow decodes once
    for method, path, body in (("DELETE", "/mlflow/api/2.0/mlflow/registered-models/delet%65", {"name": name}),
                               ("DELETE", "/mlflow/api/2.0/mlflow/registered-models/%64elete", {"name": name}),
                               ("GET", "/mlflow/api/2.0/mlflow/web%68ooks", None),
                               ("GET", "/mlflow/api/2.0/mlflow/webhook%73", None),
                               ("GET", "/mlflow/ajax-api/2.0/mlflow/web%68ooks", None)):
        assert_problem(_raw(pg_stack.gateway_url, method, path, register, body), 403, "lacks the 'admin' scope")
    assert pg_stack.client.get_registered_model(name).name == name  # still there
    # escaped twice, the path is delet%65 to MLflow too: no route of MLflow's, none of the gateway's
    twice = _raw(pg_stack.gateway_url, "DELETE", "/mlflow/api/2.0/mlflow/registered-models/delet%2565", register, {"name": name})
    assert_problem(twice, 404, "registered-models/delet%65 is not an MLflow route")
    assert pg_stack.client.get_registered_model(name).name == name


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
        respond(self, body)

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


def test_a_key_in_a_run_creation_body_never_reaches_the_log(stand_in, pg_stack, caplog):
    """A key pasted into a body (a tag's value, as a careless notebook would) goes on to MLflow as
    the data it is, and the gateway's log of that very request (the stand-in's answer names no
    run, which the gateway warns about) holds neither it nor the key that sent it."""
    caplog.set_level(logging.DEBUG)
    gateway, auth = stand_in
    pasted = pg_stack.api_key("read", name="pasted")
    body = json.dumps({"experiment_id": "1", "tags": [{"key": "note", "value": pasted}]})
    answer = requests.post(gateway.url + "/mlflow/api/2.0/mlflow/runs/create", data=body, headers=auth, timeout=30)
    assert answer.status_code == 200
    tags = json.loads(StandIn.seen[-1][1])["tags"]
    assert tags == [{"key": "note", "value": pasted}, {"key": "mlflow.user", "value": "edge"}]
    assert "POST /mlflow/api/2.0/mlflow/runs/create named no run id" in caplog.text  # this request was logged
    for key in (pasted, auth["Authorization"][len("Bearer "):]):
        secret = key.split("_", 2)[2]
        assert secret not in caplog.text and key not in caplog.text


def test_a_body_read_whole_past_its_limit_is_a_413_and_nothing_reaches_mlflow(pg_stack):
    """The bodies the gateway reads whole (a judged write: proxy.WHOLE; a GraphQL request:
    graphql.LIMIT) stop at their limit with a 413 that says what to do; nothing is created."""
    from webhook_app.gateway import graphql
    from webhook_app.gateway.proxy import WHOLE

    register = pg_stack.api_key("register")
    experiment = pg_stack.client.create_experiment(f"whole-{uuid.uuid4().hex[:8]}")
    name = f"too-big-{uuid.uuid4().hex[:8]}"
    # a run's creation is read whole (its user is the key's name): here too long to be read
    padding = "x" * (WHOLE + 1)
    body = json.dumps({"experiment_id": experiment, "run_name": name, "tags": [{"key": "pad", "value": padding}]}).encode()
    answer = raw_request(pg_stack.gateway_url, "POST", "/mlflow/api/2.0/mlflow/runs/create",
                         [("Authorization", f"Bearer {register}"), ("Content-Type", "application/json")], body)
    assert_problem(answer, 413, "send it in smaller batches")
    assert pg_stack.client.search_runs([experiment], filter_string=f"attributes.run_name = '{name}'") == []

    query = json.dumps({"query": "query { test { output } }", "variables": {"pad": "x" * (graphql.LIMIT + 1)}}).encode()
    answer = raw_request(pg_stack.gateway_url, "POST", "/mlflow/graphql",
                         [("Authorization", f"Bearer {register}"), ("Content-Type", "application/json")], query)
    assert_problem(answer, 413, "send a smaller query")
