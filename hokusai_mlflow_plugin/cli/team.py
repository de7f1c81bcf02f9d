"""``hokusai team ...``: teams and their members. A team may own tokens, and its members reach them."""

from __future__ import annotations

import click

from hokusai_mlflow_plugin.cli.common import domain_errors, emit, pass_ctx, table


@click.group()
def team():
    """Create and list teams, add and remove their members."""


@team.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def team_create(obj, name, as_json):
    """Create team NAME (a name no user or team has yet)."""
    from hokusai_mlflow_plugin.auth import principals
    from hokusai_mlflow_plugin.db.models import TEAM

    with obj.sessions().begin() as session:
        made = principals.create(session, name, TEAM)
        data = principals.team_view(session, made.name)
    emit(data, as_json, f"Created team '{data['name']}'. Add members with 'hokusai team add {data['name']} USER'.")


@team.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def team_list(obj, as_json):
    """List the teams and their members."""
    from hokusai_mlflow_plugin.auth import principals

    with obj.sessions()() as session:
        data = principals.list_teams(session)
    rows = [(t["name"], ",".join(t["members"]) or "-") for t in data]
    emit(data, as_json, table(("NAME", "MEMBERS"), rows) if rows else "No teams.")


@team.command("add")
@click.argument("team_name", metavar="TEAM")
@click.argument("user_name", metavar="USER")
@click.option("--json", "as_json", is_flag=True, help="Print the team as JSON.")
@pass_ctx
@domain_errors
def team_add(obj, team_name, user_name, as_json):
    """Add USER to TEAM: the user reaches the team's tokens. Adding a member again changes nothing."""
    from hokusai_mlflow_plugin.auth import principals

    with obj.sessions().begin() as session:
        team_row, user_row, added = principals.add_member(session, team_name, user_name)
        data = principals.team_view(session, team_row.name)
    if added:
        text = f"Added user '{user_row.name}' to team '{team_row.name}'."
    else:
        text = f"User '{user_row.name}' is in team '{team_row.name}' already."
    emit(data, as_json, text)


@team.command("remove")
@click.argument("team_name", metavar="TEAM")
@click.argument("user_name", metavar="USER")
@click.option("--json", "as_json", is_flag=True, help="Print the team as JSON.")
@pass_ctx
@domain_errors
def team_remove(obj, team_name, user_name, as_json):
    """Remove USER from TEAM: the user no longer reaches the team's tokens."""
    from hokusai_mlflow_plugin.auth import principals

    with obj.sessions().begin() as session:
        team_row, user_row = principals.remove_member(session, team_name, user_name)
        data = principals.team_view(session, team_row.name)
    emit(data, as_json, f"Removed user '{user_row.name}' from team '{team_row.name}'.")
