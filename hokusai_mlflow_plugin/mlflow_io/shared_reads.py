"""Runs and LoggedModels read for many decisions at once: the decisions of one receiver process that
want a run (or a LoggedModel) while another read of the same kind is on its way share the next
request (``search_runs`` by run ids, ``search_logged_models`` by model ids), as a database's group
commit shares a flush (issue 23).

Nothing is kept: every run and LoggedModel is read by a request that starts after its caller asked,
so a decision's metric is MLflow's as of that decision, exactly as with ``get_run``. Alone (no
burst), a read waits for nobody and is the plain ``get_run`` (``get_logged_model``), as before: a
search costs MLflow more than a get, and pays only when it reads several. The only thing remembered is
where to search: the experiments of the LoggedModels read lately (a LoggedModel search needs
experiment ids); a LoggedModel found in none of them is asked for alone.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from mlflow.entities import ViewType

from hokusai_mlflow_plugin.mlflow_io.client import call

#: ids that can go into a filter string as they are; anything else is read alone.
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_BATCH = 100
#: LoggedModel searches look in this many of the experiments seen last.
RECENT_EXPERIMENTS = 20


@dataclass
class _Wanted:
    experiment_ids: set[str] = field(default_factory=set)
    done: bool = False
    found: object = None
    error: Exception | None = None


class _SharedReads:
    """The group read: ``_shared(key, experiment_ids)`` is the item the next read found (None: not
    found there), read together with every other key wanted while a read was on its way."""

    def __init__(self, client):
        self.client = client
        self._changed = threading.Condition()
        self._pending: dict[str, _Wanted] = {}
        self._reading = False
        self.requests = 0  # search requests made (tests, benchmarks)

    def _shared(self, key: str, experiment_ids):
        with self._changed:
            wanted = self._pending.setdefault(key, _Wanted())
            wanted.experiment_ids.update(str(e) for e in experiment_ids)
            while not wanted.done:
                if self._reading:
                    self._changed.wait()
                    continue
                # Nobody is reading: this caller reads for everyone who waits.
                self._reading = True
                batch = dict(list(self._pending.items())[:MAX_BATCH])
                for k in batch:
                    del self._pending[k]
                self._changed.release()
                try:
                    self._read_batch(batch)
                finally:
                    self._changed.acquire()
                    self._reading = False
                    self._changed.notify_all()
        if wanted.error is not None:
            raise wanted.error
        return wanted.found

    def _read_batch(self, batch: dict[str, _Wanted]) -> None:
        experiments = sorted({e for w in batch.values() for e in w.experiment_ids})
        ids = ", ".join(f"'{key}'" for key in batch)
        self.requests += 1
        try:
            if len(batch) == 1:  # nobody to share with: the plain read, which costs MLflow less than a search
                (key,) = batch
                found, error = {key: self._get_one(key)}, None
            else:
                found, error = self._search(experiments, ids, len(batch)), None
        except Exception as e:  # every waiter gets the failure (MlflowUnavailable: MLflow retries)
            found, error = {}, e
        for key, wanted in batch.items():
            wanted.found, wanted.error, wanted.done = found.get(key), error, True

    def _search(self, experiment_ids: list[str], ids: str, n: int) -> dict:
        raise NotImplementedError

    def _get_one(self, key: str):
        raise NotImplementedError


class SharedRunReads(_SharedReads):
    """``get(run_id, experiment_id)``: the run, as ``get_run`` returns it (``MlflowNotFound``,
    ``MlflowUnavailable`` as ``client.call``). A run the search did not find in ``experiment_id``
    is asked for alone."""

    def get(self, run_id: str, experiment_id: str | None):
        if not experiment_id or not _PLAIN_ID.match(run_id):
            return call(self.client.get_run, run_id)
        run = self._shared(run_id, [experiment_id])
        if run is None:  # not in that experiment (or deleted for good): ask for it alone
            return call(self.client.get_run, run_id)
        return run

    def _search(self, experiment_ids, ids, n):
        found = call(
            self.client.search_runs, experiment_ids, filter_string=f"attributes.run_id IN ({ids})",
            run_view_type=ViewType.ALL, max_results=n,
        )
        return {run.info.run_id: run for run in found}

    def _get_one(self, run_id):
        return call(self.client.get_run, run_id)


class SharedLoggedModelReads(_SharedReads):
    """``get(model_id)``: the LoggedModel, as ``get_logged_model`` returns it (``MlflowNotFound``,
    ``MlflowUnavailable``). Searched in the experiments of the LoggedModels read lately; one found
    in none of them (a new experiment, a deleted model) is asked for alone, and its experiment is
    searched from then on."""

    def __init__(self, client):
        super().__init__(client)
        self._experiments: OrderedDict[str, None] = OrderedDict()
        self._seen = threading.Lock()

    def get(self, model_id: str):
        with self._seen:
            experiments = list(self._experiments)
        logged = self._shared(model_id, experiments) if experiments and _PLAIN_ID.match(model_id) else None
        if logged is None:
            logged = call(self.client.get_logged_model, model_id)
        with self._seen:
            self._experiments[str(logged.experiment_id)] = None
            self._experiments.move_to_end(str(logged.experiment_id))
            while len(self._experiments) > RECENT_EXPERIMENTS:
                self._experiments.popitem(last=False)
        return logged

    def _search(self, experiment_ids, ids, n):
        found = call(self.client.search_logged_models, experiment_ids, filter_string=f"model_id IN ({ids})", max_results=n)
        return {logged.model_id: logged for logged in found}

    def _get_one(self, model_id):
        return call(self.client.get_logged_model, model_id)
