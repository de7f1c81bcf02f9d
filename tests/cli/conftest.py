"""The CLI fixtures shared with the model-register tests."""

from tests.model_cli import cli, cli_sqlite, eval_case, offline  # noqa: F401 (fixtures)
