"""Every route of the API and the console, called with someone else's objects: OWASP's
authorization testing matrix, generated from the app's own route table (Flask's ``url_map``)
and checked against the OpenAPI document.

Two tenants: alice (team A) and bob with his teammate carol (team B). Each route is called by
alice's key (every scope but admin) with bob's token, registration, event, key, user and team, and must answer
404 (hidden: as if it did not exist) or 403 (admin work), with nothing changed in the database;
lists answer 200 without bob's objects. A route that this table does not classify fails the test
(default deny), and so does an API route that the app itself has no access decision for.
Teammates and grants are the positive cases: carol reads bob's token, and a ``read`` grant lets
alice read a token but not register for it."""

from __future__ import annotations

import re
import uuid

import pytest
import sqlalchemy as sa

from hokusai_mlflow_plugin.auth import keys, principals
from hokusai_mlflow_plugin.db.migrate import upgrade
from hokusai_mlflow_plugin.db.models import (
    DEAD,
    EXPERIMENT,
    REGISTERED_MODEL,
    TEAM,
    USER,
    Base,
    Delivery,
    MlflowObject,
    OutboxEvent,
    Registration,
    SignInSession,
    utcnow,
)
from hokusai_mlflow_plugin.db.session import dispose, session_factory
from hokusai_mlflow_plugin.registration import tokens
from tests.harness import create_pg_database, drop_pg_database, respond
from webhook_app import create_app
from webhook_app.access import FILTERED, OBJECT, OPERATOR, PUBLIC, SELF
from webhook_app.api.auth import ACCESS
from webhook_app.console.signin import ACCESS as CONSOLE_ACCESS

# Routes outside the API and the console: MLflow's webhook (signed, no keys), probes, files.
OUTSIDE = {"hokusai.mlflow_webhook", "hokusai.health", "hokusai.ready", "hokusai.metrics", "static", "console.static"}

BOB_TOKEN, SHARED_TOKEN, ALICE_TOKEN = "BOB1", "SHARED1", "ALICE1"
BOB_EXPERIMENT = "41"  # an MLflow experiment of team B's (the shares' routes)
MODEL_URI = "models:/m-" + "0" * 32


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    """Two tenants and their objects on a fresh token database; the app over it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('matrix') / 'tokens.db'}"
    else:
        url = create_pg_database("hokusai_matrix")
    upgrade(url)
    sessions = session_factory(url)
    with sessions.begin() as s:
        for name in ("alice", "bob", "carol"):
            principals.create(s, name, USER)
        for name in ("team-a", "team-b"):
            principals.create(s, name, TEAM)
        principals.add_member(s, "team-a", "alice")
        principals.add_member(s, "team-b", "bob")
        principals.add_member(s, "team-b", "carol")
        tokens.create(s, BOB_TOKEN, "auroc", 0.8, owner="team-b")
        tokens.create(s, SHARED_TOKEN, "auroc", 0.8, owner="team-b")
        tokens.grant(s, SHARED_TOKEN, "team-a", "read")
        tokens.create(s, ALICE_TOKEN, "auroc", 0.8, owner="alice")
        for kind, object_id in ((EXPERIMENT, BOB_EXPERIMENT), (REGISTERED_MODEL, "bob-model")):  # team B's in MLflow
            s.add(MlflowObject(kind=kind, object_id=object_id, owner_id=principals.find(s, "team-b").id,
                               creator_id=principals.find(s, "bob").id, key_id="bob"))
        made = {
            "alice": keys.create(s, "alice-laptop", ("read", "register", "deploy"), user="alice"),
            "alice_read": keys.create(s, "alice-read", ("read",), user="alice"),
            "carol": keys.create(s, "carol-laptop", ("read", "register"), user="carol"),
            "bob": keys.create(s, "bob-laptop", ("read", "register"), user="bob"),
            "admin": keys.create(s, "operator", ("admin",)),
        }
        s.add(Registration(model_name="bob-model", model_version="1", token_id=BOB_TOKEN, outcome="rejected",
                           reason="auroc 0.5 is below the baseline 0.8.", metric_name="auroc", metric_value=0.5,
                           baseline_value=0.8, mlflow_run_id="b" * 32))
        events = {}
        for token_id in (BOB_TOKEN, ALICE_TOKEN):
            event_id = str(uuid.uuid4())
            s.add(OutboxEvent(event_id=event_id, event_type="token_ready_for_deploy", created_at=utcnow(),
                              payload={"token_id": token_id, "model_name": "m", "model_version": "1"}))
            s.flush()
            s.add(Delivery(event_id=event_id, outbox_id=0, sink="console", status=DEAD, attempts=9, last_error="HTTP 500"))
            events[token_id] = event_id
    app = create_app({
        "HOKUSAI_DATABASE_URL": url, "HOKUSAI_WEBHOOK_SECRETS": ("matrix-secret",),
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "HOKUSAI_RELAY": False, "TESTING": True,
        "SECRET_KEY": "matrix",
    })
    yield {"app": app, "url": url, "keys": {k: v.key for k, v in made.items()},
           "key_ids": {k: v.record["key_id"] for k, v in made.items()}, "events": events}
    dispose(url)
    if request.param == "postgresql":
        drop_pg_database(url)


def routes(app):
    """(endpoint, method, rule) of every route the app serves."""
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, rule


def decision_of(endpoint: str) -> str | None:
    """The decision the app itself holds for the endpoint: the API's table or the console's."""
    table = ACCESS if endpoint.startswith("api.") else CONSOLE_ACCESS if endpoint.startswith("console.") else {}
    access = table.get(endpoint.partition(".")[2])
    return access.ownership if access else None


def snapshot(url: str) -> dict:
    """Every row of every Hokusai table, except when keys were last used (a read records it) and
    the sessions (each console call signs in, which writes one; a sign-out ends it)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            found = {}
            for table in Base.metadata.sorted_tables:
                if table.name == SignInSession.__tablename__:
                    continue
                columns = [c for c in table.columns if c.name != "last_used_at"]
                found[table.name] = sorted(map(repr, conn.execute(sa.select(*columns)).all()))
            return found
    finally:
        engine.dispose()


