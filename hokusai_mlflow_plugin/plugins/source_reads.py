"""What a model version's source says of its token: the ``hokusai_*`` tags and the metrics of its
LoggedModel and its run, read narrowly from MLflow's tracking database (issue 23).

MLflow's ``get_logged_model`` and ``get_run`` build whole entities: every tag, param and metric,
and for a run its dataset inputs and its model inputs and outputs (seven queries). A decision needs
the ``hokusai_*`` tags, the metrics and the LoggedModel's run and experiment; the ``hokusai+``
store's stamping needs the tags alone. These read just that, in one session of the store, with
MLflow's own tables (its ORM classes: the installed MLflow's schema) and the store's own scoping
(``_get_query``, which a workspace-aware store narrows). Profiled under a burst, the two gets were
over a third of the receiver's CPU per decision, and the stamping's reads are MLflow's own CPU.

Same answers as MLflow's gets: a deleted LoggedModel is not found, a deleted run is (``get_run``
returns it too); a metric is the value MLflow returns (a NaN as NaN); a LoggedModel's metric is its
latest (by step, then time), a run's is MLflow's latest. Nothing is cached. A store that is not
MLflow's SQL store (none here: the server and the receiver read SQL) is read with its plain gets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hokusai_mlflow_plugin.core.tags import INPUT_TAGS


@dataclass(frozen=True)
class LoggedModelSource:
    model_id: str
    experiment_id: str
    source_run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)  # its hokusai_* tags
    metrics: dict[str, float] = field(default_factory=dict)  # each key's latest value


@dataclass(frozen=True)
class RunSource:
    run_id: str
    experiment_id: str
    tags: dict[str, str] = field(default_factory=dict)  # its hokusai_* tags
    metrics: dict[str, float] = field(default_factory=dict)  # MLflow's latest value of each key


def latest(metrics) -> dict[str, float]:
    """The last value of each key (by step, then time) among ``(key, value, step, timestamp)``."""
    best: dict[str, tuple] = {}
    for key, value, step, timestamp in metrics:
        order = (step or 0, timestamp or 0)
        if key not in best or order >= best[key][0]:
            best[key] = (order, value)
    return {k: v for k, (_, v) in best.items()}


def hokusai_tags(tags: dict[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (tags or {}).items() if k in INPUT_TAGS}


def of_logged_model(logged) -> LoggedModelSource:
    """A ``LoggedModel`` entity (from a REST store or a search) as what a decision reads of it."""
    return LoggedModelSource(
        logged.model_id, str(logged.experiment_id), logged.source_run_id or None, hokusai_tags(logged.tags),
        latest((m.key, m.value, m.step, m.timestamp) for m in logged.metrics or []),
    )


def of_run(run) -> RunSource:
    """A ``Run`` entity as what a decision reads of it."""
    return RunSource(run.info.run_id, str(run.info.experiment_id), hokusai_tags(run.data.tags), dict(run.data.metrics))


class Reader:
    """Reads of one tracking ``store`` in one of its sessions (``with Reader(store) as reader``), or
    with its plain gets when it is not MLflow's SQL store."""

    def __init__(self, store):
        self.store = store
        self.session = None
        self._managed = store.ManagedSessionMaker() if _is_sql(store) else None

    def __enter__(self) -> "Reader":
        if self._managed is not None:
            self.session = self._managed.__enter__()
        return self

    def __exit__(self, *exc):
        return self._managed.__exit__(*exc) if self._managed is not None else False

    def logged_model(self, model_id: str, metrics: bool = True) -> LoggedModelSource | None:
        """The LoggedModel ``model_id``; None when there is none (or it was deleted)."""
        if self.session is None:
            logged = _or_none(self.store.get_logged_model, model_id)
            return of_logged_model(logged) if logged is not None else None
        return _logged_model(self.store, self.session, model_id, metrics)

    def run(self, run_id: str, metrics: bool = True) -> RunSource | None:
        """The run ``run_id``, deleted or not; None when there is none."""
        if self.session is None:
            found = _or_none(self.store.get_run, run_id)
            return of_run(found) if found is not None else None
        return _run(self.store, self.session, run_id, metrics)


def read(store, model_id: str | None, run_id: str | None) -> tuple[LoggedModelSource | None, RunSource | None]:
    """What a decision reads, in one session: the LoggedModel ``model_id`` (None: none, or deleted),
    then the run ``run_id``, or else the LoggedModel's own (None: none)."""
    with Reader(store) as reader:
        logged = reader.logged_model(model_id) if model_id else None
        run_id = run_id or (logged.source_run_id if logged is not None else None)
        return logged, reader.run(run_id) if run_id else None


def _is_sql(store) -> bool:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return isinstance(store, SqlAlchemyStore)


def _query(store, session, model):
    scoped = getattr(store, "_get_query", None)  # the store's scoping (workspaces), where it has one
    return scoped(session, model) if scoped is not None else session.query(model)


def _logged_model(store, session, model_id: str, metrics: bool) -> LoggedModelSource | None:
    import sqlalchemy as sa
    from mlflow.entities import LifecycleStage
    from mlflow.store.tracking.dbmodels.models import SqlLoggedModel, SqlLoggedModelMetric, SqlLoggedModelTag

    rows = (  # the LoggedModel and its hokusai_* tags, in one statement
        _query(store, session, SqlLoggedModel)
        .outerjoin(SqlLoggedModelTag, sa.and_(SqlLoggedModelTag.model_id == SqlLoggedModel.model_id,
                                              SqlLoggedModelTag.tag_key.in_(INPUT_TAGS)))
        .filter(SqlLoggedModel.model_id == model_id, SqlLoggedModel.lifecycle_stage != LifecycleStage.DELETED)
        .with_entities(SqlLoggedModel.experiment_id, SqlLoggedModel.source_run_id, SqlLoggedModelTag.tag_key,
                       SqlLoggedModelTag.tag_value)
        .all()
    )
    if not rows:
        return None
    found = {}
    if metrics:
        found = latest(
            session.query(
                SqlLoggedModelMetric.metric_name, SqlLoggedModelMetric.metric_value, SqlLoggedModelMetric.metric_step,
                SqlLoggedModelMetric.metric_timestamp_ms,
            ).filter(SqlLoggedModelMetric.model_id == model_id)
        )
    experiment_id, source_run_id = rows[0][:2]
    return LoggedModelSource(model_id, str(experiment_id), source_run_id or None, _tags(rows), found)


def _run(store, session, run_id: str, metrics: bool) -> RunSource | None:
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlRun, SqlTag

    rows = (  # the run and its hokusai_* tags, in one statement
        _query(store, session, SqlRun)
        .outerjoin(SqlTag, sa.and_(SqlTag.run_uuid == SqlRun.run_uuid, SqlTag.key.in_(INPUT_TAGS)))
        .filter(SqlRun.run_uuid == run_id)
        .with_entities(SqlRun.experiment_id, SqlTag.key, SqlTag.value)
        .all()
    )
    if not rows:
        return None
    found = {}
    if metrics:
        found = {
            key: float("nan") if is_nan else value
            for key, value, is_nan in session.query(SqlLatestMetric.key, SqlLatestMetric.value, SqlLatestMetric.is_nan)
            .filter(SqlLatestMetric.run_uuid == run_id)
        }
    return RunSource(run_id, str(rows[0][0]), _tags(rows), found)


def _tags(rows) -> dict[str, str]:
    """The tags of an outer join's rows, whose last two columns are a tag's key and value."""
    return {row[-2]: row[-1] for row in rows if row[-2] is not None}


def _or_none(get, key):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        return get(key)
    except MlflowException as e:
        if e.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
