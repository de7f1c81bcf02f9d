"""``hokusai model register``, the original platform's command, end to end: a model file or
directory logged to a real MLflow server, registered, and decided by the real receiver (or by the
command itself when no receiver answers); and its errors, one sentence each."""

from __future__ import annotations

import os
import time
from pathlib import Path

import joblib
import mlflow
import mlflow.sklearn
import pandas as pd
import pytest
from click.testing import CliRunner

from hokusai_mlflow_plugin.cli import main
from tests.mlflow_helpers import PIP
from tests.model_cli import (
    UNREACHABLE_MLFLOW,
    Cli,
    assert_registered,
    checkpoint_dir,
    joblib_file,
    mlflow_dir,
    pickle_file,
)

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
        # it decided after its --wait of 0.5 s, not after the minutes a receiver would need to come back
        assert time.monotonic() - started < 60
    finally:
        stack_sqlite.receiver.start()
    assert_registered(stack_sqlite, token_id, 0.9)
    assert stack_sqlite.registration(f"hokusai-{token_id.lower()}", 1).delivery_id is None  # ours, not a webhook's


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


def test_mlflow_unreachable_fails_without_mlflows_retries(offline, tmp_path):
    offline.ok("token", "create", "DOWN", "--metric", "auroc", "--baseline", "0.82")
    started = time.monotonic()
    msg = offline.error("model", "register", "--token-id", "DOWN", "--model-path", joblib_file(tmp_path), "--metric-value", "0.9")
    assert msg == f"Error: MLflow is unreachable at {UNREACHABLE_MLFLOW}: start it or set MLFLOW_TRACKING_URI."
    # MLflow's own client retries a refused connection 7 times with backoff (factor 2: minutes);
    # the fail-fast environment (mlflow_io.client.FAIL_FAST) retries once. 10 s tells the two apart
    # with a wide margin for a loaded machine: a behaviour, not a speed.
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


