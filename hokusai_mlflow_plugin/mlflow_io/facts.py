"""What MLflow knows about a model version: its tags, its LoggedModel's and its run's, and the
metrics logged on them. Read, never written (except the outcome tags, by ``tag_outcome``)."""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field

from mlflow.entities.model_registry import ModelVersionTag

from hokusai_mlflow_plugin.auth import ownership
from hokusai_mlflow_plugin.core import tags
from hokusai_mlflow_plugin.mlflow_io.client import MlflowNotFound, MlflowUnavailable, call, is_store_uri
from hokusai_mlflow_plugin.plugins import source_reads
from hokusai_mlflow_plugin.plugins.stamping_store import outcome_value, outcomes_value

_logger = logging.getLogger(__name__)


@dataclass
class VersionFacts:
    model_name: str
    version: str
    source: str | None
    run_id: str | None = None
    model_id: str | None = None
    version_tags: dict[str, str] = field(default_factory=dict)
    model_tags: dict[str, str] = field(default_factory=dict)
    run_tags: dict[str, str] = field(default_factory=dict)
    run_metrics: dict[str, float] = field(default_factory=dict)
    model_metrics: dict[str, float] = field(default_factory=dict)
    model_id_field: str | None = None  # the version's own model_id, when it was read back

    def named_objects(self) -> list[tuple[str, str]]:
        """Every run and logged model the version names or was judged on (provenance's subjects)."""
        return ownership.sources(self.run_id, self.model_id, self.source, self.model_id_field)

    def tag(self, key: str) -> str | None:
        """A ``hokusai_*`` tag: the version's, else the LoggedModel's, else the run's."""
        for found in (self.version_tags, self.model_tags, self.run_tags):
            if found.get(key) not in (None, ""):
                return found[key]
        return None

    def metric(self, name: str) -> float | None:
        """The run's logged metric, else the LoggedModel's. Never synthesised."""
        if name in self.run_metrics:
            return self.run_metrics[name]
        return self.model_metrics.get(name)


def fetch(client, model_name: str, version: str, created: dict | None = None, runs=None, models=None) -> VersionFacts:
    """What MLflow knows of the version. ``created``: the data of MLflow's signed
    ``model_version.created`` delivery, MLflow's own statement of the version it just made (its
    source, run and the tags of its create request). When its source names the LoggedModel, the
    version is not read back: one MLflow request fewer per decision. The metrics are always read,
    at decision time. ``runs`` and ``models`` (``shared_reads.SharedRunReads`` and
    ``SharedLoggedModelReads``): the run and the LoggedModel are read together with those of the
    decisions that want theirs at the same moment. A client on MLflow's database
    (``client.store_client``) reads just the ``hokusai_*`` tags and the metrics
    (``plugins.source_reads``)."""
    if created is not None and tags.logged_model_id(created.get("source")):
        facts = VersionFacts(
            model_name=model_name,
            version=str(version),
            source=created["source"],
            run_id=created.get("run_id") or None,
            model_id=tags.logged_model_id(created["source"]),
            version_tags={k: v for k, v in (created.get("tags") or {}).items() if isinstance(v, str)},
        )
    else:
        mv = call(client.get_model_version, model_name, str(version))
        facts = VersionFacts(
            model_name=mv.name,
            version=str(mv.version),
            source=mv.source,
            run_id=mv.run_id or None,
            model_id=getattr(mv, "model_id", None) or tags.logged_model_id(mv.source),
            version_tags=dict(mv.tags or {}),
            model_id_field=getattr(mv, "model_id", None) or None,
        )
    if is_store_uri(client.tracking_uri) and runs is None and models is None:
        # MLflow's database: what a decision needs of the LoggedModel and the run, in one session
        # (a plain read of the database costs MLflow's server nothing; the whole entities cost this
        # process over a third of its CPU per decision: issue 23).
        try:
            logged, run = call(lambda: source_reads.read(_tracking_store(client.tracking_uri), facts.model_id, facts.run_id))
        except MlflowNotFound as e:
            # The narrow reads answer a missing source with None; an error MLflow codes as "not
            # found" or "invalid" here (a workspace it cannot resolve, say) is a failure to read,
            # to retry: never a version to ignore.
            raise MlflowUnavailable(f"Could not read the source of {model_name} version {version} in MLflow's database: {e}") from e
    else:
        logged = _logged_model(client, models, facts.model_id) if facts.model_id else None
        experiment_id = None
        if logged is not None and (facts.run_id or logged.source_run_id) == logged.source_run_id:
            experiment_id = logged.experiment_id
        run_id = facts.run_id or (logged.source_run_id if logged is not None else None)
        run = _run(client, runs, run_id, experiment_id) if run_id else None
    if logged is not None:
        facts.model_tags = dict(logged.tags)
        facts.model_metrics = dict(logged.metrics)
        facts.run_id = facts.run_id or logged.source_run_id
    if run is not None:
        facts.run_tags = dict(run.tags)
        facts.run_metrics = dict(run.metrics)
    return facts


