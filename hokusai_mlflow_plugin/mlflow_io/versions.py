"""Create a model version from a model that is logged already (``POST /models/register``): the
URI forms MLflow's ``register_model`` takes, resolved with a client bound to one server (not
MLflow's process-wide tracking URI, which a multi-threaded server must not change)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ALREADY_EXISTS, RESOURCE_ALREADY_EXISTS, ErrorCode

from hokusai_mlflow_plugin.core.errors import NOT_FOUND, BadOption
from hokusai_mlflow_plugin.mlflow_io.client import MlflowNotFound, call, translated

RUNS_URI = re.compile(r"runs:/([0-9a-f]{32})/(.+)")
MODELS_URI = re.compile(r"models:/(m-[0-9a-f]{32})")
URI_FORM = "runs:/<run id>/<artifact path> or models:/m-<model id>"
_EXISTS = {ErrorCode.Name(RESOURCE_ALREADY_EXISTS), ErrorCode.Name(ALREADY_EXISTS)}


class BadModelUri(BadOption):
    """A model URI that is not one of the forms (422), or names nothing in MLflow (``NOT_FOUND``: 404)."""

    def __init__(self, message: str, kind: str | None = None):
        super().__init__("model_uri", message, kind)


@dataclass(frozen=True)
class Source:
    source: str
    run_id: str | None
    model_id: str | None


def parse_model_uri(uri: str) -> tuple[str, str, str | None]:
    """``("runs", run_id, path)`` or ``("models", model_id, None)``; ``BadModelUri`` otherwise.
    Taken as given, never stripped: the API's document states these patterns, and a URI it allows
    (``runs:/<id>/`` and a vertical tab) must not become one they refuse."""
    uri = uri or ""
    if match := RUNS_URI.fullmatch(uri):
        return "runs", match.group(1), match.group(2).strip("/")
    if match := MODELS_URI.fullmatch(uri):
        return "models", match.group(1), None
    raise BadModelUri(f"model_uri {uri!r} is not a logged model's URI: use {URI_FORM}.")


def resolve(client, uri: str) -> Source:
    """Where the version's files are, and its run and LoggedModel, as ``register_model`` finds them."""
    kind, ident, path = parse_model_uri(uri)
    try:
        if kind == "models":
            logged = call(client.get_logged_model, ident)
            return Source(f"models:/{ident}", logged.source_run_id, ident)
        run = call(client.get_run, ident)
    except MlflowNotFound:
        raise BadModelUri(f"MLflow has no {'LoggedModel' if kind == 'models' else 'run'} '{ident}' (model_uri {uri!r}).",
                          NOT_FOUND) from None
    found = [m for m in call(client.search_logged_models, [run.info.experiment_id],
                             filter_string=f"source_run_id = '{ident}'") if m.name == path]
    if found:  # MLflow 3: log_model made a LoggedModel; register it, as register_model does
        newest = max(found, key=lambda m: m.creation_timestamp or 0)
        return Source(f"models:/{newest.model_id}", ident, newest.model_id)
    return Source(f"{run.info.artifact_uri.rstrip('/')}/{path}", ident, None)  # a run's artifacts (MLflow 2 style)


def create_version(client, model_name: str, uri: str, tags: dict[str, str]):
    """A new version of ``model_name`` (created if need be) from the logged model at ``uri``."""
    source = resolve(client, uri)
    try:
        try:
            client.create_registered_model(model_name)
        except MlflowException as e:
            if e.error_code not in _EXISTS:
                raise translated(e) from e
        return call(client.create_model_version, model_name, source.source, run_id=source.run_id, tags=tags,
                    model_id=source.model_id, await_creation_for=0)
    except MlflowNotFound as e:  # MLflow's INVALID_PARAMETER_VALUE: a name it refuses
        raise BadModelUri(f"MLflow refused model '{model_name}' from {uri}: {e}") from None
