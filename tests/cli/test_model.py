"""``hokusai model status`` and ``hokusai model list``: registrations side by side, best first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.model_cli import joblib_file


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


def test_the_platform_command_name_works():
    script = Path(sys.executable).parent / "hokusai-ml-platform"
    out = subprocess.run([str(script), "model", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for command in ("register", "status", "list"):
        assert command in out.stdout
