"""The Flask app believes X-Forwarded-* from the configured proxies alone (HOKUSAI_TRUSTED_PROXIES):
the client's address, scheme and host a proxy reports, and nobody else's word for them."""

from __future__ import annotations

import ipaddress
import json
import logging

from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from tests.live_stack import RECEIVER_SECRET
from webhook_app import create_app
from webhook_app.proxies import TrustedProxyFix

FORGED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example",
          "Forwarded": "for=203.0.113.9", "X-Real-IP": "203.0.113.9"}


@Request.application
def echo(request: Request) -> Response:
    """What the app behind the middleware reads of the request."""
    seen = {"scheme": request.scheme, "host": request.host, "remote": request.remote_addr,
            "forwarding": sorted(k for k in request.headers.keys() if k.lower().startswith(("x-forwarded", "forwarded", "x-real")))}
    return Response(json.dumps(seen), mimetype="application/json")


def test_only_a_trusted_peer_says_who_the_client_is():
    app = Client(TrustedProxyFix(echo, (ipaddress.ip_network("10.0.0.0/8"),)))
    trusted = app.get("/", headers=FORGED, environ_base={"REMOTE_ADDR": "10.1.2.3"}).json
    assert (trusted["scheme"], trusted["host"], trusted["remote"]) == ("https", "evil.example", "203.0.113.9")  # the proxy's word
    untrusted = app.get("/", headers=FORGED, environ_base={"REMOTE_ADDR": "198.51.100.7"}).json
    assert untrusted == {"scheme": "http", "host": "localhost", "remote": "198.51.100.7", "forwarding": []}


def test_the_receiver_logs_the_address_a_trusted_proxy_reports_and_no_one_elses(tmp_path, caplog):
    from hokusai_mlflow_plugin.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    upgrade(url)
    config = {"HOKUSAI_WEBHOOK_SECRETS": (RECEIVER_SECRET,), "HOKUSAI_DATABASE_URL": url, "HOKUSAI_RELAY": False,
              "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    caplog.set_level(logging.WARNING, logger="webhook_app")
    for proxies, peer, logged in (("10.0.0.0/8", "10.1.2.3", "203.0.113.9"), ("10.0.0.0/8", "198.51.100.7", "198.51.100.7"),
                                  ((), "10.1.2.3", "10.1.2.3")):
        client = create_app({**config, "HOKUSAI_TRUSTED_PROXIES": proxies}).test_client()
        caplog.clear()
        answer = client.post("/webhooks/mlflow", data=b"{}", headers=FORGED, environ_base={"REMOTE_ADDR": peer})
        assert answer.status_code == 401  # no signature
        assert [r.getMessage().split(":")[0] for r in caplog.records] == [f"Rejected a webhook from {logged}"], caplog.text
