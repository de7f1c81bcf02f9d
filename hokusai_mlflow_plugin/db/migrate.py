"""Apply the token store's Alembic migrations in-process (``hokusai db upgrade``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from hokusai_mlflow_plugin.db.session import get_engine

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "hokusai_alembic_version"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    config = _config()
    with get_engine(url).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def is_current(url: str) -> bool:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    with get_engine(url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision() == head
