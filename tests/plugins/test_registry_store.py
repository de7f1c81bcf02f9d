"""The ``hokusai+`` registry store: as an object, as MLflow's installed entry point, and behind a
real MLflow server, for every way a model version is created."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.metadata
import pickle

import mlflow
import pytest
import requests
from mlflow.entities.model_registry import ModelVersionTag

from hokusai_mlflow_plugin.plugins import run_context
from hokusai_mlflow_plugin.plugins.stamping_store import HokusaiRegistryStore, inner_uri
from hokusai_mlflow_plugin.core.tags import logged_model_id
from tests.conftest import CAPTURE_SECRET
from tests.mlflow_helpers import log_model

HOKUSAI_ENV = {"HOKUSAI_TOKEN_ID": "xray", "HOKUSAI_METRIC": "auroc", "HOKUSAI_BASELINE": "0.82"}
SCHEMES = ["hokusai+sqlite", "hokusai+postgresql", "hokusai+mysql"]


@pytest.fixture
def hokusai_env(monkeypatch):
    run_context.reset()
    for key, value in HOKUSAI_ENV.items():
        monkeypatch.setenv(key, value)


# -- as an object ----------------------------------------------------------------------------------


def test_inner_uri():
    assert inner_uri("hokusai+sqlite:///x.db") == "sqlite:///x.db"
    assert inner_uri("hokusai+postgresql://u@h/db") == "postgresql://u@h/db"
    with pytest.raises(ValueError, match="hokusai\\+sqlite"):
        inner_uri("sqlite:///x.db")


def test_logged_model_id_from_source():
    assert logged_model_id("models:/m-0123abc") == "m-0123abc"
    assert logged_model_id("models:/name/1") is None
    assert logged_model_id("runs:/abc/model") is None
    assert logged_model_id(None) is None


def test_constructor_does_no_io(tmp_path):
    target = tmp_path / "missing-dir" / "registry.db"
    store = HokusaiRegistryStore(store_uri=f"hokusai+sqlite:///{target}", tracking_uri=None)
    assert not target.parent.exists()
    assert "engine" not in vars(store)


def test_without_a_uri_the_store_uses_mlflows_registry_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"hokusai+sqlite:///{tmp_path / 'default.db'}")
    store = HokusaiRegistryStore()
    assert not (tmp_path / "default.db").exists()  # still no I/O in the constructor
    store.create_registered_model("from-the-default")
    assert (tmp_path / "default.db").exists()
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(ValueError, match="starts with 'hokusai\\+'"):
        HokusaiRegistryStore().search_registered_models()


def test_store_works_and_survives_pickle(tmp_path):
    uri = f"hokusai+sqlite:///{tmp_path / 'registry.db'}"
    store = HokusaiRegistryStore(store_uri=uri, tracking_uri=f"sqlite:///{tmp_path / 'registry.db'}")
    store.create_registered_model("pickled")
    clone = pickle.loads(pickle.dumps(store))
    assert isinstance(clone, HokusaiRegistryStore)
    assert [m.name for m in clone.search_registered_models()] == ["pickled"]
    # a store that was never used pickles too
    assert pickle.loads(pickle.dumps(HokusaiRegistryStore(uri)))._store_uri == uri


def test_installed_entry_points_are_found_by_mlflow(tmp_path):
    from mlflow.tracking._model_registry.utils import _get_store, _get_store_registry

    names = {ep.name for ep in importlib.metadata.entry_points(group="mlflow.model_registry_store")}
    assert set(SCHEMES) <= names
    from hokusai_mlflow_plugin.plugins.registry_store import build_registry_store

    registry = _get_store_registry()
    for scheme in SCHEMES:
        assert registry.get_store_builder(f"{scheme}://x/y") is build_registry_store
    store = _get_store(f"hokusai+sqlite:///{tmp_path / 'r.db'}", f"sqlite:///{tmp_path / 'r.db'}")
    assert isinstance(store, HokusaiRegistryStore)


def test_request_tags_win(tmp_path):
    # A request that carries hokusai_token_id is stored as given, with no look-up of its source.
    uri = f"hokusai+sqlite:///{tmp_path / 'registry.db'}"
    store = HokusaiRegistryStore(store_uri=uri, tracking_uri="http://127.0.0.1:9")  # unreachable
    store.create_registered_model("m")
    version = store.create_model_version(
        "m", "s3://bucket/model", tags=[ModelVersionTag("hokusai_token_id", "GIVEN")]
    )
    assert version.tags == {"hokusai_token_id": "GIVEN"}


def test_unreadable_source_still_registers(tmp_path, caplog, monkeypatch):
    uri = f"hokusai+sqlite:///{tmp_path / 'registry.db'}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    # a tracking server that is down: the look-up fails at once
    store = HokusaiRegistryStore(store_uri=uri, tracking_uri="http://127.0.0.1:9")
    store.create_registered_model("m")
    version = store.create_model_version("m", "s3://bucket/model", run_id="0" * 32)
    assert version.version == 1 and "hokusai_token_id" not in version.tags
    assert any("could not read the tags" in r.getMessage() for r in caplog.records)


def test_a_run_that_cannot_be_read_keeps_the_logged_models_tags(tmp_path, monkeypatch, caplog):
    """The run is read only to complete the LoggedModel's tags: its failure must not lose them."""
    from types import SimpleNamespace

    class Tracking:
        def get_logged_model(self, model_id):
            return SimpleNamespace(model_id=model_id, experiment_id="0", tags={"hokusai_token_id": "XRAY", "other": "x"},
                                   source_run_id="r" * 32, metrics=None)

        def get_run(self, run_id):
            raise RuntimeError("the run was purged")

    store = HokusaiRegistryStore(store_uri=f"hokusai+sqlite:///{tmp_path / 'registry.db'}")
    monkeypatch.setattr(store, "_tracking_store", Tracking)
    store.create_registered_model("m")
    version = store.create_model_version("m", "s3://bucket/model", run_id="r" * 32, model_id="m-0123abc")
    assert version.tags == {"hokusai_token_id": "XRAY"}
    assert any("LoggedModel's tags only" in r.getMessage() for r in caplog.records)


