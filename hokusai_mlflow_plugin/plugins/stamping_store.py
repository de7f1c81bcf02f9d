"""``mlflow.model_registry_store`` plugin for ``hokusai+<SQLAlchemy URL>`` registry URIs.

``HokusaiRegistryStore`` is MLflow's own ``SqlAlchemyStore`` on the inner URL (so MLflow's webhooks
keep firing), with one addition: a new model version that does not carry ``hokusai_token_id`` in its
create request gets the ``hokusai_*`` tags of its source LoggedModel, completed by its run's when
the run has the same token (or the LoggedModel none). That makes
every version carry its token, registrations from the MLflow UI included.

It also writes a decision's two outcome tags, ``hokusai_status`` and ``hokusai_reason``, from ONE
``set-tag`` request whose ``hokusai_status`` value is ``outcome_value(status, reason)`` (MLflow has
no route that sets several model-version tags): one request, one SQLite write and one webhook
delivery fewer per decision (issue 23). The same request can carry the outcomes of several versions
of the registered model it is sent to (``outcomes_value``, written on one of them): a burst's
outcomes in one request, one transaction and one delivery. It gives nobody a right they lack: whoever
may tag one version of a registered model may tag all of them (MLflow's permissions and the
gateway's ownership are the registered model's), and the gateway lets no key write ``hokusai_status``.
A server on MLflow's plain store would keep that value as it is, so the receiver checks once per
server that the two tags came out (``mlflow_io.facts``).

The constructor does no I/O; the database is opened on first use (without a URI, MLflow's registry
URI then). The store pickles as its URIs.
"""

from __future__ import annotations

import json
import logging
import os
import threading

from mlflow.entities.model_registry import ModelVersionTag
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

from hokusai_mlflow_plugin.core.tags import INPUT_TAGS, REASON, STATUS, TOKEN_ID, logged_model_id, normalize_token_id
from hokusai_mlflow_plugin.plugins import source_reads

_logger = logging.getLogger(__name__)

SCHEME_PREFIX = "hokusai+"
_SERVER_BACKEND_ENV = "_MLFLOW_SERVER_FILE_STORE"  # set by `mlflow server` for its workers


def inner_uri(store_uri: str) -> str:
    """``hokusai+sqlite:///x.db`` -> ``sqlite:///x.db``."""
    if not store_uri or not store_uri.startswith(SCHEME_PREFIX):
        raise ValueError(
            f"A Hokusai registry store URI starts with '{SCHEME_PREFIX}', such as "
            f"'hokusai+sqlite:///mlflow.db'; got {store_uri!r}"
        )
    return store_uri[len(SCHEME_PREFIX):]


def _default_store_uri() -> str:
    """Without a URI, the registry URI MLflow resolves (MLFLOW_REGISTRY_URI, else the tracking URI)."""
    from mlflow.tracking._model_registry.utils import get_registry_uri

    return get_registry_uri()


#: MLflow's limit on a model version tag's value (its column); the combined value stays within it.
TAG_VALUE_LIMIT = 5000


def outcome_value(status: str, reason: str) -> str:
    """The value of one ``hokusai_status`` tag write that this store turns into both outcome tags."""
    value = json.dumps({STATUS: status, REASON: reason}, ensure_ascii=False)
    while len(value) > TAG_VALUE_LIMIT:  # cut the reason, never the status or the JSON
        reason = reason[: max(0, len(reason) - (len(value) - TAG_VALUE_LIMIT) - 1)]
        value = json.dumps({STATUS: status, REASON: reason}, ensure_ascii=False)
    return value


def outcome_tags(key: str, value: str | None) -> dict[str, str] | None:
    """The two outcome tags an ``outcome_value`` write stands for; None for any other tag."""
    if key != STATUS or not value or not value.startswith("{"):
        return None
    try:
        found = json.loads(value)
    except ValueError:
        return None
    if not isinstance(found, dict) or set(found) != {STATUS, REASON} or not all(isinstance(v, str) for v in found.values()):
        return None
    return found


#: the key of ``outcomes_value``'s object: ``{OUTCOMES: {version: {STATUS: ..., REASON: ...}}}``.
OUTCOMES = "hokusai_outcomes"


