"""Who made each run and logged model created through the gateway: the key's user, taken from the
key and MLflow's answer (never from a tag), recorded before that answer reaches the client, so a
version registered right after finds it (``auth.ownership.provenance_refusal``).

One INSERT per creation, with SQLAlchemy in a worker thread, on SQLite and PostgreSQL alike: a run's
creation is one request per run, and the run loop's hot path (logging metrics) never comes here.
"""

from __future__ import annotations

import asyncio

from hokusai_mlflow_plugin.auth import keys, ownership
from hokusai_mlflow_plugin.auth.key_check import CHECK_TIMEOUT
from hokusai_mlflow_plugin.core.errors import DatabaseUnavailable
from hokusai_mlflow_plugin.db.errors import guarded
from hokusai_mlflow_plugin.db.session import get_engine
from webhook_app.gateway.scopes import Route, as_mlflow_reads


class MakerRecord:
    """``await record(kind, object_id, caller)``; ``DatabaseUnavailable`` when the token database
    cannot take it within ``CHECK_TIMEOUT``."""

    def __init__(self, database_url: str):
        self.database_url = database_url

    async def record(self, kind: str, object_id: str, caller: keys.Caller, experiment_id: str | None = None) -> None:
        work = asyncio.get_running_loop().run_in_executor(None, guarded, self._in_thread, kind, object_id, caller,
                                                          experiment_id)
        try:
            # A database that hangs without a word holds the client no longer than a key check would;
            # the thread ends by itself (its INSERT, if it lands late, records the truth all the same).
            await asyncio.wait_for(asyncio.shield(work), CHECK_TIMEOUT)
        except TimeoutError:
            work.add_done_callback(lambda f: f.cancelled() or f.exception())  # its end is of no interest
            raise DatabaseUnavailable(f"The token database did not answer within {CHECK_TIMEOUT:g} s") from None

    def _in_thread(self, kind: str, object_id: str, caller: keys.Caller, experiment_id: str | None) -> None:
        with get_engine(self.database_url).begin() as conn:
            ownership.record_maker(conn, kind, object_id, caller, experiment_id)


def made_id(route: Route, answer: bytes) -> str | None:
    """The id of the object MLflow's 200 answer to ``route`` says it created, or None."""
    found = as_mlflow_reads(answer)
    for name in route.made_id:
        found = found.get(name) if isinstance(found, dict) else None
    return found if isinstance(found, str) and 0 < len(found) <= 64 else None


def made_experiment(route: Route, answer: bytes) -> str | None:
    """The experiment MLflow's answer says the new run or logged model is in."""
    found = as_mlflow_reads(answer)
    for name in (*route.made_id[:-1], "experiment_id"):
        found = found.get(name) if isinstance(found, dict) else None
    return str(found) if isinstance(found, (str, int)) and 0 < len(str(found)) <= 64 else None
