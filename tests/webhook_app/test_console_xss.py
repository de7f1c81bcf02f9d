"""Markup where a person or a payload may put it, shown as text by the console (issue 24): a key's
name (the keys page, the header of its own session) and an event's payload (the event page), in a
real Chromium that records every dialog (none may open) and in the HTML itself (escaped)."""

from __future__ import annotations

import uuid

from playwright.sync_api import expect

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.db.models import OutboxEvent, utcnow
from tests.webhook_app.test_console import browser, console  # noqa: F401 (the fixtures: no dialog may open)

MARKUP = '<img src=x onerror="alert(document.cookie)"><script>alert(1)</script>'


def test_a_key_named_with_markup_is_shown_as_text(pg_stack, console):  # noqa: F811
    name = f"{MARKUP}-{uuid.uuid4().hex[:6]}"
    with pg_stack.sessions.begin() as s:
        key = keys.create(s, name, ("admin",)).key
    console.sign_in(key)
    header = console.page.get_by_role("banner")
    expect(header).to_contain_text(name)  # the text itself, as typed
    console.open("/console/keys")
    expect(console.page.get_by_role("cell", name=name)).to_be_visible()
    html = console.page.request.get(pg_stack.receiver.url + "/console/keys").text()  # as the server sent it
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;img src=x onerror=" in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert console.page.locator("img[src=x]").count() == 0
    console.shot("xss-key-name")


def test_an_event_payload_with_markup_is_shown_as_text(pg_stack, console):  # noqa: F811
    event_id = str(uuid.uuid4())
    payload = {"token_id": f"XSS-{uuid.uuid4().hex[:6]}", "model_name": MARKUP, "model_version": "</pre>" + MARKUP,
               "metadata": {"note": "</script><script>alert(2)</script>"}}
    with pg_stack.sessions.begin() as s:
        s.add(OutboxEvent(event_id=event_id, event_type="token_ready_for_deploy", created_at=utcnow(), payload=payload))
    console.sign_in(pg_stack.api_key("admin", name="xss-admin"))  # the event's token has no owner: an operator's
    console.open(f"/console/events/{event_id}")
    expect(console.page.get_by_role("heading", name="Event token_ready_for_deploy")).to_be_visible()
    expect(console.page.get_by_text(MARKUP).first).to_be_visible()
    html = console.page.request.get(f"{pg_stack.receiver.url}/console/events/{event_id}").text()  # as the server sent it
    assert "<script>alert" not in html and "<img src=x" not in html and "</pre><img" not in html
    assert "&lt;/script&gt;&lt;script&gt;alert(2)" in html or "\\u003c/script\\u003e" in html
    assert console.page.locator("img[src=x]").count() == 0
    console.shot("xss-event-payload")
