"""Runs read for many decisions at once: the decisions of one receiver process that want a run
while another read of runs is on its way share the next request (``search_runs`` by run ids), as
a database's group commit shares a flush (issue 23).

Nothing is kept: every run is read by a request that starts after its caller asked, so a decision's
metric is MLflow's as of that decision, exactly as with ``get_run``. Alone (no burst), a read waits
for nobody and costs one request, as before.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from mlflow.entities import ViewType

from hokusai_mlflow_plugin.mlflow_io.client import call

#: run ids that can go into a filter string as they are; anything else is read alone.
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_BATCH = 100


@dataclass
class _Wanted:
    experiment_ids: set[str] = field(default_factory=set)
    done: bool = False
    run: object = None
    error: Exception | None = None


class SharedRunReads:
    """``get(run_id, experiment_id)``: the run, as ``get_run`` returns it (``MlflowNotFound``,
    ``MlflowUnavailable`` as ``client.call``). A run the search did not find in ``experiment_id``
    is asked for alone."""

    def __init__(self, client):
        self.client = client
        self._changed = threading.Condition()
        self._pending: dict[str, _Wanted] = {}
        self._reading = False
        self.requests = 0  # search requests made (tests, benchmarks)

    def get(self, run_id: str, experiment_id: str | None):
        if not experiment_id or not _PLAIN_ID.match(run_id):
            return call(self.client.get_run, run_id)
        with self._changed:
            wanted = self._pending.setdefault(run_id, _Wanted())
            wanted.experiment_ids.add(str(experiment_id))
            while not wanted.done:
                if self._reading:
                    self._changed.wait()
                    continue
                # Nobody is reading: this caller reads for everyone who waits.
                self._reading = True
                batch = dict(list(self._pending.items())[:MAX_BATCH])
                for key in batch:
                    del self._pending[key]
                self._changed.release()
                try:
                    self._read(batch)
                finally:
                    self._changed.acquire()
                    self._reading = False
                    self._changed.notify_all()
        if wanted.error is not None:
            raise wanted.error
        if wanted.run is None:  # not in that experiment (or deleted for good): ask for it alone
            return call(self.client.get_run, run_id)
        return wanted.run

    def _read(self, batch: dict[str, _Wanted]) -> None:
        experiments = sorted({e for w in batch.values() for e in w.experiment_ids})
        ids = ", ".join(f"'{run_id}'" for run_id in batch)
        self.requests += 1
        try:
            found = call(
                self.client.search_runs, experiments, filter_string=f"attributes.run_id IN ({ids})",
                run_view_type=ViewType.ALL, max_results=len(batch),
            )
            runs = {run.info.run_id: run for run in found}
        except Exception as e:  # every waiter gets the failure (MlflowUnavailable: MLflow retries)
            runs, error = {}, e
        else:
            error = None
        for run_id, wanted in batch.items():
            wanted.run, wanted.error, wanted.done = runs.get(run_id), error, True
