"""What the ``hokusai model`` tests share: the CLI driven through click's runner, and models on
disk of every kind ``--model-path`` takes."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import joblib
import mlflow
import mlflow.sklearn
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hokusai_mlflow_plugin.cli import main
from hokusai_mlflow_plugin.db.session import get_engine
from tests.mlflow_helpers import PIP, small_model

UNREACHABLE_MLFLOW = "http://127.0.0.1:9"


class Cli:
    def __init__(self, database_url: str, tracking_uri: str = UNREACHABLE_MLFLOW):
        self.args = ["--database-url", database_url, "--tracking-uri", tracking_uri]
        self.runner = CliRunner()

    def __call__(self, *args: str):
        return self.runner.invoke(main, [*self.args, *map(str, args)])

    def ok(self, *args: str):
        result = self(*args)
        assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str, code: int = 0):
        result = self(*args, "--json")
        assert result.exit_code == code, result.output
        return json.loads(result.stdout)

    def error(self, *args: str, code: int = 1) -> str:
        """The one-line message of a command that must fail cleanly."""
        result = self(*args)
        assert result.exit_code == code, result.output
        assert isinstance(result.exception, SystemExit), result.exception
        assert "Traceback" not in result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("Error: "), result.output
        return lines[-1]

    def register(self, token_id: str, path, *extra: str, metric: str = "auroc", baseline: float = 0.82):
        return self("model", "register", "--token-id", token_id, "--model-path", path, "--metric", metric, "--baseline", baseline, *extra)


@pytest.fixture
def cli(stack) -> Cli:
    return Cli(stack.db_url, stack.mlflow.url)


@pytest.fixture
def cli_sqlite(stack_sqlite, monkeypatch) -> Cli:
    """For the cases that need not run on both databases; plain MLflow points at the stack too."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack_sqlite.mlflow.url)
    mlflow.set_tracking_uri(stack_sqlite.mlflow.url)
    yield Cli(stack_sqlite.db_url, stack_sqlite.mlflow.url)
    mlflow.end_run()


@pytest.fixture
def offline(tmp_path) -> Cli:
    """A token database of its own and an MLflow that is not there."""
    cli = Cli(f"sqlite:///{tmp_path / 'tokens.db'}")
    cli.ok("db", "upgrade")
    yield cli
    get_engine(cli.args[1]).dispose()


# -- models on disk ------------------------------------------------------------------------------


def joblib_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.joblib"
    joblib.dump(small_model(), path)
    return path


def pickle_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(small_model()))
    return path


def mlflow_dir(tmp_path: Path) -> Path:
    path = tmp_path / "mlflow-model"
    mlflow.sklearn.save_model(small_model(), path, pip_requirements=PIP)
    return path


def checkpoint_dir(tmp_path: Path) -> Path:
    path = tmp_path / "checkpoints"
    (path / "shards").mkdir(parents=True)
    (path / "weights.ckpt").write_bytes(os.urandom(2048))
    (path / "shards" / "optimizer.bin").write_bytes(os.urandom(512))
    return path


@pytest.fixture
def eval_case(tmp_path):
    """A fitted pipeline saved with joblib and a held-out CSV; the auroc scikit-learn gives it."""
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.sample(frac=1.0, random_state=0)
    train, test = frame.iloc[:400], frame.iloc[400:]
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(train.drop(columns="target"), train["target"])
    model_path, csv = tmp_path / "pipeline.joblib", tmp_path / "eval.csv"
    joblib.dump(model, model_path)
    test.to_csv(csv, index=False)
    written = pd.read_csv(csv)
    expected = roc_auc_score(written["target"], model.predict_proba(written.drop(columns="target"))[:, 1])
    return model_path, csv, expected


def assert_registered(stack, token_id: str, value: float, run_id: str | None = None) -> dict:
    token = stack.token(token_id)
    assert token["status"] == "registered", token
    assert token["model_name"] == f"hokusai-{token_id.lower()}"
    assert token["metric_value"] == pytest.approx(value, rel=1e-12)
    if run_id:
        assert token["mlflow_run_id"] == run_id
    run = stack.client.get_run(token["mlflow_run_id"])
    assert run.data.tags["hokusai_token_id"] == token_id
    assert run.data.tags["hokusai_metric"] == "auroc"
    assert float(run.data.tags["hokusai_baseline"]) == 0.82
    assert stack.wait_tag(token["model_name"], token["model_version"], "hokusai_status") == "registered"
    return token


