"""``hokusai user ...``: the people API keys act for. Users and teams share one namespace."""

from __future__ import annotations

import click

from hokusai_mlflow_plugin.cli.common import domain_errors, emit, pass_ctx, table


@click.group()
def user():
    """Create and list users: each API key acts for one, and a user may own tokens."""


@user.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def user_create(obj, name, as_json):
    """Create user NAME (a name no user or team has yet)."""
    from hokusai_mlflow_plugin.auth import principals
    from hokusai_mlflow_plugin.db.models import USER

    with obj.sessions().begin() as session:
        made = principals.create(session, name, USER)
        data = principals.user_view(session, made.name)
    emit(data, as_json, f"Created user '{data['name']}'. Give it a key with 'hokusai apikey create KEYNAME --user {data['name']}'.")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def user_list(obj, as_json):
    """List the users and the teams each belongs to."""
    from hokusai_mlflow_plugin.auth import principals

    with obj.sessions()() as session:
        data = principals.list_users(session)
    rows = [(u["name"], ",".join(u["teams"]) or "-") for u in data]
    emit(data, as_json, table(("NAME", "TEAMS"), rows) if rows else "No users.")
