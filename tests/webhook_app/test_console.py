"""The operator console on the live stack (real PostgreSQL, MLflow server and receiver over HTTP),
driven by a real headless Chromium as a person uses it: signing in with a key, the pages of
registered and rejected tokens, redelivery to a real sink, scopes, CSRF, escaping, signing out;
who sees what (a user their own tokens, an admin all of them and the tokens nobody owns), keys
made for a user; and the pages' server time on big tables."""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
import zlib
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from playwright.sync_api import expect

from hokusai_mlflow_plugin.auth import keys, principals
from hokusai_mlflow_plugin.db.models import (
    DEAD, DELIVERED, TEAM, USER, Delivery, OutboxEvent, Registration, Token, TokenGrant, utcnow,
)
from tests.events.helpers import SECRET, add_events, wait_until
from tests.harness import CaptureReceiver
from tests.mlflow_helpers import train_and_register


CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"
ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


# -- the browser -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium to run the console's browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


class Console:
    """One person's browser tab on the console at ``base``; ``dialogs`` records every alert()."""

    def __init__(self, browser, base: str):
        self.base = base
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(15_000)
        self.dialogs: list[str] = []
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))

    def open(self, path: str = "/console/"):
        return self.page.goto(self.base + path)

    def sign_in(self, key: str):
        self.open("/console/login")
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_load_state()

    def csrf_token(self) -> str:
        # a hidden field a person never sees: the one element found by its name, not by role
        return self.page.locator("input[name=csrf_token]").first.get_attribute("value")

    def post(self, path: str, form: dict):
        """A POST the page did not make, with this tab's cookies (a forged or replayed form)."""
        return self.page.request.post(self.base + path, form=form, max_redirects=0)

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def console(browser, pg_stack):
    tab = Console(browser, pg_stack.receiver.url)
    yield tab
    tab.close()
    assert tab.dialogs == []  # no page ran a script it should not have


def heading(console: Console, name: str):
    return console.page.get_by_role("heading", name=name, exact=True)


def stats(console: Console, card: str) -> dict[str, str]:
    """The figures of an overview card, as a person reads them: each term and its value."""
    region = console.page.get_by_role("region", name=card)
    terms = region.get_by_role("term").all_inner_texts()
    return dict(zip(terms, (v.strip() for v in region.get_by_role("definition").all_inner_texts())))


def add_event(pg_stack, token_id: str, model: str = "m", version: str = "1") -> str:
    """A token_ready_for_deploy event of ``token_id`` in the outbox, as a registration writes it."""
    event_id = str(uuid.uuid4())
    with pg_stack.sessions.begin() as s:
        s.add(OutboxEvent(event_id=event_id, event_type="token_ready_for_deploy", created_at=utcnow(),
                          payload={"token_id": token_id, "model_name": model, "model_version": version}))
    return event_id


# -- signing in --------------------------------------------------------------------------------------


