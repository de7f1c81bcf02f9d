"""What the gateway makes of the headers and URLs a client sends, tried as an attacker would
(issue 24): a key in the query string (refused, never forwarded, never logged), forged
``X-Forwarded-*`` (believed from the configured proxies only), and the ``Authorization`` header's
variations; a read key's artifact writes through the live gateway. Against the real MLflow of the
PostgreSQL stack where it decides, and stand-ins where MLflow cannot be watched or misbehave on cue."""

from __future__ import annotations

import logging
import threading
import uuid
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from tests.api_helpers import assert_problem
from tests.live_stack import GatewayThread, gateway_in_front_of
from tests.live_stack import raw_request as raw
from webhook_app.gateway.forwarded import TRUSTED_PROXIES
from webhook_app.gateway.proxy import GATEWAY

IN_URL = "carries an API key in its URL"


class Seen(BaseHTTPRequestHandler):
    """Stands where MLflow does: records every request line and header it gets, answers 200 with
    an empty JSON object (or, to a query with ``redirect=1``, a redirect to itself)."""

    requests: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def _answer(self):
        with Seen.lock:
            Seen.requests.append((f"{self.command} {self.path}", {k.lower(): v for k, v in self.headers.items()}))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if "redirect=1" in self.path:
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/api/2.0/mlflow/experiments/get?x=1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass


# -- a key in the URL ------------------------------------------------------------------------------


def test_a_key_in_the_query_string_is_refused_never_forwarded_never_logged(pg_stack, caplog):
    key = pg_stack.api_key("admin", name="query-keys")
    secret = key.split("_", 2)[2]
    escaped = key.replace("_", "%5F")
    auth = {"Authorization": f"Bearer {key}"}
    sent = [
        ("GET", f"/mlflow/api/2.0/mlflow/experiments/search?max_results=1&key={key}", {}),
        ("GET", f"/mlflow/api/2.0/mlflow/experiments/search?max_results=1&key={key}", auth),  # a header as well
        ("GET", "/mlflow/api/2.0/mlflow/experiments/search?access_token=anything-at-all", {}),  # RFC 6750's name
        ("GET", f"/mlflow/api/2.0/mlflow/runs/search?filter=tags.x%3D%27{key}%27", auth),  # any parameter
        ("GET", f"/mlflow/api/2.0/mlflow/experiments/search?token={escaped}", {}),  # escaped
        ("GET", f"/mlflow/api/2.0/mlflow/experiments/search?token={escaped.replace('%', '%25')}", {}),  # escaped twice
        ("POST", f"/mlflow/api/2.0/mlflow/experiments/create?api_key={key}", auth),
        ("DELETE", f"/mlflow/api/2.0/mlflow/registered-models/delete-tag?name=m&key={key}", auth),
        ("GET", f"/mlflow/api/2.0/mlflow/experiments/search?key=hk_0123ABCD_{secret}", {}),  # malformed, still a secret
    ]
    Seen.requests = []
    caplog.set_level(logging.DEBUG)
    with gateway_in_front_of(Seen, pg_stack.db_url) as gateway:
        # this gateway's access log (off in tests by default) is what gunicorn writes in production
        logged = GatewayThread({"internal_uri": gateway.app[GATEWAY].internal, "database_url": pg_stack.db_url},
                               access_log=logging.getLogger("aiohttp.access")).start()
        try:
            for base in (gateway.url, logged.url):
                for method, path, headers in sent:
                    answer = requests.request(method, base + path, headers=headers, json={} if method == "POST" else None,
                                              timeout=30)
                    body = assert_problem(answer, 400, IN_URL, "Authorization: Bearer")
                    assert secret not in answer.text and secret not in str(body)
            # the same gateway forwards good requests, a parameter named key (a tag's, to MLflow) included
            assert requests.get(logged.url + "/mlflow/api/2.0/mlflow/experiments/search?max_results=1", headers=auth,
                                timeout=30).status_code == 200
            assert requests.delete(logged.url + "/mlflow/api/2.0/mlflow/registered-models/delete-tag?name=m&key=hk_stage",
                                   headers=auth, timeout=30).status_code == 200
        finally:
            logged.release()
    assert [line for line, _ in Seen.requests] == ["GET /api/2.0/mlflow/experiments/search?max_results=1",
                                                   "DELETE /api/2.0/mlflow/registered-models/delete-tag?name=m&key=hk_stage"]
    access = [r for r in caplog.records if r.name == "aiohttp.access"]
    assert len(access) == len(sent) + 2  # the access log wrote each line, without the key
    assert "hk_" + key[3:11] + "_***" in access[0].getMessage()
    for record in caplog.records:
        if record.name.startswith("urllib3"):
            continue  # the test's own client, which logs the URLs it sends
        assert secret not in record.getMessage() and secret not in str(vars(record)), record.getMessage()


