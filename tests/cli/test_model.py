"""``hokusai model register | status | list`` through click's CliRunner, against the real stack (an
MLflow server whose webhook calls the real receiver, on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
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
from hokusai_mlflow_plugin.db.models import Registration
from hokusai_mlflow_plugin.db.session import get_engine
from hokusai_mlflow_plugin.registration.tokens import sort_best_first
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


# -- registering, on SQLite and PostgreSQL -------------------------------------------------------


def test_register_a_joblib_file_with_a_metric_value(stack, cli, tmp_path, token_id):
    stack.create_token(token_id, "auroc", 0.82)
    result = cli.register(token_id, joblib_file(tmp_path), "--metric-value", "0.91")
    assert result.exit_code == 0, result.output
    token = assert_registered(stack, token_id, 0.91)
    assert result.stdout.splitlines() == [
        f"Registered: token {token_id}, model {token['model_name']} version 1, auroc 0.91 vs baseline 0.82.",
        "auroc 0.91 >= baseline 0.82.",
    ]
    assert "Uploading" in result.stderr and "scikit-learn LogisticRegression" in result.stderr
    assert mlflow.sklearn.load_model(f"models:/{token['model_name']}/1").predict([[1.0, 0.0, 0.0]]).shape == (1,)
    assert len(stack.events(token_id, "token_ready_for_deploy")) == 1


def test_register_from_an_existing_run(stack, cli, tmp_path, token_id):
    stack.create_token(token_id, "auroc", 0.82)
    with mlflow.start_run() as run:
        mlflow.log_metric("auroc", 0.87)
    outcome = cli.json("model", "register", "--token-id", token_id.lower(), "--model-path", joblib_file(tmp_path),
                       "--metric", "auroc", "--baseline", "0.82", "--run-id", run.info.run_id)
    assert outcome["status"] == "registered" and outcome["run_id"] == run.info.run_id
    assert_registered(stack, token_id, 0.87, run.info.run_id)
    assert stack.client.get_run(run.info.run_id).data.metrics == {"auroc": 0.87}  # read, not logged again


def test_register_computes_the_metric_from_eval_data(stack, cli, eval_case, token_id):
    model_path, csv, expected = eval_case
    stack.create_token(token_id, "auroc", 0.82)
    outcome = cli.json("model", "register", "--token-id", token_id, "--model-path", model_path, "--metric", "auroc",
                       "--baseline", "0.82", "--eval-data", csv, "--target", "target")
    assert outcome["metric_value"] == pytest.approx(expected, rel=1e-12)
    token = assert_registered(stack, token_id, expected)
    assert stack.client.get_run(token["mlflow_run_id"]).data.metrics["auroc"] == pytest.approx(expected, rel=1e-12)


def test_a_rejection_exits_1_and_leaves_the_token_in_draft(stack, cli, tmp_path, token_id):
    stack.create_token(token_id, "auroc", 0.82)
    before = stack.token(token_id)
    result = cli.register(token_id, joblib_file(tmp_path), "--metric-value", "0.8")
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[0].startswith(f"Rejected: token {token_id}, model hokusai-{token_id.lower()} version 1")
    assert "auroc 0.8 is below the baseline 0.82" in result.stdout
    assert stack.token(token_id) == before
    assert stack.events(token_id, "token_ready_for_deploy") == []
    assert stack.wait_tag(f"hokusai-{token_id.lower()}", "1", "hokusai_status") == "rejected"


# -- every kind of model path (SQLite only: the database is not what varies) ----------------------


@pytest.mark.parametrize("make,kind", [(pickle_file, "scikit-learn"), (mlflow_dir, "MLflow model directory"), (checkpoint_dir, "checkpoint directory, 2 files")])
def test_register_each_kind_of_model_path(stack_sqlite, cli_sqlite, tmp_path, token_id, make, kind):
    stack_sqlite.create_token(token_id, "auroc", 0.82)
    result = cli_sqlite.register(token_id, make(tmp_path), "--metric-value", "0.9")
    assert result.exit_code == 0, result.output
    assert kind in result.stderr
    token = assert_registered(stack_sqlite, token_id, 0.9)
    uri = f"models:/{token['model_name']}/{token['model_version']}"
    if make is checkpoint_dir:
        loaded = mlflow.pyfunc.load_model(uri)
        with pytest.raises(NotImplementedError, match="checkpoint files"):
            loaded.predict(pd.DataFrame({"a": [1.0]}))
        files = mlflow.artifacts.download_artifacts(f"{uri}", dst_path=str(tmp_path / "down"))
        assert (Path(files) / "artifacts" / "checkpoints" / "shards" / "optimizer.bin").stat().st_size == 512
    else:
        loaded = mlflow.pyfunc.load_model(uri)
        assert len(loaded.predict(pd.DataFrame([[1.0, 0.0, 0.0]]).to_numpy())) == 1


def test_eval_data_with_an_mlflow_sklearn_directory(stack_sqlite, cli_sqlite, tmp_path, eval_case, token_id):
    model_path, csv, expected = eval_case
    directory = tmp_path / "saved"
    mlflow.sklearn.save_model(joblib.load(model_path), directory, pip_requirements=PIP)
    stack_sqlite.create_token(token_id, "auroc", 0.82)
    result = cli_sqlite.register(token_id, directory, "--eval-data", csv, "--target", "target")
    assert result.exit_code == 0, result.output
    assert_registered(stack_sqlite, token_id, expected)


def test_a_token_without_a_bar_takes_the_given_one(stack_sqlite, cli_sqlite, tmp_path, token_id):
    stack_sqlite.create_token(token_id, None, None)
    outcome = cli_sqlite.json("model", "register", "--token-id", token_id, "--model-path", joblib_file(tmp_path),
                              "--metric", "AUROC", "--baseline", "0.82", "--metric-value", "0.85")
    assert outcome["status"] == "registered"
    token = assert_registered(stack_sqlite, token_id, 0.85)
    assert (token["metric_name"], token["baseline_value"]) == ("auroc", 0.82)


def test_the_tokens_bar_is_the_default(stack_sqlite, cli_sqlite, tmp_path, token_id):
    stack_sqlite.create_token(token_id, "auroc", 0.82)
    cli_sqlite.ok("model", "register", "--token-id", token_id, "--model-path", joblib_file(tmp_path), "--metric-value", "0.9")
    assert_registered(stack_sqlite, token_id, 0.9)


def test_decides_itself_when_no_receiver_answers(stack_sqlite, cli_sqlite, tmp_path, token_id):
    stack_sqlite.create_token(token_id, "auroc", 0.82)
    stack_sqlite.receiver.stop()
    try:
        started = time.monotonic()
        result = cli_sqlite.register(token_id, joblib_file(tmp_path), "--metric-value", "0.9", "--wait", "0.5")
        assert result.exit_code == 0, result.output
        assert time.monotonic() - started < 60
    finally:
        stack_sqlite.receiver.start()
    assert_registered(stack_sqlite, token_id, 0.9)
    assert stack_sqlite.registration(f"hokusai-{token_id.lower()}", 1).delivery_id is None  # ours, not a webhook's


# -- status and list -----------------------------------------------------------------------------


def test_status_shows_the_token_and_its_versions_newest_first(stack_sqlite, cli_sqlite, tmp_path, token_id):
    stack_sqlite.create_token(token_id, "auroc", 0.82)
    path = joblib_file(tmp_path)
    assert cli_sqlite.register(token_id, path, "--metric-value", "0.7").exit_code == 1
    assert cli_sqlite.register(token_id, path, "--metric-value", "0.88").exit_code == 0

    shown = cli_sqlite.json("model", "status", token_id.lower())
    assert (shown["token_id"], shown["status"], shown["model_version"]) == (token_id, "registered", "2")
    assert [(r["model_version"], r["outcome"], r["metric_value"]) for r in shown["registrations"]] == [
        ("2", "registered", 0.88), ("1", "rejected", 0.7)]
    text = cli_sqlite.ok("model", "status", token_id).stdout.splitlines()
    assert token_id in text[0] and "registered" in text[0] and "auroc >= 0.82" in text[0]
    assert "v2  registered" in text[1] and "auroc 0.88 (baseline 0.82)" in text[1]
    assert "v1  rejected" in text[2] and "below the baseline" in text[2]

    msg = cli_sqlite.error("model", "register", "--token-id", token_id, "--model-path", path, "--metric-value", "0.99")
    assert f"Token '{token_id}' is registered already (model hokusai-{token_id.lower()} version 2)" in msg


def test_list_shows_metric_baseline_and_outcome_best_first(stack_sqlite, cli_sqlite, tmp_path, token_id):
    path = joblib_file(tmp_path)
    ids = {value: f"{token_id}-{i}" for i, value in enumerate((0.86, 0.97, 0.5, 0.91))}
    for value, tid in ids.items():
        stack_sqlite.create_token(tid, "auroc", 0.82)
        cli_sqlite.register(tid, path, "--metric-value", value)
    rmse_token = f"{token_id}-R"
    stack_sqlite.create_token(rmse_token, "rmse", 0.5)
    cli_sqlite.ok("model", "register", "--token-id", rmse_token, "--model-path", path, "--metric-value", "0.2")

    ours = set(ids.values()) | {rmse_token}
    rows = [r for r in cli_sqlite.json("model", "list") if r["token_id"] in ours]
    auroc = [(r["token_id"], r["metric_value"], r["baseline_value"], r["outcome"]) for r in rows if r["metric_name"] == "auroc"]
    assert auroc == [(ids[0.97], 0.97, 0.82, "registered"), (ids[0.91], 0.91, 0.82, "registered"),
                     (ids[0.86], 0.86, 0.82, "registered"), (ids[0.5], 0.5, 0.82, "rejected")]
    assert [r["token_id"] for r in rows if r["metric_name"] == "rmse"] == [rmse_token]

    rejected = cli_sqlite.json("model", "list", "--status", "rejected", "--token", ids[0.5])
    assert [(r["model_name"], r["outcome"]) for r in rejected] == [(f"hokusai-{ids[0.5].lower()}", "rejected")]
    assert cli_sqlite.json("model", "list", "--status", "rejected", "--token", ids[0.97]) == []

    text = cli_sqlite.ok("model", "list", "--token", ids[0.97]).stdout.splitlines()
    assert text[0].split() == ["TOKEN", "MODEL", "VERSION", "METRIC", "VALUE", "BASELINE", "OUTCOME", "REASON"]
    assert text[1].split()[:7] == [ids[0.97], f"hokusai-{ids[0.97].lower()}", "1", "auroc", "0.97", "0.82", "registered"]
    assert cli_sqlite.ok("model", "list", "--token", f"{token_id}-NONE").stdout.strip() == "No registrations."


def test_list_latest_shows_the_newest_version_of_each_model(stack_sqlite, cli_sqlite, tmp_path, token_id):
    """A token's model rejected at version 1, then registered at version 2 of the same model."""
    stack_sqlite.create_token(token_id, "auroc", 0.82)
    path = joblib_file(tmp_path)
    cli_sqlite.register(token_id, path, "--metric-value", "0.5")
    cli_sqlite.ok("model", "register", "--token-id", token_id, "--model-path", path, "--metric-value", "0.9")
    name = f"hokusai-{token_id.lower()}"

    def versions(*args):
        return [(r["model_version"], r["outcome"]) for r in cli_sqlite.json("model", "list", *args)]

    assert sorted(versions("--token", token_id)) == [("1", "rejected"), ("2", "registered")]
    assert versions("--token", token_id, "--latest") == [("2", "registered")]
    assert versions("--model", name, "--latest", "--status", "rejected") == [("1", "rejected")]
    assert versions("--model", name + "-none") == []


