"""The gateway's questions to ``auth.mlflow_objects``, asked without blocking the event loop and
remembered where that is safe, so that the run loop's requests cost no database round trip.

- What experiment a run, logged model or trace is in never changes: remembered for good (from the
  maker's record, else asked of MLflow once).
- A caller's right on an object, and the list a search is narrowed to, are remembered for
  ``TTL`` seconds (a share, an unshare or a team change is heard within that time); a refusal
  is never remembered, so a teammate's new experiment is seen at once.
"""

from __future__ import annotations

import asyncio
import time

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.auth import mlflow_objects as objects
from hokusai_mlflow_plugin.auth.key_check import CHECK_TIMEOUT
from hokusai_mlflow_plugin.core.errors import DatabaseUnavailable
from hokusai_mlflow_plugin.db.errors import guarded
from hokusai_mlflow_plugin.db.models import MADE_LOGGED_MODEL, MADE_RUN
from hokusai_mlflow_plugin.db.session import get_engine

TTL = 5.0
REMEMBERED = 100_000  # entries of each memory; past it the memory starts again


class Owners:
    def __init__(self, database_url: str):
        self.database_url = database_url
        self._experiment_of: dict[tuple[str, str], str] = {}
        self._rights: dict[tuple[int, str, str], tuple[int, float]] = {}
        self._visible: dict[tuple[int, str], tuple[list[str], float]] = {}
        self._model_owner: dict[int, tuple[int | None, float]] = {}
        self._defaults: dict[int, str] = {}

    async def _db(self, work, *args):
        future = asyncio.get_running_loop().run_in_executor(None, guarded, self._in_thread, work, args)
        try:
            return await asyncio.wait_for(asyncio.shield(future), CHECK_TIMEOUT)
        except TimeoutError:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise DatabaseUnavailable(f"The token database did not answer within {CHECK_TIMEOUT:g} s") from None

    def _in_thread(self, work, args):
        with get_engine(self.database_url).begin() as conn:
            return work(conn, *args)

    # -- rights -------------------------------------------------------------------------------------

    async def right(self, caller: keys.Caller, kind: str, object_id: str) -> int:
        if objects.is_admin(caller):
            return objects.OWN
        if caller.user_id is None:
            return objects.NONE
        key = (caller.user_id, kind, object_id)
        found = self._rights.get(key)
        if found is None or found[1] < time.monotonic():
            have = await self._db(objects.user_right, caller.user_id, kind, object_id)
            if have == objects.NONE:
                return objects.NONE
            self._remember(self._rights, key, (have, time.monotonic() + TTL))
            found = (have,)
        return objects.ceiling(caller, found[0])

    async def visible(self, caller: keys.Caller, kind: str) -> list[str] | None:
        if objects.is_admin(caller):
            return None
        key = (caller.user_id, kind)
        found = self._visible.get(key)
        if found is None or found[1] < time.monotonic():
            ids = await self._db(objects.visible, caller, kind)
            found = (ids, time.monotonic() + TTL)
            self._remember(self._visible, key, found)
        return found[0]

    async def single_model_owner(self, caller: keys.Caller) -> int | None:
        """``objects.single_model_owner``, remembered as ``visible`` is."""
        found = self._model_owner.get(caller.user_id)
        if found is None or found[1] < time.monotonic():
            found = (await self._db(objects.single_model_owner, caller), time.monotonic() + TTL)
            self._remember(self._model_owner, caller.user_id, found)
        return found[0]

    def forget(self, caller: keys.Caller) -> None:
        """After ``caller`` made something: its next search and check see it."""
        for kind in objects.KINDS:
            self._visible.pop((caller.user_id, kind), None)
        self._model_owner.pop(caller.user_id, None)

    # -- where objects live -------------------------------------------------------------------------

    def known_experiment(self, kind: str, object_id: str) -> str | None:
        return self._experiment_of.get((kind, object_id))

    async def recorded_experiment(self, kind: str, object_id: str) -> str | None:
        found = self._experiment_of.get((kind, object_id))
        if found is None and kind in (MADE_RUN, MADE_LOGGED_MODEL):
            found = await self._db(objects.experiment_of, kind, object_id)
            if found is not None:
                self.learn(kind, object_id, found)
        return found

    def learn(self, kind: str, object_id: str, experiment_id: str) -> None:
        self._remember(self._experiment_of, (kind, object_id), str(experiment_id))

    # -- owners -------------------------------------------------------------------------------------

    async def record_owner(self, kind: str, object_id: str, caller: keys.Caller, is_default: bool = False) -> int | None:
        owner = await self._db(objects.record_owner, kind, object_id, caller, is_default)
        self.forget(caller)
        return owner

    async def rename(self, kind: str, old: str, new: str) -> None:
        await self._db(objects.rename, kind, old, new)
        self._rights.clear()
        self._visible.clear()
        self._model_owner.clear()

    async def default_experiment(self, caller: keys.Caller) -> tuple[int | None, str | None, str | None]:
        """(owner, its default experiment's id if made, the owner's name)."""
        owner, found, name = await self._db(objects.default_experiment, caller)
        if owner is not None and found is not None:
            self._defaults[owner] = found
        return owner, found, name

    @staticmethod
    def _remember(memory: dict, key, value) -> None:
        if len(memory) >= REMEMBERED:
            memory.clear()
        memory[key] = value
