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
from hokusai_mlflow_plugin.core import tags
from hokusai_mlflow_plugin.db.models import EXPERIMENT, REGISTERED_MODEL, TEAM, USER
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
    # the model carries its owner's tag (what narrows the team's searches), which no key writes
    with stack.sessions.begin() as s:
        team_b, team_c = principals.find(s, names["team-b"]).id, principals.find(s, names["team-c"]).id
    assert MlflowClient(tracking_uri=stack.mlflow.url).get_registered_model(model_name).tags[tags.OWNER] == str(team_b)
    carols = {"Authorization": f"Bearer {key['carol']}"}
    for method, path, body in (("POST", "set-tag", {"name": model_name, "key": tags.OWNER, "value": str(team_c)}),
                               ("DELETE", "delete-tag", {"name": model_name, "key": tags.OWNER}),
                               ("POST", "create", {"name": _u("forged"), "tags": [{"key": tags.OWNER, "value": str(team_c)}]})):
        refused = requests.request(method, f"{gw}/api/2.0/mlflow/registered-models/{path}", json=body, headers=carols, timeout=30)
        assert refused.status_code == 403 and tags.OWNER in refused.json()["detail"], path

    dave = {"Authorization": f"Bearer {key['dave']}"}
    with stack.sessions.begin() as s:
        mlflow_objects.share(s, keys.Caller("x", "op", ("admin",)), EXPERIMENT, experiment, team_c, "read")
        mlflow_objects.share(s, keys.Caller("x", "op", ("admin",)), REGISTERED_MODEL, model_name, team_c, "read")
    # a model shared with dave's team is in his searches (his readable models are no one owner's)
    assert [m.name for m in _as(monkeypatch, key["dave"]).search_registered_models()] == [model_name]
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