def outcomes_value(outcomes: dict[str, tuple[str, str]]) -> str:
    """The value of one ``hokusai_status`` write, on one of the versions in ``outcomes`` (version ->
    (status, reason), versions of one registered model), that this store turns into both outcome
    tags of each. Each reason is cut as ``outcome_value`` cuts it."""
    return json.dumps(
        {OUTCOMES: {str(v): json.loads(outcome_value(status, reason)) for v, (status, reason) in outcomes.items()}},
        ensure_ascii=False,
    )


def outcome_writes(key: str, value: str | None, version) -> dict[str, dict[str, str]] | None:
    """version -> its two outcome tags, for a write of ``outcome_value`` or ``outcomes_value`` on
    ``version`` (which must be among the versions of the latter); None for any other tag."""
    one = outcome_tags(key, value)
    if one is not None:
        return {str(version): one}
    if key != STATUS or not value or not value.startswith('{"' + OUTCOMES):
        return None
    try:
        found = json.loads(value)
    except ValueError:
        return None
    if not isinstance(found, dict) or set(found) != {OUTCOMES} or not isinstance(found[OUTCOMES], dict):
        return None
    writes = {str(v): outcome_tags(STATUS, json.dumps(tags) if isinstance(tags, dict) else "") for v, tags in found[OUTCOMES].items()}
    if not writes or str(version) not in writes or any(tags is None for tags in writes.values()):
        return None
    return writes