def test_sort_puts_the_best_first_by_direction_and_missing_values_last():
    def reg(name, metric, value):
        return Registration(model_name=name, model_version="1", metric_name=metric, metric_value=value, outcome="x", reason="")

    rows = [reg("a", "auroc", 0.8), reg("b", "auroc", None), reg("c", "rmse", 0.3), reg("d", "auroc", 0.9),
            reg("e", "rmse", 0.1), reg("f", None, None)]
    assert [r.model_name for r in sort_best_first(rows)] == ["d", "a", "e", "c", "b", "f"]


# -- errors: one sentence each, exit 1 for the domain and 2 for options ---------------------------


def test_unknown_token(offline, tmp_path):
    msg = offline.error("model", "register", "--token-id", "nosuch", "--model-path", joblib_file(tmp_path), "--metric", "auroc",
                        "--baseline", "0.82", "--metric-value", "0.9")
    assert msg == "Error: Unknown token 'NOSUCH': create it with 'hokusai token create NOSUCH'."
    assert offline.error("model", "status", "nosuch") == msg


def test_missing_model_path(offline, tmp_path):
    msg = offline.error("model", "register", "--token-id", "X", "--model-path", tmp_path / "nope.pkl", "--metric-value", "0.9")
    assert f"Model path {tmp_path / 'nope.pkl'} does not exist" in msg