def _graphql(gw: str, key: str, query: str, **variables) -> requests.Response:
    return requests.post(f"{gw}/graphql", json={"query": query, "variables": variables},
                         headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_graphql_answers_as_api_does(teams, monkeypatch):
    """Alice's GraphQL on bob's run and experiment answers as api/ does (not found; absent from
    searches); her own works, the MLflow UI's queries included; the versions of bob's model that
    hang off her run (mlflow#25905's nested modelVersions) do not reach her. ajax-api/ is api/."""
    from tests.webhook_app.test_gateway_graphql import ui_queries

    stack, gw, key, names, admin = teams
    direct = MlflowClient(tracking_uri=stack.mlflow.url)
    bob = _as(monkeypatch, key["bob"])
    bobs_experiment = bob.create_experiment(_u("bobs"))
    bobs_run = bob.create_run(bobs_experiment).info.run_id
    bob.log_metric(bobs_run, "auroc", 0.9, step=1)
    bobs_model = bob.create_registered_model(_u("bobs-model")).name
    alice = _as(monkeypatch, key["alice"])
    her_experiment = alice.create_experiment(_u("alices"))
    her_run = alice.create_run(her_experiment).info.run_id
    her_model = alice.create_registered_model(_u("alices-model")).name
    alice.create_model_version(her_model, f"runs:/{her_run}/model", run_id=her_run)
    # a version of bob's model made from her run (on MLflow directly): MLflow lists it under her run
    direct.create_model_version(bobs_model, f"runs:/{her_run}/model", run_id=her_run)
    for name in (her_model, bobs_model):  # decided and tagged before any answer is compared with another
        stack.wait_tag(name, 1, "hokusai_status", timeout=60)
    ghost = uuid.uuid4().hex
    queries = ui_queries()

    # gets: null, with api/'s refusal, worded as for a run that does not exist
    for run_id in (bobs_run, ghost):
        answer = _graphql(gw, key["alice"], queries["mlflowGetRun"], data={"runId": run_id})
        rest = requests.get(f"{gw}/api/2.0/mlflow/runs/get?run_id={run_id}", headers={"Authorization": f"Bearer {key['alice']}"},
                            timeout=30)
        assert rest.status_code == 404 and answer.status_code == 200, answer.text
        assert answer.json() == {"data": {"mlflowGetRun": None}, "errors": [rest.json()["detail"]]}
        assert rest.json()["detail"] == f"No run {run_id}, or not one your key may see."
    answer = _graphql(gw, key["alice"], queries["mlflowGetExperiment"], input={"experimentId": bobs_experiment})
    assert answer.json() == {"data": {"mlflowGetExperiment": None}, "errors": [f"No experiment {bobs_experiment}, or not one your key may see."]}
    for query in ("query($id: String) { mlflowListArtifacts(input: {runId: $id}) { files { path } } }",
                  "query($id: String) { mlflowGetMetricHistoryBulkInterval(input: {runIds: [$id], metricKey: \"auroc\"}) { metrics { value } } }"):
        assert _graphql(gw, key["alice"], query, id=bobs_run).json() == {
            "data": {query.split("{ ")[1].split("(")[0]: None}, "errors": [f"No run {bobs_run}, or not one your key may see."]}
    # aliases, fragments and variables: each field judged on its own
    answer = _graphql(gw, key["alice"], """query($bobs: String, $hers: String) { a: mlflowGetRun(input: {runId: $bobs}) { run { info { runId } } }
        ...Hers }  fragment Hers on Query { b: mlflowGetRun(input: {runId: $hers}) { __typename run { info { runId } } } }""",
                      bobs=bobs_run, hers=her_run)
    assert answer.json() == {"data": {"a": None, "b": {"__typename": "MlflowGetRunResponse", "run": {"info": {"runId": her_run}}}},
                             "errors": [f"No run {bobs_run}, or not one your key may see."]}

    # searches: bob's left out before the query, as api/ leaves them out
    found = _graphql(gw, key["alice"], queries["mlflowSearchRuns"], data={"experimentIds": [bobs_experiment, her_experiment]})
    runs = found.json()["data"]["mlflowSearchRuns"]["runs"]
    assert [r["info"]["runUuid"] for r in runs] == [her_run]
    assert [v["name"] for v in runs[0]["modelVersions"]] == [her_model]  # not bob's version of her run
    nothing = "mutation($ids: [String]) { mlflowSearchRuns(input: {experimentIds: $ids}) { __typename runs { info { runId } } nextPageToken apiError { code } } }"
    assert _graphql(gw, key["alice"], nothing, ids=[bobs_experiment]).json() == {"data": {"mlflowSearchRuns": {
        "__typename": "MlflowSearchRunsResponse", "runs": [], "nextPageToken": "", "apiError": None}}, "errors": None}
    versions = "query($f: String) { mlflowSearchModelVersions(input: {filter: $f}) { modelVersions { name version } } }"
    assert _graphql(gw, key["alice"], versions, f=f"name = '{bobs_model}'").json()["data"]["mlflowSearchModelVersions"]["modelVersions"] == []
    assert {v["name"] for v in _graphql(gw, key["alice"], versions).json()["data"]["mlflowSearchModelVersions"]["modelVersions"]} == {her_model}
    datasets = "mutation($ids: [String]) { mlflowSearchDatasets(input: {experimentIds: $ids}) { datasetSummaries { name } } }"
    assert _graphql(gw, key["alice"], datasets, ids=[her_experiment, bobs_experiment]).json()["data"] == {"mlflowSearchDatasets": None}

    # her own run, as the UI's run page asks it: bob's version of it is left out, even unasked for by name
    page = _graphql(gw, key["alice"], queries["mlflowGetRun"], data={"runId": her_run}).json()
    assert page["errors"] is None and page["data"]["mlflowGetRun"]["run"]["info"]["runUuid"] == her_run
    assert page["data"]["mlflowGetRun"]["run"]["experiment"]["experimentId"] == her_experiment
    assert [v["name"] for v in page["data"]["mlflowGetRun"]["run"]["modelVersions"]] == [her_model]
    unnamed = "query($id: String) { mlflowGetRun(input: {runId: $id}) { run { modelVersions { version } } } }"
    assert _graphql(gw, key["alice"], unnamed, id=her_run).json()["data"]["mlflowGetRun"]["run"]["modelVersions"] == [{"version": "1"}]
    assert _graphql(gw, key["alice"], "{ __typename }").json() == {"data": {"__typename": "Query"}, "errors": None}
    # introspection is an operator's; the operator sees bob's version under her run too (it is there)
    assert _graphql(gw, key["alice"], "{ __schema { types { name } } }").status_code == 403
    assert _graphql(gw, admin, "{ __schema { queryType { name } } }").json()["data"] == {"__schema": {"queryType": {"name": "Query"}}}
    everything = _graphql(gw, admin, unnamed.replace("{ version }", "{ name }"), id=her_run).json()
    assert {v["name"] for v in everything["data"]["mlflowGetRun"]["run"]["modelVersions"]} == {her_model, bobs_model}
    # bob's teammate reads his run through GraphQL
    carols = _graphql(gw, key["carol"], queries["mlflowGetRun"], data={"runId": bobs_run}).json()
    assert carols["errors"] is None and carols["data"]["mlflowGetRun"]["run"]["info"]["runUuid"] == bobs_run

    # ajax-api/ answers exactly as api/ (the UI's REST calls)
    auth = {"Authorization": f"Bearer {key['alice']}"}
    for method, path, body in (("GET", f"2.0/mlflow/runs/get?run_id={bobs_run}", None),
                               ("GET", f"2.0/mlflow/experiments/get?experiment_id={bobs_experiment}", None),
                               ("GET", f"2.0/mlflow/registered-models/get?name={bobs_model}", None),
                               ("GET", f"2.0/mlflow/metrics/get-history?run_id={bobs_run}&metric_key=auroc", None),
                               ("POST", "2.0/mlflow/runs/search", {"experiment_ids": [bobs_experiment, her_experiment]}),
                               ("POST", "2.0/mlflow/experiments/search", {"max_results": 10}),
                               ("GET", "2.0/mlflow/registered-models/search", None),
                               ("POST", "2.0/mlflow/runs/set-tag", {"run_id": bobs_run, "key": "x", "value": "y"})):
        api, ajax = (requests.request(method, f"{gw}/{prefix}/{path}", json=body, headers=auth, timeout=30)
                     for prefix in ("api", "ajax-api"))
        assert (api.status_code, api.json()) == (ajax.status_code, ajax.json()), path
