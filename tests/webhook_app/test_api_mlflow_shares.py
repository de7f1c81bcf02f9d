"""``/api/v1/mlflow/.../shares`` (issue 19), on SQLite and PostgreSQL: the owner's team shares its
experiment and registered model with another team (read, then edit) and takes the share away;
a reader of a share sees the shares but may not share on; a stranger finds nothing (404, as for a
missing object); a read key is a ceiling; an admin shares anything the gateway recorded."""

from __future__ import annotations

import pytest

from hokusai_mlflow_plugin.auth import keys, mlflow_objects, principals
from hokusai_mlflow_plugin.db.models import EXPERIMENT, REGISTERED_MODEL, TEAM, USER, MlflowObject
from hokusai_mlflow_plugin.db.session import session_factory
from webhook_app import create_app

EXP, MODEL = "/api/v1/mlflow/experiments/7/shares", "/api/v1/mlflow/registered-models/vision%20model/shares"


@pytest.fixture
def world(db_url):
    with session_factory(db_url).begin() as s:
        for name in ("alice", "bob", "carol", "dave"):
            principals.create(s, name, USER)
        for name in ("team-a", "team-b", "team-c"):
            principals.create(s, name, TEAM)
        for team, user in (("team-a", "alice"), ("team-a", "carol"), ("team-b", "bob"), ("team-c", "dave")):
            principals.add_member(s, team, user)
        team_a = principals.find(s, "team-a").id
        for kind, object_id in ((EXPERIMENT, "7"), (REGISTERED_MODEL, "vision model")):
            s.add(MlflowObject(kind=kind, object_id=object_id, owner_id=team_a, creator_id=team_a, key_id="seed"))
        made = {who: keys.create(s, f"{who}-key", ("read", "register"), user=who).key for who in ("alice", "bob", "carol", "dave")}
        made["alice_read"] = keys.create(s, "alice-read", ("read",), user="alice").key
        made["admin"] = keys.create(s, "operator", ("admin",)).key
    app = create_app({"HOKUSAI_DATABASE_URL": db_url, "HOKUSAI_WEBHOOK_SECRETS": ("s",), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
                      "HOKUSAI_RELAY": False, "TESTING": True})
    client = app.test_client()

    def call(method, path, who, body=None):
        return client.open(path, method=method, headers={"Authorization": f"Bearer {made[who]}"}, json=body)

    return call, db_url


def _right(db_url, user, kind, object_id):
    with session_factory(db_url)() as s:
        return mlflow_objects.user_right(s, principals.find(s, user).id, kind, object_id)


@pytest.mark.parametrize("path, kind, object_id", [(EXP, EXPERIMENT, "7"), (MODEL, REGISTERED_MODEL, "vision model")])
def test_the_owner_shares_read_then_edit_and_takes_it_away(world, path, kind, object_id):
    call, db_url = world
    assert call("GET", path, "bob").status_code == 404  # team B's view: nothing there
    assert _right(db_url, "bob", kind, object_id) == mlflow_objects.NONE
    answer = call("PUT", f"{path}/team-b", "alice", {"permission": "read"})
    assert answer.status_code == 200, answer.text
    assert answer.json == {"kind": kind, "object_id": object_id, "owner": "team-a",
                           "shares": [{"name": "team-b", "kind": "team", "permission": "read"}]}
    assert _right(db_url, "bob", kind, object_id) == mlflow_objects.READ
    assert call("GET", path, "bob").json["shares"] == [{"name": "team-b", "kind": "team", "permission": "read"}]
    # a reader may not share on, nor change its own share
    refused = call("PUT", f"{path}/team-c", "bob", {"permission": "read"})
    assert refused.status_code == 403 and "Only the owner" in refused.json["detail"]
    # carol, alice's teammate, owns it as much as alice does: edit for team B
    assert call("PUT", f"{path}/team-b", "carol", {"permission": "edit"}).json["shares"][0]["permission"] == "edit"
    assert _right(db_url, "bob", kind, object_id) == mlflow_objects.EDIT
    edit_only = call("PUT", f"{path}/team-c", "bob", {"permission": "read"})
    assert edit_only.status_code == 403 and "Only the owner" in edit_only.json["detail"]
    gone = call("DELETE", f"{path}/team-b", "alice")
    assert gone.status_code == 200 and gone.json["shares"] == []
    assert _right(db_url, "bob", kind, object_id) == mlflow_objects.NONE
    assert call("GET", path, "bob").status_code == 404


def test_a_stranger_finds_nothing_and_a_read_key_shares_nothing(world):
    call, db_url = world
    for method, body in (("GET", None), ("PUT", {"permission": "edit"}), ("DELETE", None)):
        suffix = "" if method == "GET" else "/dave"
        hidden = call(method, EXP + suffix, "dave", body)
        missing = call(method, "/api/v1/mlflow/experiments/999/shares" + suffix, "dave", body)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json["detail"].replace(" 7,", " 999,") == missing.json["detail"]
    assert _right(db_url, "dave", EXPERIMENT, "7") == mlflow_objects.NONE
    ceiling = call("PUT", EXP + "/team-b", "alice_read", {"permission": "read"})
    assert ceiling.status_code == 403
    assert _right(db_url, "bob", EXPERIMENT, "7") == mlflow_objects.NONE


def test_an_admin_shares_what_the_gateway_recorded_and_bad_requests_are_422(world):
    call, db_url = world
    assert call("PUT", EXP + "/dave", "admin", {"permission": "edit"}).json["shares"] == [
        {"name": "dave", "kind": "user", "permission": "edit"}]
    assert _right(db_url, "dave", EXPERIMENT, "7") == mlflow_objects.EDIT
    assert call("PUT", "/api/v1/mlflow/experiments/999/shares/dave", "admin", {"permission": "read"}).status_code == 404
    assert call("PUT", EXP + "/nobody", "alice", {"permission": "read"}).status_code == 404
    assert call("PUT", EXP + "/team-b", "alice", {"permission": "own"}).status_code == 422
    assert call("PUT", "/api/v1/mlflow/experiments/abc/shares/team-b", "alice", {"permission": "read"}).status_code == 422