def test_a_wrong_key_is_refused_and_the_right_key_signs_in(pg_stack, console):
    key = pg_stack.api_key("read", name="ops-reader")
    console.open("/console/tokens")
    assert "/console/login" in console.page.url  # no session: to the sign-in page

    console.sign_in(key[:-2] + "zz")
    expect(console.page.get_by_role("alert").filter(has_text="is not known")).to_be_visible()
    expect(heading(console, "Overview")).to_have_count(0)
    console.sign_in("not a key")
    expect(console.page.get_by_role("alert").filter(has_text="malformed")).to_be_visible()

    console.sign_in(key)
    expect(heading(console, "Overview")).to_be_visible()
    header = console.page.get_by_role("banner")
    expect(header.get_by_text("ops-reader")).to_be_visible()
    assert "read" in header.inner_text()

    cookie = next(c for c in console.context.cookies() if c["name"] == "hokusai_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/console"
    assert not cookie["secure"]  # plain http here; see test_the_cookie_is_secure_behind_an_https_proxy
    session = decode_session(cookie["value"])
    assert "key_id" not in session  # Flask's cookie holds the CSRF token and flashes; the session is the server's
    assert key not in json.dumps(session) and key.split("_", 2)[2] not in cookie["value"]  # never the key
    opened = next(c for c in console.context.cookies() if c["name"] == "hokusai_session")  # a random id (auth.sessions)
    assert opened["httpOnly"] and opened["sameSite"] == "Lax" and opened["path"] == "/" and not opened["secure"]
    assert key.split("_", 2)[2] not in opened["value"]

    response = console.open("/console/")
    for name in ("content-security-policy", "x-frame-options", "referrer-policy"):
        assert response.headers.get(name), name
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    console.shot("overview")


def decode_session(value: str) -> dict:
    """The payload of Flask's signed cookie (signed, not encrypted: whatever it holds is readable)."""
    data = value.split(".")[1] if value.startswith(".") else value.split(".")[0]
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    return json.loads(zlib.decompress(raw) if value.startswith(".") else raw)


def test_signing_out_ends_the_session_and_a_revoked_key_is_refused_on_its_next_page(pg_stack, console):
    console.sign_in(pg_stack.api_key("read", name="leaving"))
    console.page.get_by_role("button", name="Sign out").click()
    expect(console.page.get_by_text("You are signed out.")).to_be_visible()
    console.open("/console/tokens")
    assert "/console/login" in console.page.url

    key = pg_stack.api_key("read", name="to-revoke")
    console.sign_in(key)
    expect(heading(console, "Overview")).to_be_visible()
    with pg_stack.sessions.begin() as s:
        keys.revoke(s, key[3:11])
    console.open("/console/events")
    assert "/console/login" in console.page.url
    expect(console.page.get_by_text("has ended")).to_be_visible()
    console.open("/console/")
    assert "/console/login" in console.page.url  # and it stays ended


# -- tokens ------------------------------------------------------------------------------------------


def test_a_registered_and_a_rejected_token_show_their_decisions_and_reasons(pg_stack, console, monkeypatch):
    suffix = uuid.uuid4().hex[:6].upper()
    good, bad = f"CON-OK-{suffix}", f"CON-NO-{suffix}"
    pg_stack.create_token(good, "auroc", 0.82)
    pg_stack.create_token(bad, "auroc", 0.95)
    versions = {}
    for token_id in (good, bad):
        monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
        name = f"console-{token_id.lower()}"
        _, version = train_and_register(name, {"auroc": 0.9})
        versions[token_id] = (name, version, pg_stack.wait_decided(name, version))
    assert versions[good][2].outcome == "registered" and versions[bad][2].outcome == "rejected"

    console.sign_in(pg_stack.api_key("admin", name="ops-admin"))  # tokens with no owner: admins' only
    console.page.get_by_role("navigation", name="Sections").get_by_role("link", name="Tokens").click()
    console.page.get_by_label("Token id contains").fill(suffix)
    console.page.get_by_role("button", name="Filter").click()
    rows = console.page.get_by_role("row")
    expect(rows.filter(has_text=good).get_by_text("registered")).to_be_visible()
    expect(rows.filter(has_text=bad).get_by_text("draft")).to_be_visible()  # a rejection leaves its token in draft

    console.page.get_by_label("Status").select_option("registered")
    console.page.get_by_role("button", name="Filter").click()
    expect(console.page.get_by_role("link", name=good)).to_be_visible()
    assert console.page.get_by_role("link", name=bad).count() == 0

    console.page.get_by_role("link", name=good).click()
    expect(heading(console, f"Token {good} registered")).to_be_visible()
    expect(console.page.get_by_text("auroc >= 0.82")).to_be_visible()
    name, version, reg = versions[good]
    link = console.page.get_by_role("link", name=f"{name} v{version}").first
    assert link.get_attribute("href") == f"{pg_stack.mlflow.url}/#/models/{name}/versions/{version}"
    versions_seen = console.page.get_by_role("row").filter(has_text=f"{name} v{version}")
    expect(versions_seen.get_by_text(reg.reason)).to_be_visible()
    expect(versions_seen.get_by_text("auroc = 0.9")).to_be_visible()
    assert console.page.get_by_role("row").filter(has_text="token_ready_for_deploy").count() == 1
    console.shot("token")

    console.open(f"/console/tokens/{bad}")
    name, version, reg = versions[bad]
    assert "0.95" in reg.reason
    rejected = console.page.get_by_role("row").filter(has_text=f"{name} v{version}")
    expect(rejected.get_by_text("rejected")).to_be_visible()
    expect(rejected.get_by_text(reg.reason)).to_be_visible()
    console.shot("token-rejected")

    console.open("/console/")
    expect(console.page.get_by_role("img", name=re.compile(r"Registrations and rejections per hour"))).to_be_visible()


def test_bad_input_gives_a_page_that_says_what_is_wrong(pg_stack, console):
    console.sign_in(pg_stack.api_key("read"))
    for path, status, words in [
        ("/console/tokens?status=nope", 400, "Unknown status 'nope'"),
        ("/console/tokens?cursor=%%%", 400, "The cursor is not one this API gave"),
        ("/console/tokens/NO-SUCH-TOKEN", 404, "Unknown token 'NO-SUCH-TOKEN'"),
        ("/console/tokens/%00", 400, "is not a token id"),
        ("/console/events?status=lost", 400, "Unknown delivery status 'lost'"),
        ("/console/events/" + "x" * 300, 404, "No event"),
        ("/console/keys", 403, "lacks the 'admin' scope"),
    ]:
        response = console.open(path)
        assert response.status == status, path
        assert words in console.page.get_by_role("alert").inner_text(), path
        assert "Traceback" not in console.page.content()


def test_a_model_name_holding_markup_is_shown_as_text(pg_stack, console):
    """MLflow refuses such a name (it holds a '/'), so the registration row is written directly,
    as a database shared with another tool could hold it."""
    token_id = f"CON-XSS-{uuid.uuid4().hex[:6].upper()}"
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    pg_stack.create_token(token_id, "auroc", 0.8)
    with pg_stack.sessions.begin() as s:
        s.add(Registration(model_name=evil, model_version="1", token_id=token_id, outcome="rejected",
                           reason=f"auroc of {evil} is <b>below</b> 0.8", metric_name="auroc", metric_value=0.5, baseline_value=0.8))
        s.add(OutboxEvent(event_id=str(uuid.uuid4()), event_type="model_registered",
                          payload={"token_id": token_id, "model_name": evil, "model_version": "1"}, created_at=utcnow()))
    console.sign_in(pg_stack.api_key("admin"))
    console.open(f"/console/tokens/{token_id}")
    expect(console.page.get_by_role("link", name=f"{evil} v1")).to_be_visible()  # the markup, as text
    expect(console.page.get_by_text("is <b>below</b> 0.8")).to_be_visible()
    href = console.page.get_by_role("link", name=f"{evil} v1").get_attribute("href")
    assert "<" not in href and "%3Cscript%3E" in href
    console.open(f"/console/events?token={token_id}")
    expect(console.page.get_by_text(f"{evil} v1")).to_be_visible()
    assert console.page.evaluate("document.querySelectorAll('main script, main img').length") == 0
    console.page.wait_for_timeout(300)
    assert console.dialogs == []


# -- events and redelivery ---------------------------------------------------------------------------


@pytest.fixture
def relaying(pg_stack):
    """A replica of the receiver whose in-process relay sends events to a real local webhook
    consumer, signed with a Standard Webhooks secret: ``(replica, capture, sink name)``."""
    from hokusai_mlflow_plugin.config import load_settings
    from tests.live_stack import ReceiverThread

    capture = CaptureReceiver().start()
    settings = load_settings(environ={"HOKUSAI_EVENT_WEBHOOK_URL": capture.url + "/capture", "HOKUSAI_EVENT_WEBHOOK_SECRET": SECRET})
    replica = ReceiverThread({**pg_stack.receiver_config, "HOKUSAI_SETTINGS": settings}).start()
    sink = next(iter(replica.app.extensions["hokusai_relay"].sinks))
    try:
        yield replica, capture, sink
    finally:
        replica.app.extensions["hokusai_relay"].stop()
        replica.release()
        capture.stop()


def delivery_status(pg_stack, event_id: str, sink: str) -> str | None:
    with pg_stack.sessions() as s:
        return s.scalar(sa.select(Delivery.status).where(Delivery.event_id == event_id, Delivery.sink == sink))


def test_redeliver_from_the_event_page_sends_the_event_again_with_its_webhook_id(pg_stack, browser, relaying):
    replica, capture, sink = relaying
    event_id = add_events(pg_stack.db_url)[0]
    console = Console(browser, replica.url)
    try:
        console.sign_in(pg_stack.api_key("admin", name="ops-admin"))  # the first request starts the relay
        assert capture.wait_for(lambda r: r.headers.get("webhook-id") == event_id, timeout=30)
        assert wait_until(lambda: delivery_status(pg_stack, event_id, sink) == DELIVERED)

        console.page.get_by_role("link", name="Events").click()
        console.page.get_by_role("link", name=event_id[:8]).click()
        expect(heading(console, "Event token_ready_for_deploy")).to_be_visible()
        expect(console.page.get_by_text(event_id, exact=True)).to_be_visible()
        assert console.page.get_by_role("row").filter(has_text="HTTP 200").count() >= 1
        assert '"token_id": "T0"' in console.page.get_by_text('"metric_name"').inner_text()  # the payload, pretty

        console.page.get_by_role("button", name="Redeliver").click()
        expect(console.page.get_by_text(f"Event {event_id} is queued for redelivery to")).to_be_visible()
        assert capture.wait_for(lambda r: r.headers.get("webhook-id") == event_id and capture.ids().count(event_id) >= 2, timeout=30)
        assert capture.ids().count(event_id) == 2  # the same webhook-id: the consumer can deduplicate
        assert wait_until(lambda: delivery_status(pg_stack, event_id, sink) == DELIVERED)
        console.page.reload()
        assert console.page.get_by_role("row").filter(has_text="HTTP 200").count() >= 2  # both attempts listed
        console.shot("event")
    finally:
        console.close()
    assert console.dialogs == []


def test_redeliver_all_dead_asks_for_confirmation_then_sends_them(pg_stack, browser, relaying):
    replica, capture, sink = relaying
    console = Console(browser, replica.url)
    try:
        console.sign_in(pg_stack.api_key("admin"))  # starts the relay: it delivers what was there
        event_id = add_events(pg_stack.db_url)[0]
        with pg_stack.sessions.begin() as s:  # a delivery the relay gave up on
            s.add(Delivery(event_id=event_id, outbox_id=0, sink=sink, status=DEAD, attempts=12, last_error="HTTP 503"))
        console.open("/console/")
        problems = console.page.get_by_role("alert").filter(has_text="dead deliver")
        expect(problems).to_be_visible()
        console.shot("overview-dead")
        problems.get_by_role("link", name="Redeliver all dead").click()
        expect(heading(console, "Redeliver all dead deliveries")).to_be_visible()

        console.page.get_by_role("button", name="Redeliver all dead").click()  # unticked: the browser stops it
        expect(heading(console, "Redeliver all dead deliveries")).to_be_visible()
        form = {"csrf_token": console.csrf_token()}
        assert console.post("/console/events/redeliver-dead", form).status == 400  # unconfirmed: nothing happens
        assert delivery_status(pg_stack, event_id, sink) == DEAD

        console.page.get_by_label(re.compile("I fixed the sink")).check()
        console.page.get_by_role("button", name="Redeliver all dead").click()
        expect(console.page.get_by_text(re.compile(r"\d+ dead deliver(y is|ies are) queued for redelivery"))).to_be_visible()
        assert capture.wait_for(lambda r: r.headers.get("webhook-id") == event_id, timeout=30)
        assert wait_until(lambda: delivery_status(pg_stack, event_id, sink) == DELIVERED)
    finally:
        console.close()


def test_the_token_page_tells_its_history_as_a_timeline_and_deployed_tokens_show_their_target(pg_stack, console):
    """Two tokens of one team through the lifecycle's own functions: one registered, deployed,
    undeployed and archived with a reason; the other deployed to production. The owner reads the
    timeline oldest first, the list and the page name the target, the overview counts both."""
    from hokusai_mlflow_plugin.auth.keys import Caller
    from hokusai_mlflow_plugin.registration import lifecycle

    x = uuid.uuid4().hex[:6]
    old, new, model = f"LIFE-OLD-{x.upper()}", f"LIFE-NEW-{x.upper()}", f"churn-{x}"
    with pg_stack.sessions.begin() as s:
        alice, ci = principals.create(s, f"alice-{x}", USER), principals.create(s, f"ci-bot-{x}", USER)
        team = principals.create(s, f"growth-{x}", TEAM)
        principals.add_member(s, team.name, alice.name)
        principals.add_member(s, team.name, ci.name)
        for token_id, version in ((old, "1"), (new, "2")):
            s.add(Token(token_id=token_id, status="registered", metric_name="auroc", baseline_value=0.8, owner=team,
                        model_name=model, model_version=version, metric_value=0.9, mlflow_run_id="r" * 32))
            s.add(Registration(model_name=model, model_version=version, token_id=token_id, outcome="registered",
                               reason="auroc 0.9 meets the baseline 0.8", metric_name="auroc", metric_value=0.9,
                               baseline_value=0.8, created_at=utcnow()))
        key = keys.create(s, f"alice-laptop-{x}", ("read",), user=alice.name).key
    pipeline = Caller("c1b0c1b0", "ci", ("deploy",), user_id=ci.id)
    owner = Caller("a11ce000", "alice", ("register",), user_id=alice.id)
    for step in (lambda s: lifecycle.deploy(s, pipeline, old, model, "1", "production"),
                 lambda s: lifecycle.undeploy(s, pipeline, old),
                 lambda s: lifecycle.deploy(s, pipeline, new, model, "2", "production"),
                 lambda s: lifecycle.archive(s, owner, old, "Superseded by the retrained model in " + new)):
        with pg_stack.sessions.begin() as s:
            assert step(s).moved

    console.sign_in(key)
    assert stats(console, "Tokens") == {"Draft": "0", "Registered": "0", "Deployed": "1", "Archived": "1"}
    console.page.get_by_role("region", name="Tokens").get_by_role("link", name="1").first.click()
    expect(console.page.get_by_role("row").filter(has_text=new).get_by_role("cell", name="deployed to production")).to_be_visible()
    expect(console.page.get_by_role("link", name=old)).to_have_count(0)  # the filter was deployed

    console.open(f"/console/tokens/{new}")
    expect(heading(console, f"Token {new} deployed")).to_be_visible()
    facts = console.page.get_by_role("definition")
    expect(facts.filter(has_text="production (the version's alias in MLflow)")).to_be_visible()

    console.open(f"/console/tokens/{old}")
    expect(heading(console, f"Token {old} archived")).to_be_visible()
    timeline = console.page.get_by_role("list", name="History")
    steps = timeline.get_by_role("listitem")
    expect(steps).to_have_count(4)
    assert [steps.nth(i).get_by_role("heading").inner_text() for i in range(4)] == [
        "Registered", "Deployed to production", "Undeployed from production", "Archived"]  # oldest first
    expect(steps.nth(0)).to_contain_text("draft → registered")
    expect(steps.nth(0)).to_contain_text("by mlflow")
    for i, text in ((1, "registered → deployed"), (1, f"by ci-bot-{x}"), (2, f"by ci-bot-{x}"), (3, f"by alice-{x}")):
        expect(steps.nth(i)).to_contain_text(text)
    expect(steps.nth(1).get_by_role("link", name=f"{model} v1")).to_be_visible()
    expect(steps.nth(3).get_by_text(f"Superseded by the retrained model in {new}")).to_be_visible()
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", steps.nth(2).inner_text())
    console.shot("token-history")


# -- scopes and CSRF ---------------------------------------------------------------------------------


def test_a_read_key_sees_no_action_and_its_forged_posts_are_403(pg_stack, console):
    reader = f"reader-{uuid.uuid4().hex[:6]}"
    with pg_stack.sessions.begin() as s:
        key = keys.create(s, reader, ("read",)).key  # acts for a user of its own name
        token_id = f"CON-READ-{uuid.uuid4().hex[:6].upper()}"
        s.add(Token(token_id=token_id, status="registered", owner=principals.find(s, reader)))
    event_id = add_event(pg_stack, token_id)
    with pg_stack.sessions.begin() as s:
        s.add(Delivery(event_id=event_id, outbox_id=0, sink="console-test-sink", status=DEAD, attempts=3, last_error="HTTP 500"))
    console.sign_in(key)
    console.open("/console/")
    assert console.page.get_by_role("alert").filter(has_text="dead deliver").count() == 0  # the outbox is an operator's
    assert console.page.get_by_text("Redeliver all dead").count() == 0
    assert console.page.get_by_role("link", name="API keys").count() == 0
    console.open("/console/events?status=dead")
    expect(console.page.get_by_role("row").filter(has_text=event_id[:8]).get_by_text("HTTP 500")).to_be_visible()
    console.shot("events-dead")
    console.open(f"/console/events/{event_id}")
    expect(heading(console, "Event token_ready_for_deploy")).to_be_visible()
    assert console.page.get_by_role("button", name="Redeliver").count() == 0

    token = console.csrf_token()  # a valid token of this session: the refusal is the scope's
    for path, form in [
        (f"/console/events/{event_id}/redeliver", {}),
        ("/console/events/redeliver-dead", {"confirm": "yes"}),
        ("/console/keys", {"name": "sneaky", "scope": "admin"}),
        (f"/console/keys/{'0' * 8}/revoke", {}),
    ]:
        response = console.post(path, {**form, "csrf_token": token})
        assert response.status == 403, path
        assert "lacks the &#39;admin&#39; scope" in response.text(), path
    assert delivery_status(pg_stack, event_id, "console-test-sink") == DEAD
    with pg_stack.sessions() as s:
        assert not [k for k in keys.list_keys(s) if k.name == "sneaky"]


def test_a_post_without_its_csrf_token_is_refused(pg_stack, console):
    event_id = add_events(pg_stack.db_url)[0]
    with pg_stack.sessions.begin() as s:
        s.add(Delivery(event_id=event_id, outbox_id=0, sink="console-test-sink", status=DEAD, attempts=3))
    console.sign_in(pg_stack.api_key("admin"))
    for form in ({}, {"csrf_token": "forged"}):
        response = console.post(f"/console/events/{event_id}/redeliver", form)
        assert response.status == 400
        assert "The form was refused" in response.text() and "Traceback" not in response.text()
        assert console.post("/console/logout", form).status == 400
    assert delivery_status(pg_stack, event_id, "console-test-sink") == DEAD
    console.open("/console/")
    expect(heading(console, "Overview")).to_be_visible()  # the refused logout left the session alone
    # the sign-in form is a form like any other
    assert requests.post(pg_stack.receiver.url + "/console/login", data={"key": "hk_x"}, timeout=30, allow_redirects=False).status_code == 400


# -- who sees what ----------------------------------------------------------------------------------


class Tenants:
    """Two users in two teams, each with tokens, decisions and events, one token of bob's shared
    with alice's team to read, and one token nobody owns. Names carry a suffix: the stack's
    database is shared by the whole run."""

    def __init__(self, pg_stack):
        self.suffix = x = uuid.uuid4().hex[:6]
        self.alice, self.bob, self.team_a, self.team_b = f"alice-{x}", f"bob-{x}", f"team-a-{x}", f"team-b-{x}"
        X = x.upper()
        self.mine, self.teams, self.bobs, self.shared, self.nobodys = (
            f"ALICE-{X}", f"TEAM-A-{X}", f"BOB-{X}", f"BOB-SHARED-{X}", f"NOBODY-{X}")
        with pg_stack.sessions.begin() as s:
            alice, bob = principals.create(s, self.alice, USER), principals.create(s, self.bob, USER)
            team_a, team_b = principals.create(s, self.team_a, TEAM), principals.create(s, self.team_b, TEAM)
            principals.add_member(s, self.team_a, self.alice)
            principals.add_member(s, self.team_b, self.bob)
            s.add_all([
                Token(token_id=self.mine, status="draft", metric_name="auroc", baseline_value=0.8, owner=alice),
                Token(token_id=self.teams, status="registered", metric_name="auroc", baseline_value=0.8, owner=team_a,
                      model_name=f"xray-{x}", model_version="2", metric_value=0.86),
                Token(token_id=self.bobs, status="registered", metric_name="auroc", baseline_value=0.8, owner=bob,
                      model_name=f"bob-model-{x}", model_version="1", metric_value=0.91),
                Token(token_id=self.shared, status="draft", metric_name="rmse", baseline_value=2.0, owner=team_b),
                Token(token_id=self.nobodys, status="draft", metric_name="auroc", baseline_value=0.7),
            ])
            s.flush()
            s.add(TokenGrant(token_id=self.shared, principal_id=team_a.id, permission="read"))
            s.add_all([
                Registration(model_name=f"xray-{x}", model_version="1", token_id=self.teams, outcome="rejected",
                             reason="auroc 0.74 is below the baseline 0.8", metric_name="auroc", metric_value=0.74, baseline_value=0.8),
                Registration(model_name=f"xray-{x}", model_version="2", token_id=self.teams, outcome="registered",
                             reason="auroc 0.86 meets the baseline 0.8", metric_name="auroc", metric_value=0.86, baseline_value=0.8),
                Registration(model_name=f"bob-model-{x}", model_version="1", token_id=self.bobs, outcome="registered",
                             reason="auroc 0.91 meets the baseline 0.8", metric_name="auroc", metric_value=0.91, baseline_value=0.8),
            ])
            # alice's key acts for alice; a register key, as a data scientist's
            self.alice_key = keys.create(s, f"alice-laptop-{x}", ("read", "register"), user=self.alice).key
        self.her_event = add_event(pg_stack, self.teams, f"xray-{x}", "2")
        self.bobs_event = add_event(pg_stack, self.bobs, f"bob-model-{x}", "1")


@pytest.fixture
def tenants(pg_stack) -> Tenants:
    return Tenants(pg_stack)


def test_a_user_sees_only_the_tokens_decisions_and_events_they_may_read(pg_stack, console, tenants):
    t = tenants
    console.sign_in(t.alice_key)
    expect(heading(console, "Overview")).to_be_visible()
    expect(console.page.get_by_text(f"You see the tokens of user {t.alice}")).to_be_visible()
    # hers: her own draft, her team's registered token, and bob's team's token shared with hers
    assert stats(console, "Tokens") == {"Draft": "2", "Registered": "1", "Deployed": "0", "Archived": "0"}
    assert stats(console, "Decisions, last 24 h") == {"Registered": "1", "Rejected": "1"}  # not bob's
    expect(console.page.get_by_role("img", name=re.compile("1 registered, 1 rejected"))).to_be_visible()
    for operator in ("Outbox", "Relay workers", "Reconcile sweep"):
        expect(heading(console, operator)).to_have_count(0)
    expect(console.page.get_by_role("region", name="Problems")).to_have_count(0)
    assert console.page.get_by_text("no owner").count() == 0
    console.shot("overview-user")

    console.page.get_by_role("navigation", name="Sections").get_by_role("link", name="Tokens").click()
    rows = console.page.get_by_role("row")
    expect(rows.filter(has_text=t.mine).get_by_role("cell", name=t.alice, exact=True)).to_be_visible()
    expect(rows.filter(has_text=t.teams).get_by_text(f"{t.team_a} (team)")).to_be_visible()
    expect(rows.filter(has_text=t.shared).get_by_text(f"{t.team_b} (team)")).to_be_visible()
    for hidden in (t.bobs, t.nobodys):
        expect(console.page.get_by_role("link", name=hidden)).to_have_count(0)
    assert rows.count() == 4  # the header and her three: the page is hers, not a filtered page of all
    console.shot("tokens-user")

    console.page.get_by_role("link", name=t.teams).click()
    expect(heading(console, f"Token {t.teams} registered")).to_be_visible()
    expect(console.page.get_by_role("row").filter(has_text=f"xray-{t.suffix} v1").get_by_text("rejected")).to_be_visible()
    console.page.get_by_role("link", name=t.her_event).click()
    expect(heading(console, "Event token_ready_for_deploy")).to_be_visible()

    # someone else's token and event read exactly as unknown ones: 404, the same words
    for path, words in ((f"/console/tokens/{t.bobs}", f"Unknown token '{t.bobs}'"),
                        (f"/console/tokens/{t.nobodys}", f"Unknown token '{t.nobodys}'"),
                        (f"/console/events/{t.bobs_event}", f"No event '{t.bobs_event}'")):
        response = console.open(path)
        assert response.status == 404, path
        expect(console.page.get_by_role("alert")).to_contain_text(words)
        assert t.bob not in console.page.content()
    unknown = console.open("/console/tokens/NO-SUCH-" + t.bobs)
    assert unknown.status == 404

    console.open("/console/events")
    expect(console.page.get_by_role("link", name=t.her_event[:8])).to_be_visible()
    expect(console.page.get_by_role("link", name=t.bobs_event[:8])).to_have_count(0)
    console.open(f"/console/events?token={t.bobs}")  # naming bob's token in the filter finds nothing
    expect(console.page.get_by_text("No event matches.")).to_be_visible()
    console.open("/console/tokens?unowned=yes")  # nor do tokens nobody owns show to a user
    expect(console.page.get_by_role("link", name=t.nobodys)).to_have_count(0)


def test_an_admin_sees_every_token_and_is_warned_of_tokens_with_no_owner(pg_stack, console, tenants):
    t = tenants
    console.sign_in(pg_stack.api_key("admin", name="ops-admin"))
    warning = console.page.get_by_role("status").filter(has_text="no owner")
    expect(warning).to_be_visible()
    expect(warning.get_by_role("heading", name=re.compile(r"^\d+ tokens? (has|have) no owner: only admin keys reach (it|them)$"))).to_be_visible()
    expect(warning.get_by_text("hokusai token set-owner ID NAME")).to_be_visible()
    expect(warning.get_by_text("hokusai token list --unowned")).to_be_visible()
    for operator in ("Outbox", "Relay workers", "Reconcile sweep"):
        expect(heading(console, operator)).to_be_visible()
    console.shot("overview-admin-unowned")

    warning.get_by_role("link", name="See the tokens with no owner").click()
    assert "unowned=yes" in console.page.url
    # the database is shared with other tests' unowned tokens: narrowed to this test's own
    console.open("/console" + console.page.url.split("/console", 1)[1] + f"&q={t.suffix}")
    expect(console.page.get_by_role("row").filter(has_text=t.nobodys).get_by_text("no owner — admins only")).to_be_visible()
    expect(console.page.get_by_role("link", name=t.mine)).to_have_count(0)

    console.open(f"/console/tokens?q={t.suffix}")
    rows = console.page.get_by_role("row")
    for token_id, owner in ((t.mine, t.alice), (t.teams, f"{t.team_a} (team)"), (t.bobs, t.bob),
                            (t.shared, f"{t.team_b} (team)"), (t.nobodys, "no owner — admins only")):
        expect(rows.filter(has_text=token_id).get_by_role("cell", name=owner, exact=True)).to_be_visible()

    console.page.get_by_role("link", name=t.shared, exact=True).click()
    facts = console.page.get_by_role("definition")
    expect(facts.filter(has_text=f"{t.team_a} (team): read")).to_be_visible()  # who it is shared with
    console.open(f"/console/events/{t.bobs_event}")
    expect(console.page.get_by_role("button", name="Redeliver")).to_be_visible()


# -- API keys ----------------------------------------------------------------------------------------


def test_an_admin_creates_a_key_sees_it_once_and_revokes_it(pg_stack, console):
    console.sign_in(pg_stack.api_key("admin"))
    console.page.get_by_role("link", name="API keys").click()
    name = f"ci-{uuid.uuid4().hex[:6]}"
    console.page.get_by_label("Name").fill(name)
    console.page.get_by_label("read", exact=True).check()
    console.page.get_by_label("register").check()
    console.page.get_by_label("Expires after (optional)").fill("90d")
    console.page.get_by_role("button", name="Create key").click()
    expect(console.page.get_by_text("it is shown this once")).to_be_visible()
    new_key = console.page.get_by_role("textbox", name="New API key").input_value()
    assert new_key.startswith("hk_")
    console.page.get_by_role("button", name="Copy").click()
    expect(console.page.get_by_role("button", name="Copied")).to_be_visible()  # our script ran under the CSP
    api = pg_stack.receiver.url + "/api/v1/tokens"
    assert requests.get(api, headers={"Authorization": f"Bearer {new_key}"}, timeout=30).status_code == 200

    console.page.get_by_role("link", name="API keys").click()
    assert new_key not in console.page.content()  # once only
    row = console.page.get_by_role("row").filter(has_text=name)
    expect(row.get_by_text("read, register")).to_be_visible()
    expect(row.get_by_text("active")).to_be_visible()
    row.get_by_role("button", name=re.compile("Revoke")).click()
    expect(console.page.get_by_text(f"({name}) is revoked")).to_be_visible()
    expect(console.page.get_by_role("row").filter(has_text=name).get_by_text("revoked")).to_be_visible()
    assert requests.get(api, headers={"Authorization": f"Bearer {new_key}"}, timeout=30).status_code == 401

    console.page.get_by_label("Name").fill("bad-expiry")
    console.page.get_by_label("Expires after (optional)").fill("soon")
    console.page.get_by_role("button", name="Create key").click()
    assert "is not a duration" in console.page.get_by_role("alert").inner_text()


def test_an_admin_creates_a_key_for_a_user_and_the_keys_page_lists_each_keys_user(pg_stack, browser, console, tenants):
    t = tenants
    console.sign_in(pg_stack.api_key("admin", name="ops-admin"))
    console.page.get_by_role("link", name="API keys").click()
    name = f"alice-ci-{t.suffix}"
    console.page.get_by_label("Name").fill(name)
    console.page.get_by_label("User").fill(t.alice)
    console.page.get_by_label("register").check()
    console.page.get_by_role("button", name="Create key").click()
    expect(console.page.get_by_role("heading", name=re.compile(f"\\({name}\\) is created for user {t.alice}$"))).to_be_visible()
    new_key = console.page.get_by_role("textbox", name="New API key").input_value()
    rows = console.page.get_by_role("row")
    expect(rows.filter(has_text=name).get_by_role("cell", name=t.alice, exact=True)).to_be_visible()
    expect(rows.filter(has_text="(this session)").get_by_role("cell", name="none: an operator's")).to_be_visible()
    console.shot("keys-user")

    # without a user, a read key acts for a user of its own name, as 'hokusai apikey create' does
    own = f"own-{t.suffix}"
    console.page.get_by_label("Name").fill(own)
    console.page.get_by_role("button", name="Create key").click()
    expect(console.page.get_by_role("heading", name=re.compile(f"is created for user {own}$"))).to_be_visible()
    own_row = console.page.get_by_role("row").filter(has_text=own)
    expect(own_row.get_by_role("cell", name=own, exact=True)).to_have_count(2)  # its name, and its user's

    for user, words in ((f"nobody-{t.suffix}", f"No user named 'nobody-{t.suffix}'"), (t.team_a, f"'{t.team_a}' is a team, not a user")):
        console.page.get_by_label("Name").fill(f"stray-{t.suffix}")
        console.page.get_by_label("User").fill(user)
        console.page.get_by_role("button", name="Create key").click()
        expect(console.page.get_by_role("alert")).to_contain_text(words)
        expect(console.page.get_by_label("User")).to_have_value(user)  # the form keeps what was typed
    with pg_stack.sessions() as s:
        assert not [k for k in keys.list_keys(s) if k.name == f"stray-{t.suffix}"]

    # the new key reaches alice's tokens and no one else's
    theirs = Console(browser, pg_stack.receiver.url)
    try:
        theirs.sign_in(new_key)
        theirs.open(f"/console/tokens?q={t.suffix}")
        expect(theirs.page.get_by_role("link", name=t.mine)).to_be_visible()
        expect(theirs.page.get_by_role("link", name=t.bobs)).to_have_count(0)
    finally:
        theirs.close()


# -- without a browser: the cookie behind a proxy, and the pages' server time ------------------------


def test_the_cookie_is_secure_behind_an_https_proxy(pg_stack):
    from webhook_app import create_app

    key = pg_stack.api_key("read")
    for proxied, secure in ((True, True), (False, False)):
        app = create_app({**pg_stack.receiver_config, "HOKUSAI_RELAY": False, "HOKUSAI_PROXY_FIX": proxied})
        client = app.test_client()
        # over https, the CSRF check also wants a Referer of this origin (browsers send one: same-origin policy)
        forwarded = {"X-Forwarded-Proto": "https", "Referer": "https://localhost/console/login"}
        page = client.get("/console/login", headers=forwarded)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        signed_in = client.post("/console/login", data={"key": key, "csrf_token": token}, headers=forwarded)
        assert signed_in.status_code == 302
        cookie = signed_in.headers["Set-Cookie"]
        assert ("; Secure" in cookie) is secure, cookie
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


# The most rows one statement of a page may read: a list shows 50 rows, a token's timeline its own
# events, the overview's chart one row an hour (336 for 14 days); 100,000-row tables are read by
# index and aggregate, never whole (100,000 rows), so a wide margin still tells the two apart.
MOST_ROWS = 1000
# The most statements one page may make: it runs a fixed handful, whatever the size of the tables
# (one per row would be hundreds here).
MOST_STATEMENTS = 25


def test_every_page_answers_on_big_tables_and_reads_no_whole_table(pg_url):
    """100,000 tokens, 100,000 registrations (about 1,000 a day), 50,000 events with their
    deliveries and attempts: every page answers, no statement of it reads more than a page's worth
    of rows, and it makes a fixed handful of statements (no one per row). Its time is measured by
    bench/bench_console.py (BENCHMARKS.md), not here."""
    from hokusai_mlflow_plugin.db.session import get_engine, session_factory
    from webhook_app import create_app

    n, events = 100_000, 50_000
    with get_engine(pg_url).begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO hokusai_tokens (token_id, status, metric_name, baseline_value, created_at, updated_at) "
            "SELECT 'BIG-' || i, CASE WHEN i % 3 = 0 THEN 'registered' ELSE 'draft' END, 'auroc', 0.8, "
            "now() - (i || ' seconds')::interval, now() FROM generate_series(1, :n) i"), {"n": n})
        conn.execute(sa.text(
            "INSERT INTO hokusai_registrations (model_name, model_version, token_id, outcome, reason, metric_name, "
            "metric_value, baseline_value, created_at) SELECT 'big-model', i::text, 'BIG-' || (i % 1000 + 1), "
            "CASE WHEN i % 4 = 0 THEN 'rejected' ELSE 'registered' END, 'a reason', 'auroc', 0.85, 0.8, "
            "now() - (i * 90 || ' seconds')::interval FROM generate_series(1, :n) i"), {"n": n})  # ~1,000 a day
        conn.execute(sa.text(
            "INSERT INTO hokusai_outbox (event_id, event_type, payload, created_at) SELECT gen_random_uuid()::text, "
            "'token_ready_for_deploy', json_build_object('token_id', 'BIG-' || (i % 1000 + 1), 'model_name', 'big-model', "
            "'model_version', i::text), now() - (i || ' seconds')::interval FROM generate_series(1, :n) i"), {"n": events})
        conn.execute(sa.text(
            "INSERT INTO hokusai_deliveries (event_id, outbox_id, sink, status, attempts, next_attempt_at, horizon_start, created_at) "
            "SELECT event_id, id, 'webhook:big', CASE WHEN id % 100 = 0 THEN 'dead' WHEN id % 50 = 0 THEN 'failed' ELSE 'delivered' END, "
            "1, now(), now(), created_at FROM hokusai_outbox"))
        conn.execute(sa.text(
            "INSERT INTO hokusai_delivery_attempts (delivery_id, attempted_at, status_code, latency_ms) "
            "SELECT id, created_at, 200, 3.5 FROM hokusai_deliveries"))
        event_id = conn.execute(sa.text("SELECT event_id FROM hokusai_outbox ORDER BY id DESC LIMIT 1")).scalar()
    with get_engine(pg_url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))  # what autovacuum does to a table this size
    with session_factory(pg_url).begin() as s:
        key = keys.create(s, "bench", ("admin",)).key

    app = create_app({"HOKUSAI_WEBHOOK_SECRETS": ("bench-secret",), "HOKUSAI_DATABASE_URL": pg_url,
                      "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "HOKUSAI_RELAY": False})
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/console/login").text).group(1)
    assert client.post("/console/login", data={"key": key, "csrf_token": token}).status_code == 302
    read = []  # (rows, statement) of every statement the page runs

    def count(conn, cursor, statement, parameters, context, executemany):
        read.append((cursor.rowcount, statement))

    sa.event.listen(get_engine(pg_url), "after_cursor_execute", count)
    try:
        for path in ["/console/", "/console/tokens", "/console/tokens?status=registered", "/console/tokens?q=BIG-99",
                     "/console/tokens/BIG-500", "/console/events", "/console/events?status=dead",
                     "/console/events?token=BIG-7", f"/console/events/{event_id}", "/console/keys",
                     "/console/events/redeliver-dead"]:
            read.clear()
            response = client.get(path)
            assert response.status_code == 200, (path, response.text[:500])
            assert read, path
            rows, statement = max(read, key=lambda r: r[0])
            assert rows <= MOST_ROWS, f"{path} read {rows} rows in one statement: {statement[:300]}"
            assert len(read) <= MOST_STATEMENTS, f"{path} made {len(read)} statements"
    finally:
        sa.event.remove(get_engine(pg_url), "after_cursor_execute", count)
