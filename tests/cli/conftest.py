"""The CLI fixtures: the model-register ones, and ``Cli``, the real ``hokusai`` run by click's
CliRunner on one token database."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from hokusai_mlflow_plugin.cli import main
from tests.model_cli import cli, cli_sqlite, eval_case, offline  # noqa: F401 (fixtures)


class Cli:
    def __init__(self, database_url: str):
        self.database_url = database_url
        self.runner = CliRunner()

    def __call__(self, *args: str):
        return self.runner.invoke(main, ["--database-url", self.database_url, *args])

    def ok(self, *args: str):
        result = self(*args)
        assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str):
        return json.loads(self.ok(*args, "--json").output)

    def error(self, *args: str, code: int = 1) -> str:
        """The one-line message of a command that must fail cleanly."""
        result = self(*args)
        assert result.exit_code == code, result.output
        assert isinstance(result.exception, SystemExit), result.exception  # no escaped exception
        assert "Traceback" not in result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("Error: "), result.output
        if code == 1:
            assert len(lines) == 1, result.output
        return lines[-1]


@pytest.fixture
def no_hokusai_settings(monkeypatch):
    """No HOKUSAI_* variable of the shell reaches the command (HOKUSAI_API_URL would send it to an API)."""
    for var in list(os.environ):
        if var.startswith("HOKUSAI_"):
            monkeypatch.delenv(var)


@pytest.fixture
def db_cli(no_hokusai_settings, db_url):
    """The CLI on a fresh, migrated token database: SQLite, then PostgreSQL."""
    return Cli(db_url)
