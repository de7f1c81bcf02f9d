"""People in the MLflow UI through the gateway, over HTTP (issue 20): the console's sign-in opens
the UI with one cookie (its attributes, and only a hash of it in the database), a page load with no
session goes to the sign-in and back, the UI's calls get 401 without one, a cookie's write needs
the gateway's own Origin or Referer (CSRF), a session ends at sign-out and at its key's revocation,
and bearer keys work as before. A live stack: real MLflow, PostgreSQL, console and gateway."""

from __future__ import annotations

import hashlib
import re
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import sqlalchemy as sa

from hokusai_mlflow_plugin.auth import keys, sessions
from hokusai_mlflow_plugin.db.models import SignInSession
from tests.live_stack import MlflowUi
from tests.webhook_app.test_console_sessions import csrf_of, signed_in

EXPERIMENTS_CREATE = "ajax-api/2.0/mlflow/experiments/create"


@pytest.fixture(scope="module")
def ui(stack_postgres):
    ui = MlflowUi(stack_postgres)
    yield ui
    ui.stop()


def person(ui: MlflowUi, *scopes: str) -> tuple[requests.Session, str]:
    """A client signed in at the console with a new key of ``scopes``, and the key."""
    key = ui.stack.api_key(*scopes, name=f"person-{uuid.uuid4().hex[:6]}")
    return signed_in(ui.console.url, key), key


def session_cookie(client: requests.Session):
    return next(c for c in client.cookies if c.name == sessions.COOKIE)


def test_the_console_sign_in_opens_the_mlflow_ui_with_one_cookie_holding_no_secret(ui):
    client = requests.Session()
    token = csrf_of(client.get(ui.console.url + "/console/login", timeout=30).text)
    key = ui.stack.api_key("read", name=f"cookie-{uuid.uuid4().hex[:6]}")
    answer = client.post(ui.console.url + "/console/login", data={"key": key, "csrf_token": token},
                         allow_redirects=False, timeout=30)
    assert answer.status_code == 302
    set_cookie = next(h for h in answer.raw.headers.getlist("Set-Cookie") if h.startswith(sessions.COOKIE + "="))
    attributes = [a.strip() for a in set_cookie.split(";")]
    assert "HttpOnly" in attributes and "SameSite=Lax" in attributes and "Path=/" in attributes  # covers /mlflow
    assert "Secure" not in attributes  # plain http; https behind a trusted proxy below
    value = session_cookie(client).value
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", value)  # 256 random bits
    assert key.split("_", 2)[2] not in set_cookie and key not in set_cookie
    with ui.stack.sessions() as s:
        row = s.scalars(sa.select(SignInSession).where(SignInSession.key_id == key[3:11])).one()
    assert row.id_sha256 == hashlib.sha256(value.encode()).hexdigest() and value not in row.id_sha256
    assert row.revoked_at is None and row.expires_at > row.created_at

    page = client.get(ui.ui, allow_redirects=False, timeout=30)
    assert page.status_code == 200 and "<title>MLflow</title>" in page.text
    found = client.get(ui.gateway + "/mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=5", timeout=30)
    assert found.status_code == 200 and found.json().get("experiments", []) == []  # a new user's team has none yet
    assert client.get(ui.gateway + "/mlflow/ajax-api/3.0/mlflow/server-info", timeout=30).status_code == 200
    static = re.search(r'src="(static-files/static/js/main\.[0-9a-f]+\.js)"', page.text).group(1)
    assert client.get(ui.ui + static, timeout=30).status_code == 200


