"""The console's sessions on the live receiver, over HTTP as an attacker sends it (issue 24): a
session ends on the server at sign-out, so a cookie copied before it is refused after it; the
sign-in's ``next`` never leaves the site (but goes back to the MLflow UI through the gateway); a
CSRF token of another session is refused."""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

import pytest
import requests


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def signed_in(base: str, key: str) -> requests.Session:
    """A client signed in to the console at ``base`` with ``key``, as the sign-in form does it."""
    client = requests.Session()
    token = csrf_of(client.get(base + "/console/login", timeout=30).text)
    answer = client.post(base + "/console/login", data={"key": key, "csrf_token": token}, allow_redirects=False, timeout=30)
    assert answer.status_code == 302, answer.text[:300]
    return client


def test_a_cookie_copied_before_sign_out_is_refused_after_it(pg_stack):
    base = pg_stack.receiver.url
    person = signed_in(base, pg_stack.api_key("read", name="replayed"))
    assert person.get(base + "/console/", allow_redirects=False, timeout=30).status_code == 200
    copied = person.cookies.copy()  # every cookie the browser holds, as one who saw them would keep them

    token = csrf_of(person.get(base + "/console/", timeout=30).text)
    assert person.post(base + "/console/logout", data={"csrf_token": token}, allow_redirects=False, timeout=30).status_code == 302
    assert person.get(base + "/console/", allow_redirects=False, timeout=30).status_code == 302

    replay = requests.Session()
    replay.cookies.update(copied)
    answer = replay.get(base + "/console/", allow_redirects=False, timeout=30)
    assert answer.status_code == 302
    assert answer.headers["Location"].startswith("/console/login")


# -- the attacks of issue 24 on the console, against the live receiver ----------------------------------


@pytest.fixture(scope="module")
def ui(stack_postgres):
    """The console told of the gateway's public URL, as ``hokusai up`` tells it."""
    from tests.live_stack import MlflowUi

    ui = MlflowUi(stack_postgres)
    yield ui
    ui.stop()


def signed_in_to(ui, next_: str) -> str:
    """Where a sign-in whose form carries ``next_`` goes."""
    client = requests.Session()
    token = csrf_of(client.get(ui.console.url + "/console/login", params={"next": next_}, timeout=30).text)
    key = ui.stack.api_key("read", name=f"next-{uuid.uuid4().hex[:6]}")
    answer = client.post(ui.console.url + "/console/login", data={"key": key, "next": next_, "csrf_token": token},
                         allow_redirects=False, timeout=30)
    assert answer.status_code == 302
    return answer.headers["Location"]


@pytest.mark.parametrize("target", [
    "//evil.example", "https://evil.example", "/\\evil.example", "\\\\evil.example", "http://evil.example/console/",
    "javascript:alert(1)", "https:evil.example", "//evil.example/mlflow/", " //evil.example", "/console/\r\nLocation: x",
])
def test_next_never_leaves_the_site(ui, target):
    assert signed_in_to(ui, target) == "/console/"


def test_next_goes_back_to_a_console_page_or_the_mlflow_ui_on_the_gateways_origin(ui):
    assert signed_in_to(ui, "/console/tokens?status=draft") == "/console/tokens?status=draft"
    assert signed_in_to(ui, "/mlflow/") == "/mlflow/"  # the gateway behind the console's own ingress
    deep = ui.ui + "#/experiments/1/runs/abc"
    assert signed_in_to(ui, deep) == deep
    gateway = urlsplit(ui.gateway)
    for elsewhere in (ui.gateway + "/other", f"http://user@{gateway.netloc}/mlflow/",
                      f"https://{gateway.netloc}/mlflow/", f"http://{gateway.hostname}:1/mlflow/"):
        assert signed_in_to(ui, elsewhere) == "/console/", elsewhere


def test_a_csrf_token_of_another_session_is_refused(pg_stack):
    base = pg_stack.receiver.url
    alice = signed_in(base, pg_stack.api_key("read", name="csrf-alice"))
    mallory = signed_in(base, pg_stack.api_key("read", name="csrf-mallory"))
    mallorys_token = csrf_of(mallory.get(base + "/console/", timeout=30).text)
    answer = alice.post(base + "/console/logout", data={"csrf_token": mallorys_token}, allow_redirects=False, timeout=30)
    assert answer.status_code == 400
    assert "The form was refused" in answer.text
    assert alice.get(base + "/console/", allow_redirects=False, timeout=30).status_code == 200  # still signed in
    # and the same token is good in its own session
    assert mallory.post(base + "/console/logout", data={"csrf_token": mallorys_token}, allow_redirects=False,
                        timeout=30).status_code == 302
