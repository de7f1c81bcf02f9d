"""``hokusai mlflow share|unshare|shares`` on the database (the operator acts as an admin), on
SQLite and PostgreSQL: an experiment by its id and a registered model by its name, shared with a
team read then edit, the share taken away; what the gateway never recorded is not found."""

from __future__ import annotations

import mlflow
import pytest

from hokusai_mlflow_plugin.auth import mlflow_objects
from hokusai_mlflow_plugin.db.models import EXPERIMENT, REGISTERED_MODEL, MlflowObject
from hokusai_mlflow_plugin.db.session import session_factory
from hokusai_mlflow_plugin.mlflow_io.owner_tags import put_right as owner_tags_of


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
    a model with no recorded owner and a model deleted from MLflow are left alone; a prompt (which
    MLflow's client leaves out of a plain search) is a model like the others; ``--dry-run`` writes
    nothing."""
    db_cli.ok("team", "create", "team-a")
    names = ("prompt", "untagged", "wrong", "right", "gone", "unowned")
    prompt, untagged, wrong, right, gone, unowned = (f"{unique_name}-{n}" for n in names)
    with session_factory(db_cli.database_url).begin() as s:
        team_a = mlflow_objects.principals.find(s, "team-a").id
        for name in (prompt, untagged, wrong, right, gone):
            s.add(MlflowObject(kind=REGISTERED_MODEL, object_id=name, owner_id=team_a, creator_id=team_a, key_id="seed"))
    for name in (untagged, wrong, right, unowned):
        tracking.create_registered_model(name)
    mlflow.genai.register_prompt(name=prompt, template="Summarise {{text}}")  # a registered model, tagged a prompt
    tracking.set_registered_model_tag(wrong, "hokusai_owner", "999")
    tracking.set_registered_model_tag(right, "hokusai_owner", str(team_a))
    stray = f"{unique_name}-stray"  # made on MLflow directly, with an owner's tag
    tracking.create_registered_model(stray, tags={"hokusai_owner": str(team_a)})

    def owner_tags():  # by search: MLflow's client hides a prompt from get_registered_model
        found = {m.name: m.tags.get("hokusai_owner") for prompts in ("!=", "=")
                 for m in tracking.search_registered_models(f"name LIKE '{unique_name}-%' AND tags.`mlflow.prompt.is_prompt` {prompts} 'true'")}
        return {name: found[name] for name in (prompt, untagged, wrong, right, unowned)}

    before = owner_tags()
    planned = db_cli.json("mlflow", "tag-owners", "--dry-run")
    assert planned["tagged"] == [prompt, untagged, wrong] and planned["dry_run"] is True
    assert owner_tags() == before  # nothing written

    said = db_cli.ok("mlflow", "tag-owners").output
    assert f"tagged 3: {prompt}, {untagged}, {wrong}." in said
    assert f"Not found in MLflow (deleted there, or in another workspace; their owner rows left alone): {gone}." in said
    [strays] = [line for line in said.splitlines() if line.startswith("Tagged in MLflow with no recorded owner")]
    assert stray in strays and strays.endswith("Delete the tag in MLflow if they are not that owner's.")  # other tests' may be there too
    assert owner_tags() == {prompt: str(team_a), untagged: str(team_a), wrong: str(team_a), right: str(team_a), unowned: None}
    again = db_cli.json("mlflow", "tag-owners")
    assert again["tagged"] == [] and again["checked"] == 4 and again["missing"] == [gone]  # put right once
    paged = owner_tags_of(tracking, session_factory(db_cli.database_url), dry_run=True, page_size=2)  # page after page
    assert {k: paged[k] for k in ("checked", "tagged", "missing")} == {"checked": 4, "tagged": [], "missing": [gone]}
    assert stray in again["stray"] and not {untagged, wrong, right, unowned} & set(again["stray"])
    assert tracking.get_registered_model(stray).tags["hokusai_owner"] == str(team_a)  # said, not changed
    assert mlflow.genai.load_prompt(f"prompts:/{prompt}/1").template == "Summarise {{text}}"  # still a prompt


def test_tag_owners_through_the_gateway_says_to_point_at_mlflow_itself(sqlite_url):
    """A unit (MLflow's refusal stood in for): the gateway refuses the owner tag to every key, so
    ``put_right`` pointed at it says what to set, not that MLflow did not answer."""
    from mlflow.entities.model_registry import RegisteredModel
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
    from mlflow.store.entities.paged_list import PagedList

    from hokusai_mlflow_plugin.core.errors import CONFIG, HokusaiError

    class Gateway:
        def search_registered_models(self, filter_string, max_results, page_token):
            return PagedList([RegisteredModel("xray-model")] if "!=" in filter_string else [], None)

        def set_registered_model_tag(self, name, key, value):
            raise MlflowException("The tag 'hokusai_owner' of a registered model names its owner", error_code=PERMISSION_DENIED)

    sessions = session_factory(sqlite_url)
    with sessions.begin() as s:
        team = mlflow_objects.principals.create(s, "team-a", "team")
        s.flush()
        s.add(MlflowObject(kind=REGISTERED_MODEL, object_id="xray-model", owner_id=team.id, creator_id=team.id, key_id="seed"))
    assert owner_tags_of(Gateway(), sessions, dry_run=True)["tagged"] == ["xray-model"]
    with pytest.raises(HokusaiError) as refused:
        owner_tags_of(Gateway(), sessions)
    assert refused.value.kind == CONFIG
    assert str(refused.value) == ("MLflow refused the tag of 'xray-model' (PERMISSION_DENIED): this is the gateway, which lets no "
                                  "key set it. Point HOKUSAI_MLFLOW_INTERNAL_URI at MLflow itself (not the gateway) and run it again.")
