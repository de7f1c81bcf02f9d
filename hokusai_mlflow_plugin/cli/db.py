"""``hokusai db ...``: the token database."""

from __future__ import annotations

import click

from hokusai_mlflow_plugin.cli.common import domain_errors, pass_ctx


@click.group()
def db():
    """The token database."""


@db.command("upgrade")
@pass_ctx
@domain_errors
def db_upgrade(obj):
    """Create or migrate the token database's tables."""
    from hokusai_mlflow_plugin.db.migrate import upgrade

    upgrade(obj.settings.database_url)
    click.echo(f"Token database is current: {obj.settings.safe_database_url}")
