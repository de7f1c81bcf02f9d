"""Runs and LoggedModels read together by concurrent decisions (issue 23), against a real MLflow
server: each caller gets its own run (LoggedModel) as ``get_run`` (``get_logged_model``) returns
it, read by a request that started after it asked."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from hokusai_mlflow_plugin.core.errors import MlflowUnavailable
from hokusai_mlflow_plugin.mlflow_io.client import MlflowNotFound
from hokusai_mlflow_plugin.mlflow_io.shared_reads import SharedLoggedModelReads, SharedRunReads
from tests.events.helpers import wait_until
from tests.mlflow_helpers import CountingClient


@pytest.fixture
def client(mlflow_sqlite):
    return MlflowClient(tracking_uri=mlflow_sqlite.url, registry_uri=mlflow_sqlite.url)


def runs_with_auroc(client, n: int, experiment: str | None = None) -> tuple[str, list[str]]:
    exp = experiment or client.create_experiment(f"shared-reads-{uuid.uuid4().hex[:8]}")
    ids = []
    for i in range(n):
        run_id = client.create_run(exp, tags={"i": str(i)}).info.run_id
        client.log_batch(run_id, metrics=[Metric("auroc", 0.5 + i / 100, int(time.time() * 1000), 0)])
        ids.append(run_id)
    return exp, ids


class SlowFirstSearch(CountingClient):
    """The first search waits until the test lets it go, so that the callers behind it queue up."""

    def __init__(self, client):
        super().__init__(client)
        self.first_begun, self.let_go = threading.Event(), threading.Event()

    def __getattr__(self, name):
        counted = super().__getattr__(name)
        if name not in ("search_runs", "get_run"):
            return counted

        def slow(*args, **kwargs):
            if not self.first_begun.is_set():
                self.first_begun.set()
                assert self.let_go.wait(30)
            return counted(*args, **kwargs)

        return slow


def test_callers_behind_a_read_share_the_next_one(client):
    exp, ids = runs_with_auroc(client, 8)
    counting = SlowFirstSearch(client)
    reads = SharedRunReads(counting)
    got: dict[str, object] = {}

    def read(run_id):
        got[run_id] = reads.get(run_id, exp)

    first = threading.Thread(target=read, args=(ids[0],))
    first.start()
    assert counting.first_begun.wait(30)  # the first caller's search is on its way
    rest = [threading.Thread(target=read, args=(run_id,)) for run_id in ids[1:]]
    for t in rest:
        t.start()
    assert wait_until(lambda: len(reads._pending) == len(rest))  # all queued behind it
    counting.let_go.set()
    for t in [first, *rest]:
        t.join(30)
    assert counting.count("get_run") == 1 and counting.count("search_runs") == 1  # 8 runs, 2 requests: the first alone
    for i, run_id in enumerate(ids):
        alone = client.get_run(run_id)
        assert got[run_id].info.run_id == run_id
        assert got[run_id].data.metrics == alone.data.metrics == {"auroc": 0.5 + i / 100}
        assert got[run_id].data.tags == alone.data.tags


def test_the_metric_is_read_at_the_time_of_asking(client):
    exp, (run_id,) = runs_with_auroc(client, 1)
    reads = SharedRunReads(client)
    assert reads.get(run_id, exp).data.metrics["auroc"] == 0.5
    client.log_batch(run_id, metrics=[Metric("auroc", 0.93, int(time.time() * 1000) + 10, 1)])
    assert reads.get(run_id, exp).data.metrics["auroc"] == 0.93  # nothing is kept between reads


def test_a_run_elsewhere_a_deleted_run_and_an_unknown_run(client):
    exp, (first, here) = runs_with_auroc(client, 2)
    _, (elsewhere,) = runs_with_auroc(client, 1)
    client.delete_run(here)
    counting = SlowFirstRead(client, ("get_run", "search_runs"), queued=2)
    counting.reads = reads = SharedRunReads(counting)
    got = {}
    threads = [threading.Thread(target=lambda r=r: got.setdefault(r, reads.get(r, exp))) for r in (first, here, elsewhere)]
    threads[0].start()
    assert counting.started.wait(30)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(30)
    assert got[here].info.lifecycle_stage == "deleted"  # as get_run: deleted runs are found
    assert got[elsewhere].info.run_id == elsewhere  # not in that experiment: asked for alone
    assert counting.calls == ["get_run", "search_runs", "get_run"]  # the first alone, the two behind it together
    with pytest.raises(MlflowNotFound):
        reads.get(uuid.uuid4().hex, exp)
    counting.calls.clear()
    assert reads.get(elsewhere, None).info.run_id == elsewhere and counting.calls == ["get_run"]  # no experiment: alone


def test_every_waiter_gets_the_failure_and_the_next_caller_reads_again():
    class Down:
        tracking_uri = "http://127.0.0.1:9"

        def __init__(self):
            self.calls = 0

        def search_runs(self, *args, **kwargs):
            self.calls += 1
            time.sleep(0.2)
            raise ConnectionError("refused")

        get_run = search_runs  # the first read, alone

    down = Down()
    reads = SharedRunReads(down)
    errors = []

    def read(run_id):
        try:
            reads.get(run_id, "1")
        except MlflowUnavailable as e:
            errors.append(e)

    threads = [threading.Thread(target=read, args=(uuid.uuid4().hex,)) for _ in range(5)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join(10)
    assert len(errors) == 5 and down.calls == 2 and not reads._reading and not reads._pending


def logged_models(client, n: int, experiment: str) -> list[str]:
    run_id = client.create_run(experiment).info.run_id
    ids = []
    for i in range(n):
        logged = client.create_logged_model(experiment, source_run_id=run_id, tags={"i": str(i)})
        client.log_batch(run_id, metrics=[Metric("auroc", 0.6 + i / 100, int(time.time() * 1000), 0, model_id=logged.model_id)])
        ids.append(logged.model_id)
    return ids


def test_logged_models_are_searched_in_the_experiments_seen_lately(client):
    exp = client.create_experiment(f"shared-models-{uuid.uuid4().hex[:8]}")
    elsewhere = client.create_experiment(f"shared-models-{uuid.uuid4().hex[:8]}")
    ids = logged_models(client, 4, exp)
    (other,) = logged_models(client, 1, elsewhere)
    reads = SharedLoggedModelReads(client)
    assert reads.get(ids[0]).model_id == ids[0]  # no experiment seen yet, nobody waits: asked for alone
    counting = SlowFirstRead(client, ("get_logged_model", "search_logged_models"), queued=3)
    reads.client, counting.reads = counting, reads
    got = {}
    threads = [threading.Thread(target=lambda m=m: got.setdefault(m, reads.get(m))) for m in (ids[1], ids[2], ids[3], other)]
    threads[0].start()
    assert counting.started.wait(30)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(30)
    assert {m: got[m].model_id for m in got} == {m: m for m in (ids[1], ids[2], ids[3], other)}
    # the first alone; the three behind it together, in the experiment learnt; the one found in none alone
    assert counting.calls == ["get_logged_model", "search_logged_models", "get_logged_model"]
    for i, model_id in enumerate(ids[1:], start=1):
        alone = client.get_logged_model(model_id)
        assert (got[model_id].tags, got[model_id].source_run_id, got[model_id].experiment_id) == (alone.tags, alone.source_run_id, alone.experiment_id)
        assert [(m.key, m.value) for m in got[model_id].metrics] == [(m.key, m.value) for m in alone.metrics] == [("auroc", 0.6 + i / 100)]
    with pytest.raises(MlflowNotFound):
        reads.get("m-" + uuid.uuid4().hex)


class SlowFirstRead(CountingClient):
    """The first call of one of ``names`` says it started, then waits until ``queued`` callers wait
    behind it (``reads._pending``)."""

    def __init__(self, client, names: tuple[str, ...], queued: int):
        super().__init__(client)
        self.names, self.queued, self.reads, self.started = names, queued, None, threading.Event()

    def __getattr__(self, name):
        counted = super().__getattr__(name)
        if name not in self.names:
            return counted

        def slow(*args, **kwargs):
            if not self.started.is_set():
                self.started.set()
                assert wait_until(lambda: len(self.reads._pending) >= self.queued)
            return counted(*args, **kwargs)

        return slow