def test_with_no_session_a_page_goes_to_the_sign_in_and_back_and_the_uis_calls_get_401(ui):
    anyone = requests.Session()
    bare = anyone.get(ui.gateway + "/mlflow?o=1", allow_redirects=False, timeout=30)
    assert bare.status_code == 302 and bare.headers["Location"] == "/mlflow/?o=1"

    page = anyone.get(ui.ui, allow_redirects=False, timeout=30)
    assert page.status_code == 302
    location = urlsplit(page.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == ui.console.url + "/console/login"
    back = parse_qs(location.query)["next"][0]
    assert back == ui.ui  # the gateway's public address, never MLflow's
    assert ui.stack.mlflow.url not in page.headers["Location"]

    for path in ("ajax-api/2.0/mlflow/experiments/search", "api/2.0/mlflow/experiments/search", "graphql"):
        answer = anyone.get(ui.ui + path, allow_redirects=False, timeout=30)
        assert answer.status_code == 401, path
        assert answer.headers["Content-Type"].startswith("application/problem+json") and answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert anyone.post(ui.ui + "graphql", json={"query": "{ test }"}, allow_redirects=False, timeout=30).status_code == 401

    # the sign-in form carries next, and the sign-in goes back there
    key = ui.stack.api_key("read", name=f"back-{uuid.uuid4().hex[:6]}")
    form = anyone.get(page.headers["Location"], timeout=30).text
    assert f'name="next" value="{ui.ui}"' in form
    answer = anyone.post(ui.console.url + "/console/login", data={"key": key, "next": back, "csrf_token": csrf_of(form)},
                         allow_redirects=False, timeout=30)
    assert answer.status_code == 302 and answer.headers["Location"] == ui.ui
    assert anyone.get(answer.headers["Location"], allow_redirects=False, timeout=30).status_code == 200


def test_a_cookies_write_needs_the_gateways_origin_and_a_bearer_key_does_not(ui):
    client, key = person(ui, "register")
    own = ui.gateway  # the gateway's origin: scheme, host and port
    refused = [{"Origin": "http://evil.example"}, {"Origin": "null"}, {}, {"Referer": "http://evil.example/page"},
               {"Origin": "http://evil.example", "Referer": own + "/mlflow/"},
               {"Origin": own.replace("127.0.0.1", "localhost")}]
    for headers in refused:
        name = f"csrf-{uuid.uuid4().hex[:8]}"
        answer = client.post(ui.gateway + "/mlflow/" + EXPERIMENTS_CREATE, json={"name": name}, headers=headers, timeout=30)
        assert answer.status_code == 403, (headers, answer.text)
        assert "CSRF" in answer.json()["detail"] and answer.json()["error_code"] == "PERMISSION_DENIED"
        assert ui.stack.client.get_experiment_by_name(name) is None  # nothing reached MLflow

    for headers in ({"Origin": own}, {"Referer": own + "/mlflow/#/experiments"}):
        name = f"csrf-ok-{uuid.uuid4().hex[:8]}"
        answer = client.post(ui.gateway + "/mlflow/" + EXPERIMENTS_CREATE, json={"name": name}, headers=headers, timeout=30)
        assert answer.status_code == 200, (headers, answer.text)  # MLflow's own origin check is met too
        assert ui.stack.client.get_experiment_by_name(name) is not None

    # a program's bearer key: no Origin rule, no cookie in play (even one of another session)
    name = f"bearer-{uuid.uuid4().hex[:8]}"
    answer = requests.post(ui.gateway + "/mlflow/api/2.0/mlflow/experiments/create", json={"name": name},
                           headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert requests.get(ui.ui + "api/2.0/mlflow/experiments/search?max_results=1", headers={"Authorization": "Bearer hk_x"},
                        cookies={sessions.COOKIE: session_cookie(client).value}, timeout=30).status_code == 401


def test_a_read_key_sees_the_ui_and_its_writes_are_403_creating_nothing(ui):
    client, _ = person(ui, "read")
    assert client.get(ui.ui, timeout=30).status_code == 200
    name = f"read-{uuid.uuid4().hex[:8]}"
    answer = client.post(ui.ui + "ajax-api/2.0/mlflow/registered-models/create", json={"name": name},
                         headers={"Origin": ui.gateway}, timeout=30)
    assert answer.status_code == 403
    assert "lacks the 'register' scope" in answer.json()["detail"]
    # MLflow's own members too, which its UI shows in the notice of the refused click
    assert answer.json()["error_code"] == "PERMISSION_DENIED" and answer.json()["message"] == answer.json()["detail"]
    assert ui.stack.client.search_registered_models(f"name = '{name}'") == []


def test_sign_out_and_a_revoked_key_end_the_session_at_the_gateway_too(ui):
    client, key = person(ui, "read")
    copied = client.cookies.copy()
    assert client.get(ui.ui, allow_redirects=False, timeout=30).status_code == 200
    token = csrf_of(client.get(ui.console.url + "/console/", timeout=30).text)
    assert client.post(ui.console.url + "/console/logout", data={"csrf_token": token}, allow_redirects=False,
                       timeout=30).status_code == 302
    replay = requests.Session()
    replay.cookies.update(copied)  # the cookie as it was before the sign-out
    page = replay.get(ui.ui, allow_redirects=False, timeout=30)
    assert page.status_code == 302 and page.headers["Location"].startswith(ui.console.url + "/console/login?next=")
    assert replay.get(ui.ui + "ajax-api/2.0/mlflow/experiments/search", timeout=30).status_code == 401

    client, key = person(ui, "read")
    assert client.get(ui.ui + "ajax-api/2.0/mlflow/experiments/search", timeout=30).status_code == 200
    with ui.stack.sessions.begin() as s:
        keys.revoke(s, key[3:11])
    answer = client.get(ui.ui + "ajax-api/2.0/mlflow/experiments/search", timeout=30)
    assert answer.status_code == 401 and "session has ended" in answer.json()["detail"]
    assert client.get(ui.ui, allow_redirects=False, timeout=30).status_code == 302
    with ui.stack.sessions() as s:
        assert s.scalars(sa.select(SignInSession.revoked_at).where(SignInSession.key_id == key[3:11])).one() is not None
    # the gateway's /metrics counts both: the UI opened by a session, and the sessions refused
    scraped = requests.get(ui.gateway + "/metrics", timeout=30).text
    counted = {m.group(1): float(m.group(2)) for m in re.finditer(r'hokusai_gateway_session_signins_total\{result="(\w+)"\} (\S+)', scraped)}
    assert counted["signed_in"] >= 1 and counted["refused"] >= 3, counted


def test_the_session_cookie_is_secure_over_https_behind_a_trusted_proxy(pg_stack):
    from webhook_app import create_app

    key = pg_stack.api_key("read")
    for proxied, secure in ((True, True), (False, False)):
        app = create_app({**pg_stack.receiver_config, "HOKUSAI_RELAY": False, "HOKUSAI_PROXY_FIX": proxied})
        client = app.test_client()
        forwarded = {"X-Forwarded-Proto": "https", "Referer": "https://localhost/console/login"}
        token = csrf_of(client.get("/console/login", headers=forwarded).text)
        answer = client.post("/console/login", data={"key": key, "csrf_token": token}, headers=forwarded)
        assert answer.status_code == 302
        cookie = next(h for h in answer.headers.getlist("Set-Cookie") if h.startswith(sessions.COOKIE + "="))
        assert ("; Secure" in cookie) is secure, cookie
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/;" in cookie + ";"
