"""``hokusai mlflow share|unshare|shares`` on the database (the operator acts as an admin), on
SQLite and PostgreSQL: an experiment by its id and a registered model by its name, shared with a
team read then edit, the share taken away; what the gateway never recorded is not found."""

from __future__ import annotations

from hokusai_mlflow_plugin.auth import mlflow_objects
from hokusai_mlflow_plugin.db.models import EXPERIMENT, REGISTERED_MODEL, MlflowObject
from hokusai_mlflow_plugin.db.session import session_factory


def _seed(db_cli):
    db_cli.ok("user", "create", "alice")
    db_cli.ok("user", "create", "bob")
    db_cli.ok("team", "create", "team-a")
    db_cli.ok("team", "create", "team-b")
    db_cli.ok("team", "add", "team-a", "alice")
    db_cli.ok("team", "add", "team-b", "bob")
    with session_factory(db_cli.database_url).begin() as s:
        team_a = mlflow_objects.principals.find(s, "team-a").id
        s.add(MlflowObject(kind=EXPERIMENT, object_id="12", owner_id=team_a, creator_id=team_a, key_id="seed"))
        s.add(MlflowObject(kind=REGISTERED_MODEL, object_id="xray-model", owner_id=team_a, creator_id=team_a, key_id="seed"))


def _bob_right(db_cli, kind, object_id):
    with session_factory(db_cli.database_url)() as s:
        return mlflow_objects.user_right(s, mlflow_objects.principals.find(s, "bob").id, kind, object_id)


def test_an_experiment_and_a_model_are_shared_then_unshared(db_cli):
    _seed(db_cli)
    said = db_cli.ok("mlflow", "share", "experiment", "12", "team-b").output
    assert said.startswith("Shared with 'team-b' (read): experiment 12, owned by team-a.")
    assert "team-b       team  read" in said
    assert _bob_right(db_cli, EXPERIMENT, "12") == mlflow_objects.READ
    view = db_cli.json("mlflow", "share", "model", "xray-model", "team-b", "--permission", "edit")
    assert view == {"kind": REGISTERED_MODEL, "object_id": "xray-model", "owner": "team-a",
                    "shares": [{"name": "team-b", "kind": "team", "permission": "edit"}]}
    assert _bob_right(db_cli, REGISTERED_MODEL, "xray-model") == mlflow_objects.EDIT
    assert db_cli.json("mlflow", "shares", "experiment", "12")["shares"] == [{"name": "team-b", "kind": "team", "permission": "read"}]
    assert db_cli.ok("mlflow", "unshare", "experiment", "12", "team-b").output.startswith("No share for 'team-b' now: experiment 12")
    assert _bob_right(db_cli, EXPERIMENT, "12") == mlflow_objects.NONE
    assert "Shared with nobody." in db_cli.ok("mlflow", "shares", "experiment", "12").output


def test_what_the_gateway_never_recorded_or_nobody_named_is_not_found(db_cli):
    _seed(db_cli)
    assert db_cli.error("mlflow", "share", "experiment", "99", "team-b") == \
        "Error: No experiment 99, or not one your key may see."
    assert "No user or team named 'nobody'" in db_cli.error("mlflow", "share", "model", "xray-model", "nobody")
    assert db_cli(*["mlflow", "share", "experiment", "12", "team-b", "--permission", "own"]).exit_code == 2


def test_tag_owners_tags_each_owned_model_whose_tag_mlflow_lacks_or_gets_wrong(db_cli, tracking, unique_name):
    """``hokusai mlflow tag-owners``: a recorded owner whose model in MLflow has no ``hokusai_owner``
    tag (made before the tags, or MLflow refused it) or another owner's is tagged, once; a right tag,
    a model with no recorded owner and a model deleted from MLflow are left alone; ``--dry-run``
    writes nothing."""
    db_cli.ok("team", "create", "team-a")
    untagged, wrong, right, gone, unowned = (f"{unique_name}-{n}" for n in ("untagged", "wrong", "right", "gone", "unowned"))
    with session_factory(db_cli.database_url).begin() as s:
        team_a = mlflow_objects.principals.find(s, "team-a").id
        for name in (untagged, wrong, right, gone):
            s.add(MlflowObject(kind=REGISTERED_MODEL, object_id=name, owner_id=team_a, creator_id=team_a, key_id="seed"))
    for name in (untagged, wrong, right, unowned):
        tracking.create_registered_model(name)
    tracking.set_registered_model_tag(wrong, "hokusai_owner", "999")
    tracking.set_registered_model_tag(right, "hokusai_owner", str(team_a))
    stray = f"{unique_name}-stray"  # made on MLflow directly, with an owner's tag
    tracking.create_registered_model(stray, tags={"hokusai_owner": str(team_a)})

    def owner_tags():
        return {name: tracking.get_registered_model(name).tags.get("hokusai_owner") for name in (untagged, wrong, right, unowned)}

    before = owner_tags()
    planned = db_cli.json("mlflow", "tag-owners", "--dry-run")
    assert planned["tagged"] == [untagged, wrong] and planned["dry_run"] is True
    assert owner_tags() == before  # nothing written

    said = db_cli.ok("mlflow", "tag-owners").output
    assert f"tagged 2: {untagged}, {wrong}." in said
    assert f"Not in MLflow (deleted there; their owner rows left alone): {gone}." in said
    [strays] = [line for line in said.splitlines() if line.startswith("Tagged in MLflow with no recorded owner")]
    assert stray in strays and strays.endswith("Delete the tag in MLflow if they are not that owner's.")  # other tests' may be there too
    assert owner_tags() == {untagged: str(team_a), wrong: str(team_a), right: str(team_a), unowned: None}
    again = db_cli.json("mlflow", "tag-owners")
    assert again["tagged"] == [] and again["checked"] == 3 and again["missing"] == [gone]  # put right once
    assert stray in again["stray"] and not {untagged, wrong, right, unowned} & set(again["stray"])
    assert tracking.get_registered_model(stray).tags["hokusai_owner"] == str(team_a)  # said, not changed