class HokusaiRegistryStore(SqlAlchemyStore):
    """MLflow's SQL registry store that stamps ``hokusai_*`` tags on new model versions."""

    def __init__(self, store_uri=None, tracking_uri=None):
        # No I/O here: MLflow builds stores eagerly, and a store must stay picklable.
        self._store_uri = store_uri
        self._tracking_uri = tracking_uri
        self._init_lock = threading.Lock()
        self._ready = False
        if store_uri is not None:
            inner_uri(store_uri)  # fail fast on a URI that is not ours (no I/O)

    # -- lazy initialisation ----------------------------------------------------------------------

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        with self._init_lock:
            if not self._ready:
                SqlAlchemyStore.__init__(self, inner_uri(self._store_uri or _default_store_uri()))
                self._ready = True

    def __getattr__(self, name):
        # Called only for attributes that are not set yet: those made by SqlAlchemyStore.__init__
        # (engine, ManagedSessionMaker, ...). Dunders and our own fields never trigger I/O.
        if name.startswith("__") or name in ("_store_uri", "_tracking_uri", "_init_lock", "_ready"):
            raise AttributeError(name)
        self._ensure_ready()
        return object.__getattribute__(self, name)

    def __getstate__(self):
        return {"store_uri": self._store_uri, "tracking_uri": self._tracking_uri}

    def __setstate__(self, state):
        self.__init__(state["store_uri"], state["tracking_uri"])

    # -- stamping ---------------------------------------------------------------------------------

    def create_model_version(
        self,
        name,
        source,
        run_id=None,
        tags=None,
        run_link=None,
        description=None,
        local_model_path=None,
        model_id=None,
    ):
        self._ensure_ready()
        tags = list(tags or [])
        if not any(t.key == TOKEN_ID for t in tags):
            given = {t.key for t in tags}
            stamped = self._source_tags(source, run_id, model_id)
            tags.extend(ModelVersionTag(k, v) for k, v in stamped.items() if k not in given)
        return super().create_model_version(
            name,
            source,
            run_id=run_id,
            tags=tags,
            run_link=run_link,
            description=description,
            local_model_path=local_model_path,
            model_id=model_id,
        )

    # -- the outcome tags ---------------------------------------------------------------------------

    def set_model_version_tag(self, name, version, tag):
        writes = outcome_writes(tag.key, tag.value, version)
        if writes is None:
            return super().set_model_version_tag(name, version, tag)
        self._ensure_ready()
        from mlflow.entities.model_registry.model_version_stages import STAGE_DELETED_INTERNAL
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
        from mlflow.store.model_registry.dbmodels.models import SqlModelVersion, SqlModelVersionTag
        from mlflow.utils.validation import _validate_model_name, _validate_model_version, _validate_model_version_tag

        _validate_model_name(name)
        carrier = _validate_model_version(version)
        writes = {_validate_model_version(v): outcome for v, outcome in writes.items()}
        for outcome in writes.values():
            for key, value in outcome.items():
                _validate_model_version_tag(key, value)
        # Every tag in one transaction (one SQLite write lock, as MLflow's own set_model_version_tag),
        # with one read of the versions and one of their outcome tags for the whole batch: MLflow's
        # own write reads its version and merges each tag, three statements per tag (issue 23).
        with self.ManagedSessionMaker(read_only=False) as session:
            versions = dict(
                self._get_query(session, SqlModelVersion)
                .with_entities(SqlModelVersion.version, SqlModelVersion.workspace)
                .filter(SqlModelVersion.name == name, SqlModelVersion.version.in_(list(writes)),
                        SqlModelVersion.current_stage != STAGE_DELETED_INTERNAL)
                .all()
            )
            if carrier not in versions:  # the version written on must exist (404, as MLflow's own)
                raise MlflowException(f"Model Version (name={name}, version={carrier}) not found", RESOURCE_DOES_NOT_EXIST)
            # another version of the batch, deleted since its decision, has no tags to show
            existing = {
                (tag.version, tag.key): tag
                for tag in self._get_query(session, SqlModelVersionTag).filter(
                    SqlModelVersionTag.name == name, SqlModelVersionTag.version.in_(list(versions)),
                    SqlModelVersionTag.key.in_((STATUS, REASON)),
                )
            }
            for v, outcome in writes.items():
                if v not in versions:
                    continue
                for key, value in outcome.items():
                    if (v, key) in existing:
                        existing[(v, key)].value = value
                    else:
                        session.add(SqlModelVersionTag(workspace=versions[v], name=name, version=v, key=key, value=value))

    def _tracking_store(self):
        """Where runs and LoggedModels live. Inside ``mlflow server``, the server's own tracking
        store (the same one that validated this request); elsewhere, the store of our tracking URI.
        Resolved at use, not at construction: MLflow may build the registry store before the
        server has set its tracking URI."""
        if os.environ.get(_SERVER_BACKEND_ENV):
            from mlflow.server.handlers import _get_tracking_store

            return _get_tracking_store()
        from mlflow.tracking._tracking_service.utils import _get_store

        return _get_store(self._tracking_uri)

    def _source_tags(self, source, run_id, model_id) -> dict[str, str]:
        """The ``hokusai_*`` tags of the source LoggedModel, completed by its run's when the run
        has the same token (or the LoggedModel none); never raises."""
        found: dict[str, str] = {}
        try:
            store = self._tracking_store()
            model_id = model_id or logged_model_id(source)
            with source_reads.Reader(store) as reader:  # just the tags, in one session: MLflow's own CPU (issue 23)
                if model_id:
                    logged = reader.logged_model(model_id, metrics=False)
                    if logged is None:
                        raise LookupError(f"MLflow has no LoggedModel {model_id}")
                    found = dict(logged.tags)
                    run_id = run_id or logged.source_run_id
                if run_id and not all(key in found for key in INPUT_TAGS):
                    ran = reader.run(run_id, metrics=False)
                    if ran is None:
                        raise LookupError(f"MLflow has no run {run_id}")
                    if TOKEN_ID not in found or _same_token(found[TOKEN_ID], ran.tags.get(TOKEN_ID)):
                        found = {**ran.tags, **found}
        except Exception:
            # Registration must never fail because of us; the reconcile sweep reads the source too.
            _logger.warning(
                "Hokusai: could not read the tags of source %r (run %r); the new version is %s",
                source,
                run_id,
                "stamped with the LoggedModel's tags only" if TOKEN_ID in found else "not stamped",
                exc_info=True,
            )
        return found if TOKEN_ID in found else {}


def _same_token(a: str, b: str | None) -> bool:
    return b is not None and normalize_token_id(a) == normalize_token_id(b)
