"""The console's sessions on the live receiver, over HTTP as an attacker sends it: a session ends
on the server at sign-out, so a cookie copied before it is refused after it (issue 24)."""

from __future__ import annotations

import re

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
