"""``hokusai token ...`` and ``hokusai db upgrade`` through click's CliRunner, on a SQLite file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hokusai_mlflow_plugin.cli import main
from hokusai_mlflow_plugin.db.session import get_engine
from tests.cli.conftest import Cli

SHOW_KEYS = {
    "token_id", "status", "metric_name", "baseline_value", "metric_value", "mlflow_run_id", "model_name", "model_version",
}


pytestmark = pytest.mark.usefixtures("no_hokusai_settings")


@pytest.fixture
def empty_cli(tmp_path):
    url = f"sqlite:///{tmp_path / 't.db'}"
    yield Cli(url)
    get_engine(url).dispose()


@pytest.fixture
def cli(empty_cli):
    result = empty_cli.ok("db", "upgrade")
    assert f"Token database is current: {empty_cli.database_url}" in result.output
    return empty_cli


def test_create_then_show_as_json(cli):
    result = cli.ok("token", "create", "XRAY", "--metric", "auroc", "--baseline", "0.82")
    assert result.output.strip() == "Created token XRAY (draft)"
    shown = cli.json("token", "show", "XRAY")
    assert SHOW_KEYS <= set(shown)
    assert shown["token_id"] == "XRAY"
    assert shown["status"] == "draft"
    assert shown["metric_name"] == "auroc"
    assert shown["baseline_value"] == 0.82
    for key in ("metric_value", "mlflow_run_id", "model_name", "model_version"):
        assert shown[key] is None


def test_show_as_text_states_the_bar(cli):
    cli.ok("token", "create", "DEPTH", "--metric", "RMSE", "--baseline", "0.3")
    line = cli.ok("token", "show", "depth").output
    assert "DEPTH" in line and "draft" in line and "rmse <= 0.3" in line


def test_create_as_json_and_without_metric(cli):
    created = cli.json("token", "create", "plain")
    assert created["token_id"] == "PLAIN"
    assert (created["metric_name"], created["baseline_value"]) == (None, None)


def test_a_lower_case_id_is_stored_upper_case(cli):
    cli.ok("token", "create", "  xray-2 ", "--metric", "f1", "--baseline", "0.5")
    assert cli.json("token", "show", "XRAY-2")["token_id"] == "XRAY-2"
    assert cli.json("token", "show", "xray-2")["token_id"] == "XRAY-2"
    assert [t["token_id"] for t in cli.json("token", "list")] == ["XRAY-2"]


def test_list_filters_by_status(cli):
    cli.ok("token", "create", "A", "--metric", "auroc", "--baseline", "0.8")
    cli.ok("token", "create", "B")
    drafts = cli.json("token", "list", "--status", "draft")
    assert sorted(t["token_id"] for t in drafts) == ["A", "B"]
    assert all(t["status"] == "draft" for t in drafts)
    assert cli.json("token", "list", "--status", "registered") == []
    assert cli.ok("token", "list", "--status", "registered").output.strip() == "No tokens."


def test_a_duplicate_token_is_refused(cli):
    cli.ok("token", "create", "XRAY")
    message = cli.error("token", "create", "xray", "--metric", "auroc", "--baseline", "0.9")
    assert message == "Error: Token 'XRAY' exists already: see 'hokusai token show XRAY'."
    assert cli.json("token", "show", "XRAY")["metric_name"] is None  # the first one is untouched


def test_an_unknown_token_says_how_to_create_it(cli):
    assert cli.error("token", "show", "nope") == "Error: Unknown token 'NOPE': create it with 'hokusai token create NOPE'."


def test_an_invalid_token_id_is_refused(cli):
    message = cli.error("token", "create", "bad id!")
    assert "'bad id!' is not a token id" in message
    assert cli.json("token", "list") == []


def test_an_unsupported_metric_lists_the_supported_ones(cli):
    message = cli.error("token", "create", "XRAY", "--metric", "bleu", "--baseline", "0.5")
    assert "'bleu' is not supported" in message
    for name in ("auroc", "accuracy", "f1", "precision", "recall", "r2", "rmse", "mse", "mae", "log_loss"):
        assert name in message
    assert cli.json("token", "list") == []


@pytest.mark.parametrize("metric, baseline", [("auroc", "1.5"), ("accuracy", "-0.1"), ("rmse", "-1"), ("auroc", "nan")])
def test_a_baseline_out_of_range_is_refused(cli, metric, baseline):
    message = cli.error("token", "create", "XRAY", "--metric", metric, "--baseline", baseline)
    assert f"for {metric} is outside its valid range" in message
    assert cli.json("token", "list") == []


def test_a_baseline_without_a_metric_is_refused(cli):
    message = cli.error("token", "create", "XRAY", "--baseline", "0.8")
    assert "A baseline needs its metric" in message and "--metric" in message


def test_a_bad_status_lists_the_statuses(cli):
    message = cli.error("token", "list", "--status", "pending")
    assert message == "Error: Unknown status 'pending': use one of draft, registered, deployed, archived."


def test_a_non_numeric_baseline_is_a_usage_error(cli):
    message = cli.error("token", "create", "XRAY", "--metric", "auroc", "--baseline", "abc", code=2)
    assert "'abc' is not a number: give a decimal such as 0.82." in message
    assert "--baseline" in cli("token", "create", "XRAY", "--metric", "auroc", "--baseline", "abc").output


def test_an_unreachable_database_names_the_redacted_url():
    message = Cli("postgresql://u:secretpw@127.0.0.1:1/x").error("token", "list")  # the whole output
    assert "secretpw" not in message
    assert "postgresql://u:***@127.0.0.1:1/x" in message
    assert "check HOKUSAI_DATABASE_URL and that the database is running" in message


def test_a_missing_table_says_to_run_db_upgrade(empty_cli):
    message = empty_cli.error("token", "list")
    assert "no such table" in message
    assert "run 'hokusai db upgrade'" in message
    assert "run 'hokusai db upgrade'" in empty_cli.error("token", "create", "XRAY")


def test_debug_lets_the_traceback_through(cli):
    result = cli.runner.invoke(main, ["--database-url", cli.database_url, "--debug", "token", "show", "NOPE"])
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "TokenError"


def test_the_database_url_may_come_from_the_environment(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("HOKUSAI_DATABASE_URL", url)
    runner = CliRunner()
    try:
        assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
        assert runner.invoke(main, ["token", "create", "ENV"]).exit_code == 0
        assert (tmp_path / "env.db").exists()
    finally:
        get_engine(url).dispose()


def test_an_unparseable_database_url_is_a_clean_error(tmp_path):
    message = Cli("not a url").error("token", "list")
    assert "SQLAlchemy URL" in message


@pytest.mark.parametrize("script", ["hokusai", "hokusai-ml-platform"])
def test_both_console_scripts_are_installed_and_answer_help(script):
    path = Path(sys.executable).parent / script
    assert path.exists(), f"{path} is not installed"
    result = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"Usage: {script} " in result.stdout
    for group in ("db", "token"):
        assert f"  {group} " in result.stdout


# -- owners and grants -------------------------------------------------------------------------------


@pytest.fixture
def people(cli):
    """Users alice and bob, and team vision with alice in it."""
    for args in (("user", "create", "alice"), ("user", "create", "bob"), ("team", "create", "vision"),
                 ("team", "add", "vision", "alice")):
        cli.ok(*args)
    return cli


def test_create_with_an_owner_shows_it(people):
    cli = people
    created = cli.ok("token", "create", "XRAY", "--metric", "auroc", "--baseline", "0.82", "--owner", "vision")
    assert created.output.strip() == "Created token XRAY (draft), owned by team 'vision'"
    shown = cli.json("token", "show", "XRAY")
    assert (shown["owner"], shown["owner_kind"], shown["grants"]) == ("vision", "team", [])
    assert cli.json("token", "create", "DEPTH", "--owner", "alice")["owner_kind"] == "user"
    text = cli.ok("token", "show", "XRAY").output.splitlines()
    assert text[1:] == ["owner: team 'vision'", "grants: none"]
    unowned = cli.json("token", "create", "PLAIN")
    assert (unowned["owner"], unowned["owner_kind"]) == (None, None)
    assert cli.ok("token", "show", "PLAIN").output.splitlines()[1] == "owner: none (only admin keys reach it)"


def test_an_unknown_owner_is_refused_and_no_token_made(people):
    message = people.error("token", "create", "XRAY", "--owner", "carol")
    assert message == "Error: No user or team named 'carol': create it with 'hokusai user create carol'."
    assert people.json("token", "list") == []


def test_list_unowned_shows_only_the_tokens_without_an_owner(people):
    cli = people
    cli.ok("token", "create", "OWNED", "--owner", "alice")
    cli.ok("token", "create", "LEGACY")
    cli.ok("token", "create", "TEAMS", "--owner", "vision")
    cli.ok("token", "create", "OLD", "--metric", "auroc", "--baseline", "0.8")
    assert [t["token_id"] for t in cli.json("token", "list", "--unowned")] == ["LEGACY", "OLD"]
    assert all(t["owner"] is None for t in cli.json("token", "list", "--unowned"))
    assert [t["token_id"] for t in cli.json("token", "list")] == ["OWNED", "LEGACY", "TEAMS", "OLD"]
    assert cli.json("token", "list", "--unowned", "--status", "registered") == []
    listed = cli.ok("token", "list").output.splitlines()
    assert listed[0].startswith("OWNED") and listed[0].endswith("owner user 'alice'")
    assert listed[1].startswith("LEGACY") and listed[1].endswith("no owner")
    cli.ok("token", "set-owner", "LEGACY", "bob")
    cli.ok("token", "set-owner", "OLD", "vision")
    assert cli.ok("token", "list", "--unowned").output.strip() == "No tokens without an owner."


def test_set_owner_and_take_it_away(people):
    cli = people
    cli.ok("token", "create", "XRAY")
    assert cli.ok("token", "set-owner", "xray", "vision").output.strip() == "Token XRAY is owned by team 'vision' now."
    moved = cli.json("token", "set-owner", "XRAY", "bob")
    assert (moved["owner"], moved["owner_kind"]) == ("bob", "user")
    taken = cli.ok("token", "set-owner", "XRAY", "--none").output.strip()
    assert taken == "Token XRAY has no owner now: only admin keys reach it."
    assert cli.json("token", "show", "XRAY")["owner"] is None
    for args in (("XRAY",), ("XRAY", "bob", "--none")):
        assert "Give either the new owner's NAME or --none" in cli.error("token", "set-owner", *args, code=2)
    assert cli.error("token", "set-owner", "XRAY", "carol") == (
        "Error: No user or team named 'carol': create it with 'hokusai user create carol'.")
    assert cli.error("token", "set-owner", "NOPE", "bob") == (
        "Error: Unknown token 'NOPE': create it with 'hokusai token create NOPE'.")
    assert cli.json("token", "show", "XRAY")["owner"] is None


def test_grant_then_revoke_grant(people):
    cli = people
    cli.ok("token", "create", "XRAY", "--owner", "alice")
    assert cli.ok("token", "grant", "XRAY", "bob", "--permission", "read").output.strip() == (
        "Granted read on token XRAY to user 'bob'.")
    granted = cli.json("token", "grant", "XRAY", "vision", "--permission", "register")
    assert granted["grants"] == [{"name": "bob", "kind": "user", "permission": "read"},
                                 {"name": "vision", "kind": "team", "permission": "register"}]
    cli.ok("token", "grant", "XRAY", "bob", "--permission", "register")  # replaces bob's read
    shown = cli.json("token", "show", "XRAY")
    assert shown["owner"] == "alice"
    assert [(g["name"], g["permission"]) for g in shown["grants"]] == [("bob", "register"), ("vision", "register")]
    assert cli.ok("token", "show", "XRAY").output.splitlines()[2] == (
        "grants: user 'bob' register, team 'vision' register")

    assert cli.ok("token", "revoke-grant", "XRAY", "bob").output.strip() == "Revoked the grant of 'bob' on token XRAY."
    assert cli.json("token", "revoke-grant", "XRAY", "vision")["grants"] == []
    assert cli.json("token", "show", "XRAY")["grants"] == []
    assert cli.error("token", "revoke-grant", "XRAY", "bob") == (
        "Error: User 'bob' has no grant on token 'XRAY': see 'hokusai token show XRAY'.")
    assert cli.json("token", "show", "XRAY")["owner"] == "alice"  # the owner is not a grant


def test_a_grant_needs_a_known_permission_and_principal(people):
    cli = people
    cli.ok("token", "create", "XRAY")
    message = cli.error("token", "grant", "XRAY", "bob", "--permission", "deploy", code=2)
    assert "'deploy' is not one of 'read', 'register'" in message
    missing = cli("token", "grant", "XRAY", "bob")
    assert missing.exit_code == 2 and "Error: Missing option '--permission'. Choose from:" in missing.output
    assert cli.error("token", "grant", "XRAY", "carol", "--permission", "read") == (
        "Error: No user or team named 'carol': create it with 'hokusai user create carol'.")
    assert cli.json("token", "show", "XRAY")["grants"] == []


class FakeApi:
    """The HTTP API's client as the CLI uses it, recording its calls."""

    def __init__(self):
        self.calls = []
        self.rows = [{"token_id": "LEGACY", "status": "draft", "metric_name": None, "baseline_value": None,
                      "model_name": None, "owner": None, "owner_kind": None}]

    def tokens(self, **query):
        self.calls.append(query)
        return iter(self.rows)

    def token(self, token_id):
        return {**self.rows[0], "owner": "vision", "owner_kind": "team", "registrations": [],
                "grants": [{"name": "bob", "kind": "user", "permission": "read"}]}


def test_list_and_show_ask_the_api_when_it_is_configured(cli, monkeypatch):
    from hokusai_mlflow_plugin.cli.common import Context

    api = FakeApi()
    monkeypatch.setattr(Context, "api", lambda self: api)
    assert [t["token_id"] for t in cli.json("token", "list", "--unowned")] == ["LEGACY"]
    assert cli.ok("token", "list", "--status", "draft").output.strip().endswith("no owner")
    assert api.calls == [{"status": None, "unowned": True}, {"status": "draft"}]
    shown = cli.json("token", "show", "LEGACY")
    assert (shown["owner"], shown["owner_kind"]) == ("vision", "team") and "registrations" not in shown
    assert cli.ok("token", "show", "LEGACY").output.splitlines()[1:] == ["owner: team 'vision'", "grants: user 'bob' read"]