def test_corrupt_model_file(offline, tmp_path):
    bad = tmp_path / "model.pkl"
    bad.write_bytes(b"this is not a pickle")
    msg = offline.error("model", "register", "--token-id", "X", "--model-path", bad, "--metric-value", "0.9")
    assert f"Model file {bad} cannot be loaded as a pickle or joblib file" in msg
    assert "a directory that holds your checkpoint files" in msg


def test_unreadable_model_file(offline, tmp_path, monkeypatch):
    locked = joblib_file(tmp_path)
    if os.geteuid() == 0:  # root reads every file: the OS refusal is made where the file is opened
        import pathlib

        real_open = pathlib.Path.open

        def refuse(self, *args, **kwargs):
            if self == locked:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "open", refuse)
    else:
        locked.chmod(0)
    msg = offline.error("model", "register", "--token-id", "X", "--model-path", locked, "--metric-value", "0.9")
    assert f"Model file {locked} is not readable" in msg


def test_empty_model_directory(offline, tmp_path):
    (tmp_path / "empty").mkdir()
    msg = offline.error("model", "register", "--token-id", "X", "--model-path", tmp_path / "empty", "--metric-value", "0.9")
    assert "holds no files" in msg


@pytest.mark.parametrize("args,expected", [
    (["--metric", "gini", "--baseline", "0.8", "--metric-value", "0.9"], "'gini' is not a supported metric: use one of accuracy, auroc"),
    (["--metric", "auroc", "--baseline", "high", "--metric-value", "0.9"], "'high' is not a number: give a decimal such as 0.82."),
    (["--metric", "auroc", "--baseline", "0.8", "--metric-value", "high"], "'high' is not a number: give a decimal such as 0.82."),
    (["--metric", "auroc", "--baseline", "nan", "--metric-value", "0.9"], "The baseline nan for auroc is outside its valid range [0, 1]."),
    (["--metric", "auroc", "--baseline", "0.8"], "Give exactly one metric source: --metric-value, --run-id, or --eval-data with --target."),
    (["--metric-value", "0.9", "--run-id", "abc"], "(got --metric-value and --run-id)"),
    (["--metric-value", "0.9", "--target", "y"], "--eval-data and --target go together"),
    (["--metric-value", "0.9"], "Token 'OPT' has no metric yet: pass --metric (one of accuracy, auroc"),
])
def test_bad_options_exit_2(offline, tmp_path, args, expected):
    offline.ok("token", "create", "OPT")
    msg = offline.error("model", "register", "--token-id", "OPT", "--model-path", joblib_file(tmp_path), *args, code=2)
    assert expected in msg