def bobs_path(rule, world) -> str:
    """The rule's path with bob's objects in its variables."""
    values = {"token_id": BOB_TOKEN, "event_id": world["events"][BOB_TOKEN], "key_id": world["key_ids"]["bob"],
              "user": "bob", "filename": "console.css", "experiment_id": BOB_EXPERIMENT, "model_name": "bob-model"}
    if "name" in rule.arguments:
        values["name"] = "team-b" if "/teams" in rule.rule else "bob"
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: values[m.group(1)], rule.rule)


# Bodies that are valid, so that what refuses the request is the decision, never the validation.
BODIES = {
    "api.register_model": {"token_id": BOB_TOKEN, "model_uri": MODEL_URI},
    "api.create_token": {"token_id": "NEW-" + uuid.uuid4().hex[:6], "owner": "team-b"},
    "api.set_token_owner": {"owner": "alice"},
    "api.grant_token": {"permission": "register"},
    "api.create_user": {"name": "mallory"},
    "api.create_team": {"name": "team-m"},
    "api.create_api_key": {"name": "stolen", "scopes": ["admin"], "user": "bob"},
    "api.deploy_token": {"model_name": "bob-model", "version": "1", "target": "production"},
    "api.archive_token": {"reason": "taken over"},
    "api.share_experiment": {"permission": "edit"},
    "api.share_model": {"permission": "edit"},
}
FORMS = {"console.key_create": {"name": "stolen", "scope": "admin"}, "console.redeliver_dead": {"confirm": "yes"}}


