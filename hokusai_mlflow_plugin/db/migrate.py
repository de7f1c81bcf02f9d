"""Apply the token store's Alembic migrations in-process (``hokusai db upgrade``), and tell whether
the database is ready for use (the receiver's readiness probe)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import exc

from hokusai_mlflow_plugin.core.errors import ConfigError, DatabaseUnavailable

from hokusai_mlflow_plugin.db.session import get_engine

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "hokusai_alembic_version"  # MLflow's own tables may share this database


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


def check_ready(url: str) -> None:
    """Return when the database answers and its schema is current; else ``DatabaseUnavailable``
    or ``ConfigError`` saying what to do."""
    try:
        current = is_current(url)
    except exc.SQLAlchemyError as e:
        cause = getattr(e, "orig", None) or e
        raise DatabaseUnavailable(f"database unreachable: {type(cause).__name__}") from e
    if not current:
        raise ConfigError("database schema is not current: run 'hokusai db upgrade'")
