"""The ``hokusai`` command line (also installed as ``hokusai-ml-platform``): the root group. It
registers the command groups, one module each, and is imported by none of them."""

from __future__ import annotations

import logging
import os

import click

from hokusai_mlflow_plugin import __version__
from hokusai_mlflow_plugin.cli.apikey import apikey
from hokusai_mlflow_plugin.cli.common import Context
from hokusai_mlflow_plugin.cli.db import db
from hokusai_mlflow_plugin.cli.events import events
from hokusai_mlflow_plugin.cli.gateway import gateway
from hokusai_mlflow_plugin.cli.mlflow import mlflow
from hokusai_mlflow_plugin.cli.model import model
from hokusai_mlflow_plugin.cli.reconcile import reconcile
from hokusai_mlflow_plugin.cli.stack import demo, up
from hokusai_mlflow_plugin.cli.team import team
from hokusai_mlflow_plugin.cli.token import token
from hokusai_mlflow_plugin.cli.user import user
from hokusai_mlflow_plugin.cli.webhook import webhook


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": None})
@click.version_option(__version__, prog_name="hokusai")
@click.option("--config", "config_file", envvar="HOKUSAI_CONFIG", type=click.Path(dir_okay=False), help="A JSON or YAML settings file.")
@click.option("--database-url", envvar="HOKUSAI_DATABASE_URL", help="SQLAlchemy URL of the token database.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="The MLflow tracking server.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def main(ctx, config_file, database_url, tracking_uri, debug):
    """Connect Hokusai tokens to MLflow model registrations."""
    level = "DEBUG" if debug else os.environ.get("HOKUSAI_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level if isinstance(logging.getLevelName(level), int) else "WARNING",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = Context(config_file, {"database_url": database_url, "tracking_uri": tracking_uri}, debug)


for command in (db, token, model, events, reconcile, webhook, gateway, apikey, user, team, mlflow, up, demo):
    main.add_command(command)
