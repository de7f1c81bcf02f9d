"""``hokusai token ...`` and ``hokusai db upgrade`` through click's CliRunner, on a SQLite file; the
token's life (deploy, undeploy, archive, history) also on the live stack's database and MLflow."""

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


# -- the token's life after its registration -------------------------------------------------------


def registered(database_url: str, token_id: str, model_name: str = "xray-model", version: str = "3") -> None:
    """Token ``token_id`` as a registration leaves it: registered, with its version and its
    registration row (no MLflow here)."""
    from hokusai_mlflow_plugin.db.models import Registration, Token, utcnow
    from hokusai_mlflow_plugin.db.session import session_factory

    with session_factory(database_url).begin() as s:
        s.add(Token(token_id=token_id, status="registered", metric_name="auroc", baseline_value=0.8, metric_value=0.9,
                    model_name=model_name, model_version=version, mlflow_run_id="r" * 32))
        s.add(Registration(model_name=model_name, model_version=version, token_id=token_id, outcome="registered",
                           reason="auroc 0.9 meets the baseline 0.8", metric_name="auroc", metric_value=0.9,
                           baseline_value=0.8, mlflow_run_id="r" * 32, created_at=utcnow()))


def test_archive_and_history_on_the_database_name_the_os_user(cli, monkeypatch):
    monkeypatch.setenv("USER", "ops-jane")  # getpass reads LOGNAME first
    monkeypatch.setenv("LOGNAME", "ops-jane")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    registered(cli.database_url, "XRAY")
    cli.ok("token", "create", "DRAFTY")
    assert cli.ok("token", "history", "DRAFTY").output.strip() == "Token DRAFTY has not changed status yet: it is a draft."

    # deploying needs MLflow (the version's alias): without it nothing changes
    message = cli.error("token", "deploy", "XRAY", "--model", "xray-model", "--version", "3", "--target", "production")
    assert "MLFLOW_TRACKING_URI is not set" in message
    assert cli.json("token", "show", "XRAY")["status"] == "registered"
    assert cli.error("token", "undeploy", "DRAFTY") == (
        "Error: Token 'DRAFTY' is draft, not deployed: there is no deployment to end.")
    assert cli.ok("token", "undeploy", "XRAY").output.strip() == "XRAY is not deployed: nothing changed."

    # archiving a token that does not serve needs no MLflow
    archived = cli.ok("token", "archive", "xray", "--reason", "superseded by XRAY-2").output.strip()
    assert archived == ("Token XRAY is archived (it was registered): it takes no model from now on; "
                        "make a new token for a new model.")
    assert cli.ok("token", "archive", "XRAY").output.strip() == "XRAY is archived already: nothing changed."
    assert cli.json("token", "archive", "XRAY")["status"] == "archived"
    assert "archived" in cli.ok("token", "list", "--status", "archived").output
    message = cli.error("token", "deploy", "XRAY", "--model", "xray-model", "--version", "3", "--target", "production")
    assert "is archived: an archived token is never deployed nor un-archived; make a new token instead" in message

    history = cli.json("token", "history", "XRAY")
    assert [(h["from"], h["to"], h["actor"]) for h in history] == [
        ("draft", "registered", "mlflow"), ("registered", "archived", "ops-jane (command line)")]
    assert (history[1]["reason"], history[1]["model_version"], history[1]["key_id"]) == ("superseded by XRAY-2", "3", "cli")
    lines = cli.ok("token", "history", "XRAY").output.splitlines()
    assert lines[0].split() == ["WHEN", "CHANGE", "WHO", "VERSION", "TARGET", "WHY"]
    assert "draft -> registered" in lines[1] and "xray-model v3" in lines[1]
    assert "registered -> archived" in lines[2] and "ops-jane (command line)" in lines[2] and lines[2].endswith("superseded by XRAY-2")
    assert cli.error("token", "history", "NOPE") == "Error: Unknown token 'NOPE': create it with 'hokusai token create NOPE'."


def test_deploy_undeploy_archive_on_the_database_move_the_alias_in_mlflow(pg_stack, token_id, unique_name, monkeypatch):
    """The operator's CLI on the live stack's database: the alias follows, each event is written
    once, and the relay is left to find them."""
    from tests.mlflow_helpers import train_and_register

    pg_stack.create_token(token_id, "auroc", 0.8)
    monkeypatch.setenv("HOKUSAI_TOKEN_ID", token_id)
    _, version = train_and_register(unique_name, {"auroc": 0.9})
    assert pg_stack.wait_decided(unique_name, version).outcome == "registered"
    monkeypatch.delenv("HOKUSAI_TOKEN_ID")
    cli, version = Cli(pg_stack.db_url), str(version)
    deploy = ("token", "deploy", token_id, "--model", unique_name, "--version", version, "--target", "production")

    assert cli.ok(*deploy).output.strip() == f"Token {token_id} is deployed: {unique_name} v{version} serves at production."
    assert str(pg_stack.client.get_model_version_by_alias(unique_name, "production").version) == version
    assert cli.ok(*deploy).output.strip() == f"{token_id} is deployed to production already: nothing changed."
    shown = cli.json(*deploy)
    assert (shown["status"], shown["deployment_target"], shown["alias_set"]) == ("deployed", "production", True)
    assert cli.ok("token", "show", token_id).output.splitlines()[0].endswith("serving at production")
    assert len(pg_stack.events(token_id, "token_deployed")) == 1
    other = cli.error("token", "deploy", token_id, "--model", unique_name, "--version", "99", "--target", "production")
    assert f"its registered version is '{unique_name}' version {version}" in other
    elsewhere = cli.error("token", "deploy", token_id, "--model", unique_name, "--version", version, "--target", "staging")
    assert "is deployed to 'production' already: undeploy it before deploying it to 'staging'" in elsewhere
    bad = cli.error("token", "deploy", token_id, "--model", unique_name, "--version", version, "--target", "latest")
    assert "'latest' is not a deployment target" in bad

    undone = cli.ok("token", "undeploy", token_id).output.strip()
    assert undone == f"Token {token_id} is registered again: {unique_name} v{version} no longer serves at production."
    assert "production" not in pg_stack.client.get_registered_model(unique_name).aliases
    cli.ok(*deploy)
    assert cli.json("token", "archive", token_id, "--reason", "retired")["status"] == "archived"
    assert "production" not in pg_stack.client.get_registered_model(unique_name).aliases  # archiving ends the deployment
    assert [(h["to"], h["target"]) for h in cli.json("token", "history", token_id)] == [
        ("registered", None), ("deployed", "production"), ("registered", "production"), ("deployed", "production"),
        ("archived", None)]
    assert [len(pg_stack.events(token_id, t)) for t in ("token_deployed", "token_undeployed", "token_archived")] == [2, 1, 1]