def test_the_tokens_bar_is_authoritative(offline, tmp_path):
    offline.ok("token", "create", "BAR", "--metric", "auroc", "--baseline", "0.82")
    path = joblib_file(tmp_path)
    msg = offline.error("model", "register", "--token-id", "BAR", "--model-path", path, "--metric", "auroc", "--baseline", "0.5", "--metric-value", "0.6", code=2)
    assert "Token 'BAR' has the baseline 0.82, not 0.5; the token's baseline is authoritative" in msg
    msg = offline.error("model", "register", "--token-id", "BAR", "--model-path", path, "--metric", "f1", "--metric-value", "0.6", code=2)
    assert "Token 'BAR' is judged on auroc, not f1" in msg


def test_mlflow_unreachable_is_fast(offline, tmp_path):
    offline.ok("token", "create", "DOWN", "--metric", "auroc", "--baseline", "0.82")
    started = time.monotonic()
    msg = offline.error("model", "register", "--token-id", "DOWN", "--model-path", joblib_file(tmp_path), "--metric-value", "0.9")
    assert msg == f"Error: MLflow is unreachable at {UNREACHABLE_MLFLOW}: start it or set MLFLOW_TRACKING_URI."
    assert time.monotonic() - started < 10
    assert offline.json("token", "show", "DOWN")["status"] == "draft"


