"""Engines and sessions for the token store.

SQLite gets ``BEGIN IMMEDIATE`` transactions and a busy timeout, so that concurrent writers wait for
each other instead of failing with "database is locked" when a read lock is upgraded.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()


def get_engine(url: str) -> sa.Engine:
    """One engine per URL for the life of the process."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create_engine(url)
        return engine


def _create_engine(url: str) -> sa.Engine:
    parsed = sa.make_url(url)
    if parsed.drivername == "postgresql":
        # psycopg 3 whatever SQLAlchemy's default for a bare postgresql:// (psycopg2 before 2.1)
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        # No pool_pre_ping: it costs a round trip per checkout, two per delivery (issue 3). A pooled
        # connection that died (a database restart) fails its statement instead: SQLAlchemy then
        # drops the whole pool, the receiver answers 503 and MLflow's delivery retries it.
        engine = sa.create_engine(parsed, connect_args=_connect_args(parsed))
        if parsed.get_backend_name() == "postgresql":
            sa.event.listen(engine, "connect", _without_jit)
        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let us issue BEGIN ourselves
        dbapi_connection.execute("PRAGMA foreign_keys=ON")
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection):
        # Writers take the write lock at BEGIN; a read_engine() connection only reads: a snapshot.
        deferred = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN DEFERRED" if deferred else "BEGIN IMMEDIATE")

    return engine


_READ_ONLY = "hokusai_read_only"


def read_engine(engine: sa.Engine) -> sa.Engine:
    """``engine`` for single-statement reads: no transaction of their own and no write lock. On
    PostgreSQL autocommit (no BEGIN, no ROLLBACK); on SQLite a deferred BEGIN, so that a read does
    not queue behind every writer for the write lock that our transactions take at BEGIN."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{_READ_ONLY: True})
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _connect_args(parsed) -> dict:
    if parsed.get_backend_name() == "postgresql":
        return {"connect_timeout": 5}
    return {}


def _without_jit(dbapi_connection, _record) -> None:
    """Short OLTP statements only: JIT compilation costs more than it saves (the relay's fan-out
    over a burst of 20k events spent most of its 250 ms compiling). A SET, not a startup option,
    which connection poolers such as PgBouncer refuse; where even the SET fails, JIT stays on."""
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET jit = off")
        dbapi_connection.commit()
    except Exception:
        dbapi_connection.rollback()


def is_postgresql(url: str) -> bool:
    return sa.make_url(url).get_backend_name() == "postgresql"


def libpq_dsn(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as libpq's (psycopg's own connections: LISTEN, the gateway's key check)."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


def _after_fork_in_child() -> None:
    # A forked worker must not use the parent's pooled connections: drop them without closing
    # (closing would close the parent's sockets too). SQLAlchemy's recipe for multiprocessing.
    for engine in list(_engines.values()):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def dispose(url: str) -> None:
    """Close the pooled connections of ``url``'s engine and forget it (before dropping a database)."""
    with _lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()


def dispose_all() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
