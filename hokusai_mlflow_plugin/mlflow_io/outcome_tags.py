"""The outcome tags of a burst's decisions, written together (issue 23): decisions queue their
outcome here, and whoever flushes writes every outcome queued by then, one request per registered
model (``facts.tag_outcomes``), so that a burst of decisions costs MLflow a few tag writes (and the
``model_version_tag.set`` deliveries they fire) instead of one per version.

A flush waits for a pause: until no outcome has been queued for ``linger`` seconds, and at most
``most`` seconds after the oldest queued one (a sweep that never pauses still shows its outcomes).
While a burst goes on, the tags wait: every write of them takes the write lock of MLflow's database,
which on SQLite is the one lock all of MLflow's creates take too, and a burst's creates waited on it
(BENCHMARKS.md, issue 23, fifth session). The tags show in the MLflow UI that much later. The decision
itself (its registration row, its events) is never delayed: the tags are written after it
committed and after MLflow's delivery was answered.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from hokusai_mlflow_plugin.mlflow_io import facts

#: seconds the oldest queued outcome waits for others before a flush writes them. Under a burst that
#: MLflow serves at 5 versions/s (a loaded machine), 0.25 s gathered 1.7 outcomes per write.
LINGER = 1.0
#: at most this many seconds from the oldest queued outcome to its flush, however long a burst lasts
#: (``reconcile.retag_after``, when the sweep writes the tags a receiver lost, is 10 s more). A
#: flush in the middle of a burst stalled the decisions around it by up to 1.7 s and MLflow's
#: creates with them (issue 23, sixth session: with 10 s, the slowest 1% of a 12 s burst's decisions
#: were all asked for 9.9-10.0 s into it); 20 s keeps a burst of a few hundred versions whole.
MOST = 20.0


class PendingOutcomeTags:
    """``put`` an outcome, then ``flush()`` (from a pool thread, after the answer): True when
    everything it wrote was written. Flushes run concurrently; each writes what it took."""

    def __init__(self, client, linger: float = LINGER, most: float = MOST, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.client = client
        self.linger, self.most = linger, max(most, linger)
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._queued: dict[tuple[str, str], tuple[str, str]] = {}  # (model, version) -> (status, reason)
        self._oldest: float | None = None
        self._newest: float | None = None

    def put(self, model_name: str, version: str, status: str, reason: str) -> None:
        with self._lock:
            self._queued[(model_name, str(version))] = (status, reason)  # a later decision of a version wins
            self._newest = self.clock()
            if self._oldest is None:
                self._oldest = self._newest

    def flush(self) -> bool:
        while True:  # an outcome queued while this one slept puts the pause off again
            with self._lock:
                if self._oldest is None:
                    return True
                wait = min(self._newest + self.linger, self._oldest + self.most) - self.clock()
                if wait <= 0:
                    taken, self._queued, self._oldest, self._newest = self._queued, {}, None, None
                    break
            self.sleep(wait)
        by_model: dict[str, dict[str, tuple[str, str]]] = {}
        for (model_name, version), outcome in taken.items():
            by_model.setdefault(model_name, {})[version] = outcome
        ok = True
        for model_name, outcomes in by_model.items():
            ok = facts.tag_outcomes(self.client, model_name, outcomes) and ok
        return ok