def test_database_unreachable(tmp_path):
    cli = Cli("postgresql://hokusai@127.0.0.1:9/hokusai")
    msg = cli.error("model", "register", "--token-id", "X", "--model-path", joblib_file(tmp_path), "--metric-value", "0.9")
    assert msg.startswith("Error: The token database at postgresql://hokusai@127.0.0.1:9/hokusai failed")
    assert cli.error("model", "list").startswith("Error: The token database at")


def test_metric_missing_from_the_run(stack_sqlite, cli_sqlite, tmp_path, token_id):
    stack_sqlite.create_token(token_id, "auroc", 0.82)
    with mlflow.start_run() as run:
        mlflow.log_metric("accuracy", 0.9)
    msg = cli_sqlite.error("model", "register", "--token-id", token_id, "--model-path", joblib_file(tmp_path), "--run-id", run.info.run_id)
    assert f"Metric 'auroc' is missing from run {run.info.run_id} (its metrics: accuracy)" in msg
    assert stack_sqlite.token(token_id)["status"] == "draft"


def test_eval_data_needs_a_scikit_learn_model_and_its_target(stack_sqlite, cli_sqlite, tmp_path, eval_case, token_id):
    model_path, csv, _ = eval_case
    stack_sqlite.create_token(token_id, "auroc", 0.82)
    msg = cli_sqlite.error("model", "register", "--token-id", token_id, "--model-path", checkpoint_dir(tmp_path), "--eval-data", csv, "--target", "target")
    assert "--eval-data needs a scikit-learn model" in msg and "checkpoint directory" in msg
    msg = cli_sqlite.error("model", "register", "--token-id", token_id, "--model-path", model_path, "--eval-data", csv, "--target", "label", code=2)
    assert "Column 'label' is not in" in msg


def test_debug_shows_the_traceback(offline, tmp_path):
    result = CliRunner().invoke(main, [*offline.args, "--debug", "model", "register", "--token-id", "X", "--model-path", tmp_path / "nope", "--metric-value", "1"])
    assert result.exit_code == 1 and type(result.exception).__name__ == "ModelError"


def test_the_platform_command_name_works():
    script = Path(sys.executable).parent / "hokusai-ml-platform"
    out = subprocess.run([str(script), "model", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for command in ("register", "status", "list"):
        assert command in out.stdout
