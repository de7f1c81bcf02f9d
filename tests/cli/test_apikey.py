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