def test_a_key_in_the_query_string_never_reaches_the_real_mlflow_or_its_log(pg_stack):
    """The stack's own gateway process (gunicorn, its access log on) in front of the real MLflow:
    a request with a harmless marker in its query shows in both logs; the one with a key in its
    query is refused, and neither log holds the secret."""
    key = pg_stack.api_key("admin", name="query-keys-live")
    secret = key.split("_", 2)[2]
    auth = {"Authorization": f"Bearer {key}"}
    marker = uuid.uuid4().hex
    base = pg_stack.gateway_url
    name = f"query-key-{marker[:8]}"
    assert requests.get(f"{base}/mlflow/api/2.0/mlflow/experiments/search?max_results=1&marker={marker}", headers=auth,
                        timeout=30).status_code == 200
    refused = requests.post(f"{base}/mlflow/api/2.0/mlflow/experiments/create?key={key}", json={"name": name}, headers=auth,
                            timeout=30)
    assert_problem(refused, 400, IN_URL)
    assert pg_stack.client.get_experiment_by_name(name) is None  # not forwarded
    gateway_log = pg_stack.mlflow.workdir / "gateway.log"
    mlflow_logs = list(pg_stack.mlflow.workdir.glob("mlflow-server-*.log"))
    wait_for_text([gateway_log], marker)  # the access log has the line of the good request ...
    wait_for_text([gateway_log], "experiments/create?key=hk_" + key[3:11] + "_***")  # ... and of the refused one, masked
    wait_for_text(mlflow_logs, marker)  # MLflow logs what reaches it
    for path in (gateway_log, *mlflow_logs):
        assert secret not in path.read_text(errors="replace"), path


def wait_for_text(paths, text: str, timeout: float = 30.0) -> None:
    """Until ``text`` is in one of the files at ``paths`` (logs written by other processes)."""
    import time

    deadline = time.monotonic() + timeout
    while not any(text in path.read_text(errors="replace") for path in paths):
        assert time.monotonic() < deadline, f"{text!r} never reached {paths}"
        time.sleep(0.05)


# -- X-Forwarded-* ---------------------------------------------------------------------------------

SPOOFED = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9",
           "Forwarded": "for=203.0.113.9;host=evil.example;proto=https", "X-Real-IP": "203.0.113.9"}


def test_forwarded_headers_of_an_untrusted_peer_steer_nothing(pg_stack):
    """No proxy configured (the default), or one that is not the peer: a redirect from MLflow points
    at the host the client really asked, and MLflow hears the real peer, not the forged headers."""
    auth = {"Authorization": f"Bearer {pg_stack.api_key('read')}"}
    for trusted in ((), "10.0.0.0/8, 192.0.2.7"):
        Seen.requests = []
        with gateway_in_front_of(Seen, pg_stack.db_url, trusted_proxies=trusted, mlflow_ownership=False) as gateway:
            moved = requests.get(gateway.url + "/mlflow/api/2.0/mlflow/experiments/get?experiment_id=1&redirect=1", allow_redirects=False,
                                 headers={**auth, **SPOOFED}, timeout=30)
        assert moved.status_code == 302
        assert moved.headers["Location"] == gateway.url + "/mlflow/api/2.0/mlflow/experiments/get?x=1"
        [(_, headers)] = Seen.requests
        assert headers["x-forwarded-host"] == f"127.0.0.1:{gateway.port}" and headers["x-forwarded-proto"] == "http"
        assert headers["x-forwarded-for"] == "127.0.0.1"
        assert "forwarded" not in headers and "x-real-ip" not in headers


