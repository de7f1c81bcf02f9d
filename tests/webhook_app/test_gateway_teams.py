"""Teams inside MLflow, through the gateway against a real MLflow (ownership on, as by default):
alice (team A) finds nothing of bob's (team B): gets, writes and artifact downloads are 404, searches
leave his objects out with pages of 1 still walking the whole of hers, and his model does not load.
Bob's teammate carol reads and writes them; a share gives team C read, then edit."""

from __future__ import annotations

import uuid

import mlflow
import pytest
import requests
from mlflow import MlflowClient

from hokusai_mlflow_plugin.auth import keys, mlflow_objects, principals
from hokusai_mlflow_plugin.db.models import EXPERIMENT, TEAM, USER
from hokusai_mlflow_plugin.registration import tokens
from tests.live_stack import gateway_process
from webhook_app.gateway import create_app
from webhook_app.gateway.proxy import GATEWAY
from tests.mlflow_helpers import log_model


def _u(stem):
    return f"{stem}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def teams(stack, monkeypatch):
    """Each team test on SQLite and on PostgreSQL (MLflow and the token database alike)."""
    process, url = gateway_process(stack.db_url, stack.mlflow.url, stack.mlflow.workdir / f"teams-{uuid.uuid4().hex[:6]}.log")
    names = {t: _u(t) for t in ("team-a", "team-b", "team-c")}
    found = {}
    with stack.sessions.begin() as s:
        for team in names.values():
            principals.create(s, team, TEAM)
        for user, team in (("alice", "team-a"), ("bob", "team-b"), ("carol", "team-b"), ("dave", "team-c")):
            name = _u(user)
            principals.create(s, name, USER)
            principals.add_member(s, names[team], name)
            found[user] = keys.create(s, f"{name}-key", ("read", "register"), user=name).key
    admin = stack.api_key("admin", name="operator")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url + "/mlflow")
    mlflow.set_tracking_uri(url + "/mlflow")
    try:
        yield stack, url + "/mlflow", found, names, admin
    finally:
        mlflow.end_run()
        process.stop()


def _as(monkeypatch, key) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", key)
    return MlflowClient()


