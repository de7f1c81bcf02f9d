"""The token database's failures as the domain's errors, classified by type, never by text."""

from __future__ import annotations

from sqlalchemy import exc

from hokusai_mlflow_plugin.core.errors import ConfigError, DatabaseUnavailable, HokusaiError, first_line


READ_ONLY_SQLSTATE = "25006"  # PostgreSQL's read_only_sql_transaction


def guarded(fn, *args, **kwargs):
    """Call ``fn``; a database that cannot be reached becomes ``DatabaseUnavailable`` (try again),
    a value it cannot store an ``invalid`` ``HokusaiError`` (nothing was written either way)."""
    try:
        return fn(*args, **kwargs)
    except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as e:
        cause = getattr(e, "orig", None) or e
        raise DatabaseUnavailable(f"The token database is unreachable: {type(cause).__name__}") from e
    except exc.InternalError as e:
        if getattr(e.orig, "sqlstate", None) != READ_ONLY_SQLSTATE:
            raise
        # A database that refuses writes (a read-only replica or database, a standby after a
        # failover): nothing was written; it is the operator's to fix, and a retry to wait for.
        raise DatabaseUnavailable("The token database refuses writes (it is read-only): point HOKUSAI_DATABASE_URL at the primary.") from e
    except exc.DataError as e:
        # A value the database cannot store (a NUL byte, an over-long name): the request is bad.
        raise HokusaiError(f"The token database cannot store this request: {type(e.orig).__name__}") from e


def explain(error: exc.SQLAlchemyError, url: str) -> HokusaiError | None:
    """What a failed statement against the database at ``url`` means for its user: a URL that is
    not one, a schema that is not migrated (asked of Alembic, not read from the message), or a
    database that is down. None for anything else."""
    from hokusai_mlflow_plugin.config import redact_url
    from hokusai_mlflow_plugin.db.migrate import is_current

    if isinstance(error, exc.ArgumentError):
        return ConfigError(
            "The database URL is not a SQLAlchemy URL: use a form such as "
            "postgresql://user:password@host:5432/hokusai or sqlite:////path/hokusai.db."
        )
    if not isinstance(error, (exc.OperationalError, exc.InterfaceError, exc.ProgrammingError)):
        return None
    failed = f"The token database at {redact_url(url)} failed ({first_line(error.orig or error, limit=200)})"
    try:
        current = is_current(url)
    except exc.SQLAlchemyError:
        current = None  # it cannot even be asked: it is down
    if current is False:
        return ConfigError(f"{failed}: run 'hokusai db upgrade'.")
    return DatabaseUnavailable(f"{failed}: check HOKUSAI_DATABASE_URL and that the database is running.")