def test_forwarded_headers_of_a_trusted_proxy_are_honoured(pg_stack):
    auth = {"Authorization": f"Bearer {pg_stack.api_key('read')}"}
    proxy = {"X-Forwarded-Host": "mlflow.example.com", "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    Seen.requests = []
    with gateway_in_front_of(Seen, pg_stack.db_url, trusted_proxies="127.0.0.0/8", mlflow_ownership=False) as gateway:
        path = gateway.url + "/mlflow/api/2.0/mlflow/experiments/get?experiment_id=1&redirect=1"
        moved = requests.get(path, allow_redirects=False, headers={**auth, **proxy}, timeout=30)
        # chained proxies: the first one's word (it met the client); a host that is not one is ignored
        chained = requests.get(path, allow_redirects=False, timeout=30, headers={
            **auth, "X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "mlflow.example.com, inner.example"})
        not_a_host = requests.get(path, allow_redirects=False, timeout=30, headers={
            **auth, "X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "evil.example/@x"})
    assert moved.status_code == 302 and moved.headers["Location"] == "https://mlflow.example.com/mlflow/api/2.0/mlflow/experiments/get?x=1"
    assert chained.headers["Location"] == "https://mlflow.example.com/mlflow/api/2.0/mlflow/experiments/get?x=1"
    assert not_a_host.headers["Location"] == gateway.url + "/mlflow/api/2.0/mlflow/experiments/get?x=1"
    headers = Seen.requests[0][1]
    assert headers["x-forwarded-host"] == "mlflow.example.com" and headers["x-forwarded-proto"] == "https"
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"  # the proxy's word, then the proxy


def test_trusted_proxies_that_are_not_addresses_stop_the_gateway_with_the_reason(monkeypatch, tmp_path):
    from hokusai_mlflow_plugin.core.errors import ConfigError
    from webhook_app.gateway import create_app

    monkeypatch.setenv("HOKUSAI_HOME", str(tmp_path))
    monkeypatch.setenv("HOKUSAI_MLFLOW_INTERNAL_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("HOKUSAI_TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal")
    with pytest.raises(ConfigError, match="'proxy.internal', which is neither an IP address nor a network"):
        create_app()
    monkeypatch.setenv("HOKUSAI_TRUSTED_PROXIES", "10.0.0.0/8 192.0.2.7,2001:db8::/32")
    assert [str(n) for n in create_app().get(TRUSTED_PROXIES)] == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]


# -- the Authorization header ----------------------------------------------------------------------


def test_the_bearer_scheme_is_case_insensitive(pg_stack):
    """RFC 7235 section 2.1: the scheme is case-insensitive. The key is not (below)."""
    key = pg_stack.api_key("admin", name="schemes")
    for scheme in ("bearer", "BEARER", "Bearer", "bEaReR"):
        answer = requests.get(pg_stack.gateway_url + "/mlflow/api/2.0/mlflow/experiments/search?max_results=1",
                              headers={"Authorization": f"{scheme} {key}"}, timeout=30)
        assert answer.status_code == 200, (scheme, answer.text)
        assert "experiments" in answer.json()


def test_an_upper_case_key_id_is_refused(pg_stack):
    """Key ids are lower-case hex, and a key is compared as it was shown: the same key with its
    id in upper case is malformed (401), so is its prefix in upper case."""
    key = pg_stack.api_key("admin", name="cases")
    name = f"cases-{uuid.uuid4().hex[:8]}"
    for variant in ("hk_" + key[3:11].upper() + key[11:], "HK_" + key[3:]):
        assert variant != key
        answer = requests.post(pg_stack.gateway_url + "/mlflow/api/2.0/mlflow/experiments/create", json={"name": name},
                               headers={"Authorization": f"Bearer {variant}"}, timeout=30)
        assert_problem(answer, 401, "malformed", "lower-case")
    assert pg_stack.client.get_experiment_by_name(name) is None


def test_two_authorization_headers_are_refused_and_nothing_is_forwarded(pg_stack):
    good, other = pg_stack.api_key("admin", name="twice"), pg_stack.api_key("read", name="twice-reader")
    name = f"twice-{uuid.uuid4().hex[:8]}"
    body = f'{{"name": "{name}"}}'.encode()
    for pair in ((good, good), (good, other), (other, good), (good, "hk_0123abcd_" + "x" * 43)):
        answer = raw(pg_stack.gateway_url, "POST", "/mlflow/api/2.0/mlflow/experiments/create",
                     [("Authorization", f"Bearer {pair[0]}"), ("Authorization", f"Bearer {pair[1]}"),
                      ("Content-Type", "application/json")], body)
        assert_problem(answer, 400, "more than one Authorization header")
    assert pg_stack.client.get_experiment_by_name(name) is None


def test_a_read_key_neither_uploads_nor_deletes_artifacts(pg_stack, tmp_path):
    """Through the live gateway, with a read key of the user whose experiment it is: a PUT of a new
    artifact, a PUT over an existing one and a DELETE are 403, and MLflow's artifacts are as
    they were."""
    user = f"artie-{uuid.uuid4().hex[:6]}"
    writer = {"Authorization": f"Bearer {pg_stack.api_key('register', name=user)}"}
    reader = {"Authorization": f"Bearer {pg_stack.api_key('read', name=user)}"}
    api = pg_stack.gateway_url + "/mlflow/api/2.0"
    experiment = requests.post(api + "/mlflow/experiments/create", json={"name": user}, headers=writer, timeout=30).json()["experiment_id"]
    run = requests.post(api + "/mlflow/runs/create", json={"experiment_id": experiment}, headers=writer, timeout=30).json()["run"]["info"]["run_id"]
    artifacts = f"{api}/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts"
    assert requests.put(artifacts + "/kept.txt", data=b"original", headers=writer, timeout=30).status_code == 200
    assert requests.get(artifacts + "/kept.txt", headers=reader, timeout=30).content == b"original"  # the reader reads

    assert_problem(requests.put(artifacts + "/new.txt", data=b"planted", headers=reader, timeout=30), 403, "'register'")
    assert_problem(requests.put(artifacts + "/kept.txt", data=b"overwritten", headers=reader, timeout=30), 403, "'register'")
    assert_problem(requests.delete(artifacts + "/kept.txt", headers=reader, timeout=30), 403, "'register'")

    listed = pg_stack.client.list_artifacts(run)  # MLflow direct
    assert [f.path for f in listed] == ["kept.txt"]
    downloaded = pg_stack.client.download_artifacts(run, "kept.txt", str(tmp_path))
    with open(downloaded, "rb") as f:
        assert f.read() == b"original"
