"""MLflow's SQLite file in write-ahead-log mode (``hokusai up``, issue 23): a reader in the middle of
a read no longer holds off a writer's commit, which is what the receiver's reads of MLflow's
database and MLflow's own creates did to each other under a burst (in SQLite's default mode the
commit below fails with "database is locked" after its 0.1 s). ``hokusai up``'s own file is checked
in ``tests/cli/test_stack.py``."""

from __future__ import annotations

import sqlite3
from contextlib import closing

from hokusai_mlflow_plugin.stack.mlflow_server import write_ahead_log


def commit_while_a_read_is_open(path) -> None:
    """A reader holds its read open (a SHARED lock) while a writer commits, waiting 0.1 s at most."""
    with closing(sqlite3.connect(path)) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS versions (n INTEGER)")
        setup.execute("INSERT INTO versions VALUES (1)")
        setup.commit()
    with closing(sqlite3.connect(path, isolation_level=None)) as reader, closing(sqlite3.connect(path, timeout=0.1)) as writer:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM versions").fetchone() == (1,)
        writer.execute("INSERT INTO versions VALUES (2)")
        writer.commit()
        assert reader.execute("SELECT count(*) FROM versions").fetchone() == (1,)  # its snapshot
        reader.execute("COMMIT")


def test_in_write_ahead_log_mode_the_commit_goes_on_and_the_file_keeps_the_mode(tmp_path):
    database = tmp_path / "home" / "mlflow.db"  # its folder made too, as on a first `hokusai up`
    write_ahead_log(database)
    with closing(sqlite3.connect(database)) as fresh:
        assert fresh.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    commit_while_a_read_is_open(database)
    write_ahead_log(database)  # again, on the next start: nothing changes, nothing fails
    with closing(sqlite3.connect(database)) as fresh:
        assert fresh.execute("SELECT count(*) FROM versions").fetchone() == (2,)