def test_another_team_s_objects_do_not_exist_for_you(teams, monkeypatch):
    stack, gw, key, names, admin = teams
    bob = _as(monkeypatch, key["bob"])
    experiment = bob.create_experiment(_u("bobs"))
    mlflow.set_experiment(experiment_id=experiment)
    model_name = _u("bobs-model")
    with mlflow.start_run() as run:
        mlflow.log_metric("auroc", 0.9)
        info = log_model(registered_model_name=model_name)
    run_id = run.info.run_id
    artifact = f"{gw}/api/2.0/mlflow-artifacts/artifacts/{experiment}/models/{info.model_id}/artifacts/MLmodel"
    assert requests.get(artifact, headers={"Authorization": f"Bearer {key['bob']}"}, timeout=30).status_code == 200

    auth = {"Authorization": f"Bearer {key['alice']}"}
    gets = [f"{gw}/api/2.0/mlflow/runs/get?run_id={run_id}", f"{gw}/ajax-api/2.0/mlflow/runs/get?run_id={run_id}",
            f"{gw}/api/2.0/mlflow/experiments/get?experiment_id={experiment}",
            f"{gw}/api/2.0/mlflow/logged-models/{info.model_id}",
            f"{gw}/api/2.0/mlflow/registered-models/get?name={model_name}",
            f"{gw}/api/2.0/mlflow/model-versions/get?name={model_name}&version=1",
            f"{gw}/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key=auroc",
            artifact, f"{gw}/get-artifact?run_id={run_id}&path=model",
            f"{gw}/model-versions/get-artifact?name={model_name}&version=1&path=MLmodel",
            f"{gw}/api/2.0/mlflow/artifacts/list?run_id={run_id}",
            f"{gw}/ajax-api/2.0/mlflow/logged-models/{info.model_id}/artifacts/files?artifact_file_path=MLmodel"]
    for url in gets:
        assert requests.get(url, headers=auth, timeout=30).status_code == 404, url
    writes = [("api/2.0/mlflow/runs/log-metric", {"run_id": run_id, "key": "x", "value": 1, "timestamp": 0}),
              ("api/2.0/mlflow/runs/set-tag", {"run_id": run_id, "key": "x", "value": "y"}),
              ("api/2.0/mlflow/experiments/update", {"experiment_id": experiment, "new_name": _u("taken")}),
              ("api/2.0/mlflow/registered-models/set-tag", {"name": model_name, "key": "x", "value": "y"}),
              ("api/2.0/mlflow/runs/create", {"experiment_id": experiment}),
              ("api/2.0/mlflow/model-versions/create", {"name": model_name, "source": info.model_uri})]
    for path, body in writes:
        assert requests.post(f"{gw}/{path}", json=body, headers=auth, timeout=30).status_code == 404, path
    assert requests.put(artifact, data=b"x", headers=auth, timeout=30).status_code == 404
    assert MlflowClient(tracking_uri=stack.mlflow.url).get_run(run_id).data.tags.get("x") is None

    alice = _as(monkeypatch, key["alice"])
    mine = sorted(alice.create_experiment(_u("alices")) for _ in range(3))
    walked, token = [], None
    while True:
        page = alice.search_experiments(max_results=1, page_token=token)
        walked += [e.experiment_id for e in page]
        token = page.token
        if not token:
            break
    assert sorted(walked) == mine  # her three, one page at a time, and nothing of bob's (nor experiment 0)
    assert alice.search_runs([experiment]) == []
    assert model_name not in [m.name for m in alice.search_registered_models()]
    assert alice.search_model_versions(f"name = '{model_name}'") == []
    assert alice.search_logged_models(experiment_ids=[experiment]) == []
    with pytest.raises(Exception):
        mlflow.pyfunc.load_model(f"models:/{model_name}/1")
    # nor registered through the API: his logged model reads as a missing one, his registered model too
    token_id = f"ALICE-{uuid.uuid4().hex[:6].upper()}"
    with stack.sessions.begin() as s:
        tokens.create(s, token_id, "auroc", 0.5, owner=names["team-a"])  # alice's team's
    register = f"{stack.receiver.url}/api/v1/models/register"
    ghost = f"models:/m-{uuid.uuid4().hex}"
    answers = [requests.post(register, json={"token_id": token_id, "model_uri": uri}, headers=auth, timeout=60)
               for uri in (info.model_uri, ghost)]
    assert [a.status_code for a in answers] == [404, 404], answers[0].text
    assert answers[0].json()["detail"].replace(info.model_id, "<id>") == answers[1].json()["detail"].replace(ghost[8:], "<id>")
    alices_run = alice.create_run(mine[0]).info.run_id
    into_his = requests.post(register, json={"token_id": token_id, "model_uri": f"runs:/{alices_run}/model",
                                             "model_name": model_name}, headers=auth, timeout=60)
    assert into_his.status_code == 404 and model_name in into_his.json()["detail"]
    assert [v.version for v in MlflowClient(tracking_uri=stack.mlflow.url).search_model_versions(f"name = '{model_name}'")] == ["1"]
    # nor is his logged model linked into her own run (the run is hers; the model must be readable)
    her_run = alice.create_run(mine[0]).info.run_id
    for path, body in (("runs/outputs", {"run_id": her_run, "models": [{"model_id": info.model_id, "step": 0}]}),
                       ("runs/log-inputs", {"run_id": her_run, "models": [{"model_id": info.model_id}]})):
        assert requests.post(f"{gw}/api/2.0/mlflow/{path}", json=body, headers=auth, timeout=30).status_code == 404, path

    carol = _as(monkeypatch, key["carol"])  # bob's teammate
    assert carol.get_run(run_id).info.run_id == run_id
    carol.set_tag(run_id, "reviewed", "yes")
    carols_run = carol.create_run(experiment).info.run_id  # her team's model, linked into her team's run
    linked = {"run_id": carols_run, "models": [{"model_id": info.model_id, "step": 0}]}
    assert requests.post(f"{gw}/api/2.0/mlflow/runs/outputs", json=linked, headers={"Authorization": f"Bearer {key['carol']}"},
                         timeout=30).status_code == 200
    assert [m.name for m in carol.search_registered_models(f"name = '{model_name}'")] == [model_name]
    assert mlflow.pyfunc.load_model(f"models:/{model_name}/1") is not None

    dave = {"Authorization": f"Bearer {key['dave']}"}
    with stack.sessions.begin() as s:
        team_c = principals.find(s, names["team-c"]).id
        mlflow_objects.share(s, keys.Caller("x", "op", ("admin",)), EXPERIMENT, experiment, team_c, "read")
    assert requests.get(f"{gw}/api/2.0/mlflow/runs/get?run_id={run_id}", headers=dave, timeout=30).status_code == 200
    tag = {"run_id": run_id, "key": "by-dave", "value": "1"}
    assert requests.post(f"{gw}/api/2.0/mlflow/runs/set-tag", json=tag, headers=dave, timeout=30).status_code == 403
    with stack.sessions.begin() as s:
        mlflow_objects.share(s, keys.Caller("x", "op", ("admin",)), EXPERIMENT, experiment, team_c, "edit")
    import time

    time.sleep(5.5)  # the gateway remembers a right for owners.TTL seconds
    assert requests.post(f"{gw}/api/2.0/mlflow/runs/set-tag", json=tag, headers=dave, timeout=30).status_code == 200

    # admin keys see everything
    op = {"Authorization": f"Bearer {admin}"}
    assert requests.get(f"{gw}/api/2.0/mlflow/runs/get?run_id={run_id}", headers=op, timeout=30).status_code == 200


def test_the_default_experiment_is_each_team_s_own(teams, monkeypatch):
    stack, gw, key, names, admin = teams
    # no experiment set: the client sends experiment 0, as every client does by default
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    _as(monkeypatch, key["bob"])
    with mlflow.start_run() as bobs:
        pass
    _as(monkeypatch, key["carol"])
    with mlflow.start_run() as carols:
        pass
    _as(monkeypatch, key["alice"])
    with mlflow.start_run() as alices:
        pass
    assert bobs.info.experiment_id == carols.info.experiment_id != "0"
    assert alices.info.experiment_id not in ("0", bobs.info.experiment_id)
    auth = {"Authorization": f"Bearer {key['alice']}"}
    assert requests.get(f"{gw}/api/2.0/mlflow/runs/get?run_id={bobs.info.run_id}", headers=auth, timeout=30).status_code == 404
    assert requests.get(f"{gw}/api/2.0/mlflow/experiments/get?experiment_id=0", headers=auth, timeout=30).status_code == 404


@pytest.mark.parametrize("value, on", [(None, True), ("on", True), ("ON", True), ("off", False), (" Off ", False),
                                       ("false", False), ("0", False)])
def test_ownership_is_on_unless_a_deployment_turns_it_off(monkeypatch, tmp_path, value, on):
    if value is None:
        monkeypatch.delenv("HOKUSAI_GATEWAY_MLFLOW_OWNERSHIP", raising=False)
    else:
        monkeypatch.setenv("HOKUSAI_GATEWAY_MLFLOW_OWNERSHIP", value)
    app = create_app({"internal_uri": "http://127.0.0.1:9", "database_url": f"sqlite:///{tmp_path / 'tokens.db'}"})
    assert app[GATEWAY].ownership is on
