"""The model-register fixtures: the CLI on the live stack, and one with an MLflow that is not there."""

from tests.model_cli import cli, cli_sqlite, eval_case, offline  # noqa: F401 (fixtures)
