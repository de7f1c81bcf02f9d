"""``hokusai user ...`` and ``hokusai team ...``: users and teams in one namespace, and teams'
members, on SQLite and PostgreSQL."""

from __future__ import annotations


def test_users_and_teams_are_created_and_listed(db_cli):
    made = db_cli.json("user", "create", "alice")
    assert (made["name"], made["teams"]) == ("alice", [])
    assert db_cli.ok("user", "create", "bob").output.startswith("Created user 'bob'.")
    team = db_cli.json("team", "create", "vision")
    assert (team["name"], team["members"]) == ("vision", [])
    assert [(u["name"], u["teams"]) for u in db_cli.json("user", "list")] == [("alice", []), ("bob", [])]
    assert [(t["name"], t["members"]) for t in db_cli.json("team", "list")] == [("vision", [])]
    assert db_cli.ok("team", "list").output.splitlines() == ["NAME    MEMBERS", "vision  -"]


def test_empty_lists_say_so(db_cli):
    assert db_cli.ok("user", "list").output.strip() == "No users."
    assert db_cli.ok("team", "list").output.strip() == "No teams."
    assert db_cli.json("user", "list") == [] and db_cli.json("team", "list") == []


def test_a_name_is_either_a_user_or_a_team(db_cli):
    db_cli.ok("user", "create", "alice")
    db_cli.ok("team", "create", "vision")
    assert db_cli.error("team", "create", "alice") == (
        "Error: The name 'alice' is taken by a user already: users and teams share one namespace, so that an "
        "owner is never ambiguous. Choose another name.")
    assert "is taken by a team already" in db_cli.error("user", "create", "vision")
    assert "is taken by a user already" in db_cli.error("user", "create", "alice")
    assert [u["name"] for u in db_cli.json("user", "list")] == ["alice"]
    assert [t["name"] for t in db_cli.json("team", "list")] == ["vision"]


def test_an_invalid_name_says_what_a_name_is(db_cli):
    message = db_cli.error("user", "create", "no spaces")
    assert message.startswith("Error: 'no spaces' is not a user name: use 1 to 128 characters")
    assert "is not a team name" in db_cli.error("team", "create", "_underscore-first")
    assert db_cli.json("user", "list") == [] and db_cli.json("team", "list") == []


def test_a_member_added_then_removed(db_cli):
    db_cli.ok("user", "create", "alice")
    db_cli.ok("user", "create", "bob")
    db_cli.ok("team", "create", "vision")
    assert db_cli.ok("team", "add", "vision", "alice").output.strip() == "Added user 'alice' to team 'vision'."
    assert db_cli.json("team", "add", "vision", "bob")["members"] == ["alice", "bob"]
    again = db_cli.ok("team", "add", "vision", "alice").output.strip()
    assert again == "User 'alice' is in team 'vision' already."
    assert {u["name"]: u["teams"] for u in db_cli.json("user", "list")} == {"alice": ["vision"], "bob": ["vision"]}
    assert "alice  vision" in db_cli.ok("user", "list").output

    assert db_cli.ok("team", "remove", "vision", "alice").output.strip() == "Removed user 'alice' from team 'vision'."
    assert db_cli.json("team", "list")[0]["members"] == ["bob"]
    assert {u["name"]: u["teams"] for u in db_cli.json("user", "list")} == {"alice": [], "bob": ["vision"]}
    assert db_cli.error("team", "remove", "vision", "alice") == (
        "Error: User 'alice' is not a member of team 'vision': see 'hokusai team list'.")


def test_membership_needs_a_known_team_and_a_known_user(db_cli):
    db_cli.ok("user", "create", "alice")
    db_cli.ok("team", "create", "vision")
    assert db_cli.error("team", "add", "vision", "carol") == (
        "Error: No user named 'carol': create it with 'hokusai user create carol'.")
    assert db_cli.error("team", "add", "audio", "alice") == (
        "Error: No team named 'audio': create it with 'hokusai team create audio'.")
    assert db_cli.error("team", "add", "alice", "alice") == (
        "Error: 'alice' is a user, not a team: give the name of a team (see 'hokusai team list').")
    assert db_cli.json("team", "list")[0]["members"] == []


def test_the_groups_are_on_the_root_help(db_cli):
    listed = db_cli.ok("--help").output
    assert "  user " in listed and "  team " in listed
    for command in ("create", "list", "add", "remove"):
        assert f"  {command} " in db_cli.ok("team", "--help").output