def _logged_model(client, models, model_id: str):
    """The LoggedModel as a decision reads it; None when MLflow has none (a deleted LoggedModel: the
    run may still tell)."""
    try:
        logged = models.get(model_id) if models is not None else call(client.get_logged_model, model_id)
    except MlflowNotFound:
        return None
    return source_reads.of_logged_model(logged)


def _run(client, runs, run_id: str, experiment_id: str | None):
    try:
        run = runs.get(run_id, experiment_id) if runs is not None else call(client.get_run, run_id)
    except MlflowNotFound:
        return None
    return source_reads.of_run(run)


def _tracking_store(uri: str):
    """MLflow's own tracking store on its database, the one ``MlflowClient(uri)`` reads with (MLflow
    keeps one per URI)."""
    from mlflow.tracking._tracking_service.utils import _get_store

    return _get_store(uri)


def tag_outcome(client, model_name: str, version: str, status: str, reason: str) -> bool:
    """Show the decision on the model version in the MLflow UI: ``hokusai_status`` and
    ``hokusai_reason`` (``tag_outcomes`` of one)."""
    return tag_outcomes(client, model_name, {str(version): (status, reason)})


def tag_outcomes(client, model_name: str, outcomes: dict[str, tuple[str, str]]) -> bool:
    """The outcome tags of several versions of one registered model (version -> (status, reason)).
    Against a tracking server that runs the ``hokusai+`` store, in one request per
    ``BATCH`` versions (``stamping_store.outcomes_value``), checked once per server; else two
    requests per version. Failure is logged, not raised: the decisions are already committed."""
    outcomes = {str(v): o for v, o in outcomes.items()}
    uri = client.tracking_uri
    if (is_store_uri(uri) or uri.startswith(("http://", "https://"))) and _one_write(uri) is not False:
        try:
            outcomes = _written_together(uri, model_name, outcomes)
        except Exception as e:
            _logger.warning("Could not tag %d versions of %s with their outcomes together: %s", len(outcomes), model_name, e)
            if len(outcomes) == 1:
                return False
    ok = True
    for version, (status, reason) in outcomes.items():  # those not written together: one by one
        ok = _tag_alone(client, model_name, version, status, reason) and ok
    return ok


def _tag_alone(client, model_name: str, version: str, status: str, reason: str) -> bool:
    try:
        uri = client.tracking_uri
        if _one_write(uri):
            _outcome_store(uri).set_model_version_tag(model_name, version, ModelVersionTag(tags.STATUS, outcome_value(status, reason)))
            return True
        set_tag = _version_tagger(client)
        set_tag(model_name, version, tags.STATUS, status)
        set_tag(model_name, version, tags.REASON, reason[:5000])
        return True
    except Exception as e:
        _logger.warning("Could not tag %s version %s with its outcome (%s): %s", model_name, version, status, e)
        return False