# -- behind a real MLflow server -----------------------------------------------------------------


def _valid_signature(captured) -> bool:
    h = {k.lower(): v for k, v in captured.headers.items()}
    signed = f"{h['x-mlflow-delivery-id']}.{h['x-mlflow-timestamp']}.".encode() + captured.body
    expected = base64.b64encode(hmac.new(CAPTURE_SECRET.encode(), signed, hashlib.sha256).digest())
    return hmac.compare_digest(h["x-mlflow-signature"], "v1," + expected.decode())


def test_every_creation_path_stamps_the_version(tracking, mlflow_server, capture, hokusai_env, unique_name):
    # 1. log_model(registered_model_name=...): the source is models:/m-..., run_id null in the request
    with mlflow.start_run() as run:
        info = log_model(registered_model_name=unique_name)
    run_id = run.info.run_id

    # 2. mlflow.register_model("runs:/...")
    v2 = mlflow.register_model(f"runs:/{run_id}/model", unique_name)

    # 3. MlflowClient.create_model_version with a models:/ source and no tags
    v3 = tracking.create_model_version(
        unique_name, source=f"models:/{info.model_id}", run_id=run_id, model_id=info.model_id
    )

    # 4. what the MLflow UI posts (the model id, no tags)
    response = requests.post(
        f"{mlflow_server.url}/ajax-api/2.0/mlflow/model-versions/create",
        json={"name": unique_name, "source": f"models:/{info.model_id}", "run_id": run_id,
              "model_id": info.model_id},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    v4 = response.json()["model_version"]["version"]

    versions = [str(info.registered_model_version), str(v2.version), str(v3.version), str(v4)]
    assert sorted(versions, key=int) == ["1", "2", "3", "4"]
    for version in versions:
        tags = tracking.get_model_version(unique_name, version).tags
        assert tags["hokusai_token_id"] == "XRAY", (version, tags)
        assert tags["hokusai_metric"] == "auroc" and tags["hokusai_baseline"] == "0.82"

    found = tracking.search_model_versions("tags.hokusai_token_id = 'XRAY'")
    assert {v.version for v in found if v.name == unique_name} == set(versions)

    created = capture.wait_for(
        lambda r: r.json().get("action") == "created"
        and r.json()["data"]["name"] == unique_name
    )
    assert created, "no model_version.created webhook reached the capture receiver"
    assert all(_valid_signature(r) for r in created)


def test_version_from_run_tags_only(tracking, hokusai_env, monkeypatch, unique_name):
    # The run carries the token; the LoggedModel (logged with the variable unset) does not.
    with mlflow.start_run() as run:
        monkeypatch.delenv("HOKUSAI_TOKEN_ID")
        info = log_model()
    assert "hokusai_token_id" not in tracking.get_logged_model(info.model_id).tags
    tracking.create_registered_model(unique_name)
    version = tracking.create_model_version(
        unique_name, source=f"models:/{info.model_id}", run_id=run.info.run_id,
        model_id=info.model_id,
    )
    assert tracking.get_model_version(unique_name, version.version).tags["hokusai_token_id"] == "XRAY"


def test_the_runs_tags_complete_the_logged_models(tracking, unique_name):
    """A LoggedModel tagged with the token alone (tagged by hand, say) gets the metric and baseline
    of its run when the run has the same token; a run with another token adds nothing."""
    run_tags = {"hokusai_token_id": "XRAY", "hokusai_metric": "auroc", "hokusai_baseline": "0.82"}
    for run_token, expected in (("XRAY", run_tags), ("OTHER", {"hokusai_token_id": "XRAY"})):
        with mlflow.start_run(tags={**run_tags, "hokusai_token_id": run_token}) as run:
            pass
        logged = tracking.create_logged_model(run.info.experiment_id, source_run_id=run.info.run_id,
                                              tags={"hokusai_token_id": "XRAY"})
        name = f"{unique_name}-{run_token.lower()}"
        tracking.create_registered_model(name)
        version = tracking.create_model_version(name, source=f"models:/{logged.model_id}", run_id=run.info.run_id,
                                                model_id=logged.model_id)
        tags = tracking.get_model_version(name, version.version).tags
        assert {k: v for k, v in tags.items() if k.startswith("hokusai_")} == expected


def test_untagged_sources_stay_untagged(tracking, unique_name):
    with mlflow.start_run():
        info = log_model(registered_model_name=unique_name)
    tags = tracking.get_model_version(unique_name, info.registered_model_version).tags
    assert not any(k.startswith("hokusai_") for k in tags)


def test_a_registry_client_for_another_scheme_does_not_load_the_store():
    """MLflow loads every registry-store entry point for any registry client: ours must stay light."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from mlflow import MlflowClient\n"
        "MlflowClient('http://127.0.0.1:9')._get_registry_client()\n"
        "assert 'hokusai_mlflow_plugin.plugins.registry_store' in sys.modules, 'entry point not loaded'\n"
        "assert 'hokusai_mlflow_plugin.plugins.stamping_store' not in sys.modules, 'the store was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
