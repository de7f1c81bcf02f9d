"""The command and environment of a local ``mlflow server`` wired for Hokusai (``hokusai up`` and
the tests).

The server runs MLflow's SQL backend, the ``hokusai+`` registry store on the same database, and the
webhook settings that DESIGN.md lists: http and private addresses allowed (the receiver runs on
loopback), and a stable secret-encryption key so that every worker can read webhook secrets.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def write_ahead_log(database: Path) -> None:
    """Put MLflow's SQLite file (made if missing) in write-ahead-log mode, which the file keeps.

    In SQLite's default (rollback-journal) mode a reader holds off a writer's commit and a commit
    holds off every reader: the receiver reading MLflow's database (``HOKUSAI_MLFLOW_STORE_URI``)
    and MLflow's own creates waited on each other, and each commit wrote and deleted a journal file.
    In WAL mode readers and the one writer go on side by side. Every process must be on this host,
    as ``hokusai up``'s are (WAL needs shared memory; it is not for a network file system)."""
    import sqlite3
    from contextlib import closing

    database.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(database)) as conn:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise RuntimeError(f"SQLite kept {database} in {mode!r} journal mode, not WAL")


def server_env(encryption_key: str, cache_ttl: int | None = None, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": encryption_key,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
    )
    if cache_ttl is not None:
        env["MLFLOW_WEBHOOK_CACHE_TTL"] = str(cache_ttl)
    return env


def server_command(
    backend_uri: str, artifacts_dir: Path | str, host: str, port: int, workers: int = 1, hokusai_store: bool = True
) -> list[str]:
    """``hokusai_store=False``: MLflow's plain registry store on the same backend (the benchmarks'
    baseline, MLflow alone)."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--backend-store-uri",
        backend_uri,
        "--registry-store-uri",
        ("hokusai+" if hokusai_store else "") + backend_uri,
        "--artifacts-destination",
        str(artifacts_dir),
    ]
