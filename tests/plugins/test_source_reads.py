"""The narrow reads of a version's source (``plugins.source_reads``, issue 23) answer what MLflow's
own ``get_logged_model`` and ``get_run`` answer, for what a decision and the stamping use: the
``hokusai_*`` tags, the latest metrics (a NaN included), the LoggedModel's run and experiment, a
deleted LoggedModel as none and a deleted run as found; with fewer statements. Against the
databases of real MLflow servers, on SQLite and on PostgreSQL."""

from __future__ import annotations

import math
import uuid
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from mlflow.tracking._tracking_service.utils import _get_store

from hokusai_mlflow_plugin.plugins import source_reads


def comparable(source):
    """A source with its NaNs made equal to each other (NaN != NaN)."""
    if source is None:
        return None
    clean = {k: ("NaN" if isinstance(v, float) and math.isnan(v) else v) for k, v in source.metrics.items()}
    return type(source)(**{**source.__dict__, "metrics": clean})


@pytest.fixture
def logged(tracking, mlflow_server):
    """A run and its LoggedModel, with hokusai tags and others, metrics over several steps."""
    experiment = tracking.create_experiment(f"source-reads-{uuid.uuid4().hex[:8]}")
    run = tracking.create_run(experiment, tags={"hokusai_token_id": "XRAY", "hokusai_metric": "auroc", "team": "vision"})
    run_id = run.info.run_id
    for step, value in ((0, 0.5), (2, 0.91), (1, 0.7)):
        tracking.log_metric(run_id, "auroc", value, step=step)
    tracking.log_metric(run_id, "loss", float("nan"))
    model = tracking.create_logged_model(
        experiment, source_run_id=run_id, tags={"hokusai_token_id": "XRAY", "hokusai_baseline": "0.8", "framework": "sk"},
    )
    for step, value in ((0, 0.6), (3, 0.88), (1, 0.99)):
        tracking.log_metric(run_id, "auroc", value, step=step, model_id=model.model_id)
    return experiment, run_id, model.model_id


def test_the_narrow_reads_answer_as_mlflows_own_gets(tracking, mlflow_server, logged):
    experiment, run_id, model_id = logged
    store = _get_store(mlflow_server.backend_uri)

    found_model, found_run = source_reads.read(store, model_id, None)  # the run: the LoggedModel's own
    assert comparable(found_model) == comparable(source_reads.of_logged_model(store.get_logged_model(model_id)))
    assert comparable(found_run) == comparable(source_reads.of_run(store.get_run(run_id)))

    # What a user logged, as a decision reads it: only the hokusai_* tags; each metric's latest step.
    assert found_model.tags == {"hokusai_token_id": "XRAY", "hokusai_baseline": "0.8"}
    assert (found_model.experiment_id, found_model.source_run_id) == (experiment, run_id)
    assert found_model.metrics["auroc"] == 0.88
    assert found_run.tags == {"hokusai_token_id": "XRAY", "hokusai_metric": "auroc"}
    # A metric logged on the LoggedModel is logged on its run too: step 3 is the run's latest.
    assert found_run.metrics["auroc"] == 0.88 and math.isnan(found_run.metrics["loss"])


def test_deleted_and_missing_sources_are_read_as_mlflow_reads_them(tracking, mlflow_server, logged):
    _, run_id, model_id = logged
    store = _get_store(mlflow_server.backend_uri)
    tracking.delete_logged_model(model_id)
    tracking.delete_run(run_id)
    found_model, found_run = source_reads.read(store, model_id, run_id)
    assert found_model is None  # get_logged_model: not found
    assert found_run is not None and found_run.tags["hokusai_token_id"] == "XRAY"  # get_run returns a deleted run
    assert source_reads.read(store, "m-" + "0" * 32, "0" * 32) == (None, None)


@contextmanager
def selects(store):
    """The SELECT statements ``store``'s engine runs inside the block, as a list that fills up."""
    statements = []

    def count(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", count)


def test_the_narrow_reads_ask_the_database_less_than_the_gets(tracking, mlflow_server, logged):
    _, run_id, model_id = logged
    store = _get_store(mlflow_server.backend_uri)
    with selects(store) as narrow:
        source_reads.read(store, model_id, run_id)
    with selects(store) as gets:
        store.get_logged_model(model_id)
        store.get_run(run_id)
    assert len(narrow) <= 4 and len(narrow) < len(gets), (len(narrow), len(gets))


def test_a_read_of_tags_only_reads_no_metric(tracking, mlflow_server, logged):
    """The ``hokusai+`` store's question (the tags, ``metrics=False``): one statement per object."""
    _, run_id, model_id = logged
    store = _get_store(mlflow_server.backend_uri)
    with selects(store) as statements, source_reads.Reader(store) as reader:
        found = reader.logged_model(model_id, metrics=False)
        ran = reader.run(run_id, metrics=False)
    assert found.tags["hokusai_token_id"] == "XRAY" and found.metrics == {}
    assert ran.tags["hokusai_metric"] == "auroc" and ran.metrics == {}
    assert len(statements) == 2 and not any("metric" in s.lower() for s in statements), statements
