"""People in the MLflow UI through the gateway, in a real headless Chromium (issue 20): a person
signs in once at the console with an API key, finds in the MLflow UI the run that a training script
logged with HOKUSAI_TOKEN_ID, registers its model by clicks, and sees the version registered for
the token; a read key sees the UI but its registration fails visibly and makes nothing; a page on
another origin that posts with the person's cookie is refused; after sign-out the UI sends the
person to the sign-in. A live stack: real MLflow, PostgreSQL, receiver, console and gateway.

Screenshots go to tests/screenshots/mlflow-ui/ (look at them)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.db.models import Registration
from tests.harness import respond
from tests.live_stack import MlflowUi
from tests.webhook_app.test_console import ARGS, CHROMIUM, SCREENSHOTS, browser  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parents[2]
WAIT = 90_000  # ms for what a page shows: MLflow's pages load 4 MB of scripts, slow on a busy machine
SHOTS = SCREENSHOTS / "mlflow-ui"
TRAINING = """
import mlflow
from tests.mlflow_helpers import log_model

with mlflow.start_run(run_name={run_name!r}) as run:
    mlflow.log_metric("auroc", 0.91)
    log_model()
print(run.info.run_id)
"""


@pytest.fixture(scope="module")
def ui(stack_postgres):
    ui = MlflowUi(stack_postgres)
    yield ui
    ui.stop()


class Person:
    """One person's browser, at the MLflow UI through the gateway."""

    def __init__(self, chromium, ui: MlflowUi, name: str):
        self.ui, self.name = ui, name
        self.context = chromium.new_context(viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(WAIT)
        self.refused: list[str] = []  # every answer of the gateway that refused a request of the UI's
        self.context.on("response", self._seen)

    def _seen(self, response) -> None:
        if response.url.startswith(self.ui.gateway) and response.status in (401, 403):
            self.refused.append(f"{response.status} {response.request.method} {response.url}")

    def sign_in_at_the_ui(self, key: str) -> None:
        """Open the UI with no session: the console's sign-in, then back to the UI."""
        self.page.goto(self.ui.ui)
        expect(self.page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=WAIT)
        assert self.page.url.startswith(self.ui.console.url + "/console/login?next=")
        expect(self.page.get_by_role("status")).to_contain_text("Sign in to go on to the MLflow UI", timeout=WAIT)
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(self.ui.ui + "**")

    def open_the_logged_model_of(self, run_name: str):
        """The run's page as a person finds it (model training, the experiment, the run), then its
        logged model's page (MLflow opens it in a tab of its own)."""
        page = self.page
        page.get_by_text("Model training", exact=True).click(no_wait_after=True)
        page.get_by_role("link", name=f"Default ({self.name})").click(no_wait_after=True)
        page.get_by_role("link", name=run_name).click(no_wait_after=True)
        expect(page.get_by_role("heading", name=run_name)).to_be_visible(timeout=WAIT)
        self.shot("run")
        with self.context.expect_page() as opened:
            page.get_by_role("link", name="model", exact=True).first.click()
        model_page = opened.value
        model_page.set_default_timeout(WAIT)
        expect(model_page.get_by_role("button", name="Register model")).to_be_visible(timeout=WAIT)
        return model_page

    def register_as_new_model(self, page, model_name: str) -> None:
        page.get_by_role("button", name="Register model").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_role("combobox").click()
        page.get_by_text("Create New Model", exact=True).click()
        dialog.get_by_placeholder("Input a model name").fill(model_name)
        self.shot("register-dialog", page)
        dialog.get_by_role("button", name="Register").click()

    def shot(self, name: str, page=None) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        (page or self.page).screenshot(path=str(SHOTS / f"{name}.png"))

    def close(self) -> None:
        self.context.close()


def train(ui: MlflowUi, key: str, token_id: str, run_name: str) -> str:
    """A training script, run as a user runs it: plain MLflow at the gateway with the key in
    MLFLOW_TRACKING_TOKEN, and HOKUSAI_TOKEN_ID set. The run's id."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": ui.gateway + "/mlflow", "MLFLOW_TRACKING_TOKEN": key,
           "HOKUSAI_TOKEN_ID": token_id, "PYTHONPATH": str(ROOT)}
    for var in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "HOKUSAI_METRIC", "HOKUSAI_BASELINE"):
        env.pop(var, None)
    script = ui.stack.mlflow.workdir / "train.py"  # what the UI shows as the run's source
    script.write_text(TRAINING.format(run_name=run_name))
    done = subprocess.run([sys.executable, str(script)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split()[-1]


def person_with_a_token(ui: MlflowUi, *scopes: str) -> tuple[str, str, str, str]:
    """A user with a key of ``scopes``, a draft token they own, and a run their training script
    logged for it: (user, key, token id, run name)."""
    user = f"ui-{uuid.uuid4().hex[:6]}"
    with ui.stack.sessions.begin() as s:
        writer = keys.create(s, user, ("register",)).key  # the training script's, acting for the user
        key = keys.create(s, f"{user}-browser", scopes, user=user).key
    token_id = f"UI-{uuid.uuid4().hex[:8].upper()}"
    ui.stack.create_token(token_id, owner=user)
    run_name = f"training-{token_id.lower()}"
    train(ui, writer, token_id, run_name)
    return user, key, token_id, run_name


def wait_for(condition, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def test_a_register_key_registers_a_model_by_clicks_and_the_token_is_registered(ui, browser):  # noqa: F811
    user, key, token_id, run_name = person_with_a_token(ui, "register")
    model_name = f"ui-model-{token_id.lower()}"
    person = Person(browser, ui, user)
    try:
        person.sign_in_at_the_ui(key)
        person.shot("signed-in")
        page = person.open_the_logged_model_of(run_name)
        person.shot("logged-model", page)
        person.register_as_new_model(page, model_name)

        # The new version is linked on the logged model's page; its page shows the outcome as soon
        # as the receiver has decided (a reload until it does: MLflow's page does not poll).
        page.get_by_role("link", name=model_name).first.click()
        expect(page.get_by_role("heading", name="Version 1")).to_be_visible(timeout=WAIT)
        outcome = page.get_by_role("row").filter(has_text="hokusai_status")

        def shows_registered():
            if outcome.count() and "registered" in outcome.first.inner_text():
                return True
            page.reload()
            expect(page.get_by_role("heading", name="Version 1")).to_be_visible(timeout=WAIT)
            return False

        wait_for(shows_registered, f"{model_name} v1's page showing hokusai_status = registered")
        expect(outcome.first).to_contain_text("registered", timeout=WAIT)
        person.shot("version-registered", page)
        token = ui.stack.token(token_id)
        assert (token["status"], token["model_name"], token["model_version"]) == ("registered", model_name, "1")
        assert person.refused == [] or all("assistant" in r or "gateway-proxy" in r for r in person.refused), person.refused
    finally:
        person.close()


def test_a_read_key_sees_the_ui_but_its_registration_fails_visibly_and_makes_nothing(ui, browser):  # noqa: F811
    user, key, token_id, run_name = person_with_a_token(ui, "read")
    model_name = f"ui-read-{token_id.lower()}"
    person = Person(browser, ui, user)
    try:
        person.sign_in_at_the_ui(key)
        page = person.open_the_logged_model_of(run_name)  # the UI, the run and its model: all readable
        person.register_as_new_model(page, model_name)
        notice = page.get_by_role("alert").filter(has_text="Error registering model")
        expect(notice).to_contain_text("lacks the 'register' scope", timeout=WAIT)
        person.shot("read-key-refused", page)
        assert any(r.startswith("403 POST") and "registered-models/create" in r for r in person.refused), person.refused
        assert ui.stack.client.search_registered_models(f"name = '{model_name}'") == []
        with ui.stack.sessions() as s:
            assert s.scalars(sa.select(Registration).where(Registration.token_id == token_id)).all() == []
        assert ui.stack.token(token_id)["status"] == "draft"
    finally:
        person.close()


class Evil(BaseHTTPRequestHandler):
    """A page on another origin that, once opened, posts to the gateway with whatever cookie the
    browser holds for it: a form (no preflight: the classic CSRF) and a no-cors fetch."""

    target = ""

    def do_GET(self):
        body = f"""<!doctype html><title>Cute cats</title>
<form id="f" method="post" enctype="text/plain"
      action="{self.target}ajax-api/2.0/mlflow/registered-models/create">
<input name='{{"name": "evil-form", "x": "' value='"}}'></form>
<script>
fetch("{self.target}ajax-api/2.0/mlflow/registered-models/create",
      {{method: "POST", mode: "no-cors", credentials: "include", body: JSON.stringify({{name: "evil-fetch"}})}})
  .finally(() => document.getElementById("f").submit());
</script>""".encode()
        respond(self, body, "text/html")

    def log_message(self, *args):
        pass


def test_a_page_on_another_origin_that_posts_with_the_persons_cookie_is_refused(ui, browser):  # noqa: F811
    user = f"victim-{uuid.uuid4().hex[:6]}"
    key = ui.stack.api_key("register", name=user)
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("EvilPage", (Evil,), {"target": ui.ui}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    person = Person(browser, ui, user)
    try:
        person.sign_in_at_the_ui(key)
        creates = "registered-models/create"
        # Another origin on the same host: the cookie goes with its requests (SameSite sees one
        # site), so it is the gateway's Origin rule that refuses them.
        with person.page.expect_response(lambda r: creates in r.url and r.request.resource_type == "fetch") as fetched, \
                person.page.expect_response(lambda r: creates in r.url and r.request.resource_type == "document") as posted:
            person.page.goto(f"http://127.0.0.1:{server.server_port}/")
        assert (fetched.value.request.method, fetched.value.status) == ("POST", 403)
        assert (posted.value.request.method, posted.value.status) == ("POST", 403)
        assert posted.value.request.all_headers().get("cookie", "").count("hokusai_session=") == 1  # the cookie did go
        expect(person.page.get_by_text("CSRF")).to_be_visible(timeout=WAIT)
        person.shot("csrf-refused")
        for name in ("evil-form", "evil-fetch"):
            assert ui.stack.client.search_registered_models(f"name = '{name}'") == []
    finally:
        person.close()
        server.shutdown()
        server.server_close()


def test_after_sign_out_the_ui_sends_the_person_to_the_sign_in(ui, browser):  # noqa: F811
    user = f"leaving-{uuid.uuid4().hex[:6]}"
    person = Person(browser, ui, user)
    try:
        person.sign_in_at_the_ui(ui.stack.api_key("read", name=user))
        expect(person.page.get_by_text("Experiments").first).to_be_visible(timeout=WAIT)
        person.page.goto(ui.console.url + "/console/")
        person.page.get_by_role("button", name="Sign out").click()
        expect(person.page.get_by_text("You are signed out.")).to_be_visible(timeout=WAIT)
        person.page.goto(ui.ui + "#/experiments")
        expect(person.page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=WAIT)
        assert person.page.url.startswith(ui.console.url + "/console/login?next=")
        person.shot("signed-out")
    finally:
        person.close()
