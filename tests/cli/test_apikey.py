"""``hokusai apikey create | list | revoke``: a key printed once, never again, and refused once revoked."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from hokusai_mlflow_plugin.cli import main
from hokusai_mlflow_plugin.db.session import get_engine


def run(url, *args):
    return CliRunner().invoke(main, ["--database-url", url, *args])


def test_create_prints_the_key_once_and_list_never_shows_a_secret(db_url):
    created = run(db_url, "apikey", "create", "ci-training", "--scope", "read,register", "--expires-in", "90d")
    assert created.exit_code == 0, created.output
    key = re.search(r"hk_[0-9a-f]{8}_\S+", created.output).group(0)
    assert "shown only once" in created.output
    listed = run(db_url, "apikey", "list")
    assert listed.exit_code == 0 and "ci-training" in listed.output and "read,register" in listed.output
    assert key[12:] not in listed.output and key not in run(db_url, "apikey", "list", "--json").output
    [row] = json.loads(run(db_url, "apikey", "list", "--json").output)
    assert row["key_id"] == key[3:11] and row["last_used_at"] is None and row["expires_at"]


def test_json_create_and_revoke(db_url):
    made = json.loads(run(db_url, "apikey", "create", "ops", "--scope", "admin", "--json").output)
    assert made["key"].startswith(f"hk_{made['key_id']}_") and made["scopes"] == ["admin"]
    revoked = run(db_url, "apikey", "revoke", made["key_id"])
    assert revoked.exit_code == 0 and f"Revoked API key {made['key_id']}" in revoked.output
    from hokusai_mlflow_plugin.auth import keys

    try:
        with get_engine(db_url).begin() as conn:
            keys.authenticate(conn, made["key"])
    except keys.NotAuthenticated as e:
        assert "revoked" in str(e)
    else:
        raise AssertionError("a revoked key was accepted")


def test_bad_input_is_one_sentence(db_url):
    for args, words in [
        (("create", "x", "--scope", "write"), "Unknown scope 'write'"),
        (("create", "x", "--expires-in", "forever"), "such as 90d"),
        (("revoke", "nope"), "No API key 'nope'"),
    ]:
        result = run(db_url, "apikey", *args)
        assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output


def user_id(db_url, name):
    import sqlalchemy as sa

    from hokusai_mlflow_plugin.db.models import Principal

    with get_engine(db_url).connect() as conn:
        return conn.execute(sa.select(Principal.id).where(Principal.name == name, Principal.kind == "user")).scalar_one()


def caller(db_url, key):
    from hokusai_mlflow_plugin.auth import keys

    with get_engine(db_url).begin() as conn:
        return keys.authenticate(conn, key)


def test_a_key_made_with_user_acts_for_that_user(db_url):
    assert run(db_url, "user", "create", "alice").exit_code == 0
    made = json.loads(run(db_url, "apikey", "create", "laptop", "--user", "alice", "--scope", "register", "--json").output)
    assert made["user"] == "alice" and made["name"] == "laptop"
    assert caller(db_url, made["key"]).user_id == user_id(db_url, "alice")
    text = run(db_url, "apikey", "create", "ci", "--user", "alice", "--scope", "read")
    assert text.exit_code == 0 and "acting for user 'alice'" in text.output
    assert caller(db_url, re.search(r"hk_[0-9a-f]{8}_\S+", text.output).group(0)).user_id == user_id(db_url, "alice")
    assert [(k["name"], k["user"]) for k in json.loads(run(db_url, "apikey", "list", "--json").output)] == [
        ("laptop", "alice"), ("ci", "alice")]
    header, *rows = run(db_url, "apikey", "list").output.splitlines()
    assert header.split() == ["KEY", "ID", "NAME", "USER", "SCOPES", "LAST", "USED", "STATE"]
    assert all(row.split()[2] == "alice" for row in rows) and len(rows) == 2
    assert [u["name"] for u in json.loads(run(db_url, "user", "list", "--json").output)] == ["alice"]  # no user 'laptop'


def test_without_user_a_key_acts_for_its_own_name_and_an_admin_key_for_nobody(db_url):
    made = json.loads(run(db_url, "apikey", "create", "bob", "--scope", "read,register", "--json").output)
    assert made["user"] == "bob" and caller(db_url, made["key"]).user_id == user_id(db_url, "bob")
    assert [u["name"] for u in json.loads(run(db_url, "user", "list", "--json").output)] == ["bob"]
    ops = run(db_url, "apikey", "create", "ops", "--scope", "admin")
    assert ops.exit_code == 0 and "acting for no user (an operator's admin key)" in ops.output
    assert caller(db_url, re.search(r"hk_[0-9a-f]{8}_\S+", ops.output).group(0)).user_id is None
    assert [k["user"] for k in json.loads(run(db_url, "apikey", "list", "--json").output)] == ["bob", None]


def test_user_must_name_a_user_and_nothing_is_made_otherwise(db_url):
    assert run(db_url, "team", "create", "vision").exit_code == 0
    for user, sentence in [("carol", "Error: No user named 'carol': create it with 'hokusai user create carol'."),
                           ("vision", "Error: 'vision' is a team, not a user: give the name of a user (see 'hokusai "
                                      "user list').")]:
        result = run(db_url, "apikey", "create", "k", "--user", user, "--scope", "register")
        assert result.exit_code == 1 and "Traceback" not in result.output and "hk_" not in result.output
        assert result.output.startswith(sentence), result.output
    assert json.loads(run(db_url, "apikey", "list", "--json").output) == []
    assert json.loads(run(db_url, "user", "list", "--json").output) == []