def csrf_of(client, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def signed_in(app, key: str):
    """A console session of ``key``, and the CSRF token its forms carry."""
    client = app.test_client()
    answer = client.post("/console/login", data={"key": key, "csrf_token": csrf_of(client, "/console/login")})
    assert answer.status_code == 302, answer.text
    return client, csrf_of(client, "/console/tokens")


def call(world, endpoint, method, path, key, body=None):
    app = world["app"]
    if endpoint.startswith("api."):
        client = app.test_client()
        headers = {"Authorization": f"Bearer {key}"}
        return client.open(path, method=method, headers=headers,
                           json=(body or BODIES.get(endpoint)) if method != "GET" else None)
    client, csrf = signed_in(app, key)
    return client.open(path, method=method, data={**FORMS.get(endpoint, {}), "csrf_token": csrf} if method == "POST" else None)


def test_every_route_has_an_access_decision(world):
    """Default deny: a route of the API or the console that the app does not classify fails."""
    undecided = [(e, m, r.rule) for e, m, r in routes(world["app"]) if e not in OUTSIDE and decision_of(e) is None]
    assert undecided == [], f"routes without an access decision: {undecided}"
    served = {r.endpoint.partition(".")[2] for r in world["app"].url_map.iter_rules()}
    assert set(ACCESS) <= served and set(CONSOLE_ACCESS) <= served  # no decision for a route that is gone


def test_the_openapi_document_lists_exactly_the_api_routes(world):
    document = world["app"].test_client().get("/api/v1/openapi.json").json
    documented = {(m.upper(), re.sub(r"\{([^}]+)\}", r"<\1>", p)) for p, ops in document["paths"].items() for m in ops}
    served = {(m, re.sub(r"<[^:>]+:", "<", r.rule)) for e, m, r in routes(world["app"])
              if e.startswith("api.") and e != "api.openapi_document"}
    assert documented == served
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            if path != "/api/v1/openapi.json":
                assert op.get("security") != [], f"{method} {path} is documented as public"


def test_an_undecided_route_is_refused(world):
    """What a route added without a decision gets: refused, however good the key (API and console)."""
    app = world["app"]
    admin = world["keys"]["admin"]
    saved = ACCESS.pop("list_tokens")
    try:
        answer = app.test_client().get("/api/v1/tokens", headers={"Authorization": f"Bearer {admin}"})
        assert answer.status_code == 403 and "no access decision" in answer.json["detail"]
    finally:
        ACCESS["list_tokens"] = saved
    client, _ = signed_in(app, admin)
    saved = CONSOLE_ACCESS.pop("token_list")
    try:
        answer = client.get("/console/tokens")
        assert answer.status_code == 403 and "no access decision" in answer.get_data(as_text=True)
    finally:
        CONSOLE_ACCESS["token_list"] = saved


GHOST_TOKEN, GHOST_EVENT = "NOBODY1", "00000000-0000-4000-8000-000000000000"


def _ghost(world, endpoint, path):
    """The same request (path and body) naming objects that do not exist."""
    path = path.replace(BOB_TOKEN, GHOST_TOKEN).replace(world["events"][BOB_TOKEN], GHOST_EVENT)
    body = {k: (GHOST_TOKEN if v == BOB_TOKEN else v) for k, v in BODIES.get(endpoint, {}).items()} or None
    return path, body


def _unnamed(body: str, world) -> str:
    body = re.sub(r'name="csrf_token" value="[^"]+"', "", body)  # each session's own
    return body.replace(BOB_TOKEN, "<id>").replace(GHOST_TOKEN, "<id>").replace(world["events"][BOB_TOKEN], "<id>") \
        .replace(GHOST_EVENT, "<id>")


def _matrix(world):
    return [(e, m, r) for e, m, r in routes(world["app"]) if e not in OUTSIDE]


def test_alice_meets_none_of_bobs_objects_on_any_route(world):
    """The matrix: every route, alice's key with every scope but admin (read, register, deploy), bob's objects."""
    seen_kinds = set()
    for endpoint, method, rule in _matrix(world):
        kind = decision_of(endpoint)
        seen_kinds.add(kind)
        path = bobs_path(rule, world)
        before = snapshot(world["url"])
        answer = call(world, endpoint, method, path, world["keys"]["alice"])
        where = f"{method} {path} ({endpoint}, {kind})"
        body = answer.get_data(as_text=True)
        if kind == OBJECT:
            assert answer.status_code == 404, f"{where}: {answer.status_code} {body[:300]}"
            # Hidden reads exactly as missing: the same answer for an id that names nothing.
            ghost_path, ghost_body = _ghost(world, endpoint, path)
            ghost = call(world, endpoint, method, ghost_path, world["keys"]["alice"], ghost_body)
            assert ghost.status_code == 404
            assert _unnamed(ghost.get_data(as_text=True), world) == _unnamed(body, world), where
        elif kind == OPERATOR:
            assert answer.status_code == 403, f"{where}: {answer.status_code} {body[:300]}"
        elif kind == SELF and method == "POST":  # signing out: back to the sign-in, nothing of bob's touched
            assert answer.status_code == 302 and answer.location.endswith("/console/login"), where
        elif kind in (FILTERED, SELF):
            assert answer.status_code == 200, f"{where}: {answer.status_code} {body[:300]}"
            assert BOB_TOKEN not in body and world["events"][BOB_TOKEN] not in body and "bob-model" not in body, where
        elif kind == PUBLIC:
            assert answer.status_code < 500, where
        if kind != PUBLIC:  # signing out or in changes nothing of bob's either, but writes sessions
            assert snapshot(world["url"]) == before, f"{where} changed the database"
    assert {OBJECT, OPERATOR, FILTERED} <= seen_kinds


def test_the_lists_show_alice_her_own_and_what_is_granted_to_her(world):
    api = world["app"].test_client()
    headers = {"Authorization": f"Bearer {world['keys']['alice']}"}
    listed = [t["token_id"] for t in api.get("/api/v1/tokens", headers=headers).json["items"]]
    assert sorted(listed) == [ALICE_TOKEN, SHARED_TOKEN]
    events = [e["event_id"] for e in api.get("/api/v1/events", headers=headers).json["items"]]
    assert events == [world["events"][ALICE_TOKEN]]
    me = api.get("/api/v1/me", headers=headers).json
    assert (me["user"], me["teams"], me["admin"]) == ("alice", ["team-a"], False)


def test_a_read_grant_shows_a_token_but_does_not_let_a_model_in(world):
    api = world["app"].test_client()
    headers = {"Authorization": f"Bearer {world['keys']['alice']}"}
    assert api.get(f"/api/v1/tokens/{SHARED_TOKEN}", headers=headers).status_code == 200
    before = snapshot(world["url"])
    answer = api.post("/api/v1/models/register", headers=headers, json={"token_id": SHARED_TOKEN, "model_uri": MODEL_URI})
    assert answer.status_code == 403 and "register grant" in answer.json["detail"], answer.json
    assert snapshot(world["url"]) == before


def test_the_scope_is_a_ceiling_on_a_teammates_rights(world):
    """carol's register key registers for her team's token; a read key of the same user would not."""
    api = world["app"].test_client()
    carol = {"Authorization": f"Bearer {world['keys']['carol']}"}
    assert api.get(f"/api/v1/tokens/{BOB_TOKEN}", headers=carol).status_code == 200
    assert api.get(f"/api/v1/events/{world['events'][BOB_TOKEN]}", headers=carol).status_code == 200
    assert [r["model_name"] for r in api.get("/api/v1/registrations", headers=carol).json["items"]] == ["bob-model"]
    reader = {"Authorization": f"Bearer {world['keys']['alice_read']}"}
    answer = api.post("/api/v1/models/register", headers=reader, json={"token_id": ALICE_TOKEN, "model_uri": MODEL_URI})
    assert answer.status_code == 403 and "'register' scope" in answer.json["detail"]


def test_an_admin_reaches_every_token_and_the_grants(world):
    api = world["app"].test_client()
    admin = {"Authorization": f"Bearer {world['keys']['admin']}"}
    listed = {t["token_id"] for t in api.get("/api/v1/tokens", headers=admin).json["items"]}
    assert {BOB_TOKEN, SHARED_TOKEN, ALICE_TOKEN} <= listed
    detail = api.get(f"/api/v1/tokens/{SHARED_TOKEN}", headers=admin).json
    assert detail["owner"] == "team-b" and detail["grants"] == [{"name": "team-a", "kind": "team", "permission": "read"}]
    alice = {"Authorization": f"Bearer {world['keys']['alice']}"}
    assert api.get(f"/api/v1/tokens/{SHARED_TOKEN}", headers=alice).json["grants"] is None


def test_every_gateway_route_has_an_access_decision_and_its_own_routes_take_no_id(sqlite_url):
    """The gateway's router, read as it is built: each route has its decision in ``gateway.ACCESS``
    (a new one without fails here), and its own routes answer the same to no key, a bad key and a
    stranger's, since they reach nobody's object. The catch-all's row, MLflow's routes: the test
    below, and route by route test_gateway_routes.py and test_gateway_teams.py."""
    from http.server import BaseHTTPRequestHandler

    import requests

    from tests.live_stack import gateway_in_front_of
    from webhook_app.gateway import ACCESS, PREFIX

    class NoMlflow(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the gateway's own routes never reach it
            self.send_error(599)

        def log_message(self, *args):
            pass

    with gateway_in_front_of(NoMlflow, sqlite_url) as gateway:
        routes = {r.resource.canonical for r in gateway.app.router.routes()}
        assert routes == set(ACCESS), f"routes without an access decision: {sorted(routes - set(ACCESS))}"
        for path in sorted(routes - {PREFIX + "{tail}"}):
            answers = {(a.status_code, a.headers.get("Location"))
                       for a in (requests.get(gateway.url + path, headers=h, allow_redirects=False, timeout=10)
                                 for h in ({}, {"Authorization": "Bearer hk_0000000000000000_nope"},
                                           {"Authorization": "Bearer hk_notakey"}))}
            expected = {(302, PREFIX + "/")} if path == PREFIX else {(200, None)}
            assert answers == expected, path


def test_the_mlflow_catch_all_answers_another_teams_id_as_a_missing_one(sqlite_url):
    """The gateway's ``/mlflow/{tail}`` row: an id that belongs to another team is answered exactly
    as an id that exists nowhere (404, the same words), and the request never reaches MLflow; the
    owner's key with the same id is forwarded. Judged from the gateway's own records, so a stand-in
    MLflow that only counts what reaches it is enough here (the same against a real MLflow, route by
    route: test_gateway_teams.py, test_gateway_routes.py)."""
    from http.server import BaseHTTPRequestHandler

    import requests

    from hokusai_mlflow_plugin.auth import keys, principals
    from hokusai_mlflow_plugin.db.models import EXPERIMENT, REGISTERED_MODEL, USER, MlflowObject
    from hokusai_mlflow_plugin.db.session import session_factory
    from tests.live_stack import gateway_in_front_of

    reached = []

    class Mlflow(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            reached.append(self.path)
            respond(self, b'{"stand_in": true}')

        def log_message(self, *args):
            pass

    with session_factory(sqlite_url).begin() as s:
        for who in ("alice", "mallory"):
            principals.create(s, who, USER)
        alice_id = principals.user_named(s, "alice").id
        for kind, object_id in ((EXPERIMENT, "7"), (REGISTERED_MODEL, "alices-model")):
            s.add(MlflowObject(kind=kind, object_id=object_id, owner_id=alice_id, creator_id=alice_id, key_id="test"))
        alice = keys.create(s, "alice", ("read",), user="alice").key
        mallory = keys.create(s, "mallory", ("read",), user="mallory").key

    base = "/mlflow/api/2.0/mlflow/"
    hers = {"experiments/get?experiment_id=7": "experiments/get?experiment_id=4242",
            "registered-models/get?name=alices-model": "registered-models/get?name=nobodys-model"}
    with gateway_in_front_of(Mlflow, sqlite_url) as gateway:
        def get(key, path):
            return requests.get(gateway.url + base + path, headers={"Authorization": f"Bearer {key}"}, timeout=10)

        for path, missing in hers.items():
            reached.clear()
            stranger, nowhere = get(mallory, path), get(mallory, missing)
            assert stranger.status_code == nowhere.status_code == 404, (path, stranger.text)
            words = lambda r: r.json()["message"].replace(path.split("=")[1], "ID").replace(missing.split("=")[1], "ID")  # noqa: E731
            assert words(stranger) == words(nowhere), (stranger.text, nowhere.text)
            assert reached == [], f"another team's id reached MLflow: {reached}"
            owner = get(alice, path)
            assert owner.status_code == 200 and owner.json() == {"stand_in": True}, owner.text
            assert reached == ["/api/2.0/mlflow/" + path], reached