#: per tracking server: does one outcome write set the tags of the versions it names (the
#: ``hokusai+`` store)? None: not known yet.
ONE_WRITE: dict[str, bool] = {}
ONE_WRITE_CHECK = threading.Lock()
#: at most this many versions' outcomes in one request (and under MLflow's 100,000-character value).
BATCH, BATCH_CHARS = 50, 90_000


def _written_together(uri: str, name: str, outcomes: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Write the outcomes in as few requests as the server's store allows; the outcomes left to
    write one by one (all of them on a server whose store turns nothing into tags; a batch that
    failed)."""
    store = _outcome_store(uri)
    left = dict(outcomes)
    if _one_write(uri) is None:
        with ONE_WRITE_CHECK:  # the first write to this server reads the version back, once
            if ONE_WRITE.get(uri) is None:
                version, (status, reason) = next(iter(left.items()))
                store.set_model_version_tag(name, version, ModelVersionTag(tags.STATUS, outcomes_value({version: (status, reason)})))
                written = store.get_model_version(name, version).tags or {}
                ONE_WRITE[uri] = written.get(tags.STATUS) == status and tags.REASON in written
                if not ONE_WRITE[uri]:
                    _logger.warning(
                        "MLflow at %s does not run the hokusai+ registry store: the outcome tags take two "
                        "requests per decision", uri,
                    )
                    return left
                del left[version]
    if not _one_write(uri):
        return left
    while left:
        chunk: dict[str, tuple[str, str]] = {}
        for version, outcome in left.items():
            if len(chunk) == BATCH or (chunk and len(outcomes_value({**chunk, version: outcome})) > BATCH_CHARS):
                break
            chunk[version] = outcome
        try:
            store.set_model_version_tag(name, next(iter(chunk)), ModelVersionTag(tags.STATUS, outcomes_value(chunk)))
        except Exception as e:  # one version deleted, say: the others are written alone
            _logger.warning("Could not tag %d versions of %s together (%s): writing them one by one", len(chunk), name, e)
            return left
        for version in chunk:
            del left[version]
    return left


def _version_tagger(client):
    """``set(name, version, key, value)`` on a model version. Against a tracking server, the
    registry's REST store itself: ``MlflowClient.set_model_version_tag`` first reads the registered
    model to refuse prompts (one more request per tag), and a version MLflow announced as a model
    version is not a prompt's."""
    uri = client.tracking_uri
    if not uri.startswith(("http://", "https://")):
        return lambda name, version, key, value: client.set_model_version_tag(name, version, key, value)
    store = _rest_store(uri)
    return lambda name, version, key, value: store.set_model_version_tag(name, version, ModelVersionTag(key, value))


def _one_write(uri: str) -> bool | None:
    """Does one ``outcome_value`` write set both outcome tags at ``uri``? On MLflow's database
    always (the ``hokusai+`` store writes them); on a server, as its first write found (None: not
    written to yet)."""
    return True if is_store_uri(uri) else ONE_WRITE.get(uri)


def _outcome_store(uri: str):
    """Where outcome tags are written: the server's REST registry, or on MLflow's database the
    ``hokusai+`` store itself (the same code the server runs: every outcome in one transaction)."""
    return _database_store(uri) if is_store_uri(uri) else _rest_store(uri)


@functools.lru_cache(maxsize=8)
def _database_store(uri: str):
    from hokusai_mlflow_plugin.plugins.stamping_store import SCHEME_PREFIX, HokusaiRegistryStore

    return HokusaiRegistryStore(SCHEME_PREFIX + uri)


@functools.lru_cache(maxsize=8)
def _rest_store(uri: str):
    from mlflow.store.model_registry.rest_store import RestStore
    from mlflow.utils.credentials import get_default_host_creds

    return RestStore(lambda: get_default_host_creds(uri))
