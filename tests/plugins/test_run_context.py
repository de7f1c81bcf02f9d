"""The run-context plugin: as an object, and as MLflow's installed entry point on a real server."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from hokusai_mlflow_plugin.plugins import run_context
from hokusai_mlflow_plugin.plugins.run_context import HokusaiRunContextProvider
from tests.mlflow_helpers import log_model

HOKUSAI_ENV = {"HOKUSAI_TOKEN_ID": "xray", "HOKUSAI_METRIC": "auroc", "HOKUSAI_BASELINE": "0.82"}
EXPECTED = {"hokusai_token_id": "XRAY", "hokusai_metric": "auroc", "hokusai_baseline": "0.82"}


@pytest.fixture(autouse=True)
def _fresh_plugin_state():
    run_context.reset()
    yield
    run_context.reset()


def hokusai_tags(tags: dict) -> dict:
    return {k: v for k, v in tags.items() if k.startswith("hokusai_")}


def set_env(monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)


# -- the provider as an object ---------------------------------------------------------------------


def test_inactive_without_token(monkeypatch):
    provider = HokusaiRunContextProvider()
    assert provider.in_context() is False


def test_tags_from_environment(monkeypatch):
    set_env(monkeypatch, {"HOKUSAI_TOKEN_ID": "  xray ", "HOKUSAI_METRIC": "AUROC", "HOKUSAI_BASELINE": "0.82"})
    provider = HokusaiRunContextProvider()
    assert provider.in_context() is True
    assert provider.tags() == EXPECTED


def test_token_alone(monkeypatch):
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", "Lung_Scan-2")
    assert HokusaiRunContextProvider().tags() == {"hokusai_token_id": "LUNG_SCAN-2"}


def test_tags_follow_environment_changes(monkeypatch):
    provider = HokusaiRunContextProvider()
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", "one")
    assert provider.tags()["hokusai_token_id"] == "ONE"
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", "two")
    assert provider.tags()["hokusai_token_id"] == "TWO"


BAD_VALUES = [
    ("HOKUSAI_TOKEN_ID", "", "hokusai_token_id"),
    ("HOKUSAI_TOKEN_ID", "x ray", "hokusai_token_id"),
    ("HOKUSAI_TOKEN_ID", "xr@y", "hokusai_token_id"),
    ("HOKUSAI_TOKEN_ID", "A" * 65, "hokusai_token_id"),
    ("HOKUSAI_BASELINE", "high", "hokusai_baseline"),
    ("HOKUSAI_BASELINE", "nan", "hokusai_baseline"),
    ("HOKUSAI_BASELINE", "inf", "hokusai_baseline"),
    ("HOKUSAI_METRIC", "bleu", "hokusai_metric"),
]


@pytest.mark.parametrize("variable,value,tag", BAD_VALUES)
def test_bad_value_warns_once_and_is_left_out(monkeypatch, caplog, variable, value, tag):
    set_env(monkeypatch, {**HOKUSAI_ENV, variable: value})
    provider = HokusaiRunContextProvider()
    with caplog.at_level(logging.WARNING, logger="hokusai_mlflow_plugin"):
        first = provider.tags()
        second = provider.tags()
    assert tag not in first and first == second
    warnings = [r for r in caplog.records if r.name.startswith("hokusai_mlflow_plugin")]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert variable in message and repr(value) in message and "expected" in message


def test_tags_never_raise(monkeypatch):
    monkeypatch.setattr(run_context, "context_tags", lambda environ: 1 / 0)
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", "xray")
    assert HokusaiRunContextProvider().tags() == {}


def test_mlflow_loads_the_installed_entry_point():
    from mlflow.tracking.context.registry import _run_context_provider_registry

    assert any(isinstance(p, HokusaiRunContextProvider) for p in _run_context_provider_registry)


# -- on a real MLflow server, through plain MLflow -----------------------------------------------


def test_start_run_is_tagged(tracking, monkeypatch):
    set_env(monkeypatch, HOKUSAI_ENV)
    with mlflow.start_run() as run:
        pass
    assert hokusai_tags(tracking.get_run(run.info.run_id).data.tags) == EXPECTED


def test_autolog_run_is_tagged(tracking, monkeypatch):
    set_env(monkeypatch, HOKUSAI_ENV)
    mlflow.sklearn.autolog(log_models=False, log_datasets=False, silent=True)
    try:
        X = np.array([[0.0], [1.0], [2.0], [3.0]])
        LogisticRegression().fit(X, [0, 0, 1, 1])
        run = mlflow.last_active_run()
    finally:
        mlflow.sklearn.autolog(disable=True)
    assert run is not None
    assert hokusai_tags(tracking.get_run(run.info.run_id).data.tags) == EXPECTED


def test_logged_model_outside_a_run_is_tagged(tracking, monkeypatch):
    set_env(monkeypatch, HOKUSAI_ENV)
    assert mlflow.active_run() is None
    info = log_model()
    assert hokusai_tags(tracking.get_logged_model(info.model_id).tags) == EXPECTED


def test_logged_model_inside_a_run_is_tagged(tracking, monkeypatch):
    set_env(monkeypatch, HOKUSAI_ENV)
    with mlflow.start_run():
        info = log_model()
    assert hokusai_tags(tracking.get_logged_model(info.model_id).tags) == EXPECTED


def test_no_tags_without_token(tracking, unique_name):
    with mlflow.start_run() as run:
        info = log_model(registered_model_name=unique_name)
    assert hokusai_tags(tracking.get_run(run.info.run_id).data.tags) == {}
    assert hokusai_tags(tracking.get_logged_model(info.model_id).tags) == {}
    version = tracking.get_model_version(unique_name, info.registered_model_version)
    assert hokusai_tags(version.tags) == {}


@pytest.mark.parametrize("variable,value,tag", BAD_VALUES)
def test_bad_value_run_succeeds_without_the_tag(tracking, monkeypatch, caplog, variable, value, tag):
    set_env(monkeypatch, {**HOKUSAI_ENV, variable: value})
    with caplog.at_level(logging.WARNING, logger="hokusai_mlflow_plugin"):
        with mlflow.start_run() as run:
            info = log_model()
    assert tag not in tracking.get_run(run.info.run_id).data.tags
    assert tag not in tracking.get_logged_model(info.model_id).tags
    warnings = [r for r in caplog.records if r.name.startswith("hokusai_mlflow_plugin")]
    assert len(warnings) == 1 and variable in warnings[0].getMessage()


def test_provider_registers_when_the_plugin_is_imported_before_mlflow():
    """A user (or a test) that imports the plugin first must not leave MLflow without it."""
    import subprocess
    import sys

    code = (
        "import hokusai_mlflow_plugin.plugins.run_context as rc, warnings\n"
        "warnings.simplefilter('error')\n"
        "import mlflow\n"
        "from mlflow.tracking.context.registry import _run_context_provider_registry as r\n"
        "assert any(isinstance(p, rc.HokusaiRunContextProvider) for p in r), 'provider not registered'\n"
        "import os; os.environ['HOKUSAI_TOKEN_ID'] = 'xray'\n"
        "from mlflow.tracking.context.registry import resolve_tags\n"
        "assert resolve_tags()['hokusai_token_id'] == 'XRAY'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Failure attempting to register context provider" not in result.stderr


def test_provider_follows_mlflows_interface():
    from mlflow.tracking.context.abstract_context import RunContextProvider

    for name in ("in_context", "tags"):
        assert callable(getattr(HokusaiRunContextProvider, name))
        assert hasattr(RunContextProvider, name)


def test_import_mlflow_loads_only_standard_library_modules_of_ours():
    """The entry point runs inside every ``import mlflow``: the modules of ours it loads may import
    only the standard library (and each other), never SQLAlchemy, Flask or the token store."""
    import ast
    import importlib.util
    import subprocess
    import sys

    code = "import sys, mlflow; print(' '.join(sorted(m for m in sys.modules if m.startswith(('hokusai_mlflow_plugin', 'webhook_app')))))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = result.stdout.split()
    assert "hokusai_mlflow_plugin.plugins.run_context" in loaded
    assert not [m for m in loaded if m.startswith(("webhook_app", "hokusai_mlflow_plugin.db", "hokusai_mlflow_plugin.registration.service"))]
    for name in loaded:
        tree = ast.parse(Path(importlib.util.find_spec(name).origin).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in sys.stdlib_module_names or root == "hokusai_mlflow_plugin", f"{name} imports {root}"
