"""The one way this project talks to MLflow: a client for a URI, the environment that makes it
fail fast, one pager, and one translation of its failures into the domain's errors."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ErrorCode

from hokusai_mlflow_plugin.config import ConfigError, is_store_uri, store_uri_problem  # noqa: F401 (is_store_uri: used here by others)
from hokusai_mlflow_plugin.core.errors import NOT_FOUND, HokusaiError, MlflowUnavailable

_NOT_FOUND = {ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_PARAMETER_VALUE)}

# MLflow's client retries a failed request seven times with backoff by default: two minutes on a
# server that is down. Everything here answers someone who waits (MLflow's webhook delivery, whose
# own retries last about 7 s; a person at a terminal), so it fails fast instead: one retry, a
# 10 s timeout. Values the operator set in the environment win.
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class MlflowNotFound(HokusaiError):
    """MLflow has no such model version, LoggedModel or run (deleted since, or MLflow's own test payload)."""

    kind = NOT_FOUND


def client(uri: str) -> MlflowClient:
    """A client whose tracking and registry are both the server at ``uri``."""
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def store_client(store_uri: str | None) -> MlflowClient | None:
    """A client on MLflow's own database (``mlflow server --backend-store-uri``) through MLflow's own
    SQL stores, as ``mlflow gc`` works: it reads runs, LoggedModels and versions, and writes tags,
    with none of MLflow's server's CPU; None without a URI. No I/O: MLflow's stores open the
    database at the first read. The installed MLflow must be the server's (its schema check refuses
    a database of another version)."""
    if not store_uri:
        return None
    problem = store_uri_problem(store_uri)
    if problem:
        raise ConfigError(problem)
    return MlflowClient(tracking_uri=store_uri, registry_uri=store_uri)


def fail_fast_by_default(environ=os.environ) -> None:
    """Make this whole process fail fast on MLflow (a long-running receiver), unless the operator
    chose otherwise."""
    for key, value in FAIL_FAST.items():
        environ.setdefault(key, value)


@contextmanager
def failing_fast():
    """Fail fast on MLflow within a block (one CLI command), unless the operator chose otherwise."""
    with mlflow_env(**{key: os.environ.get(key, value) for key, value in FAIL_FAST.items()}):
        yield


@contextmanager
def mlflow_env(*keep: str, **values: str):
    """Set the variables MLflow's client reads (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``,
    ``HOKUSAI_TOKEN_ID`` for the run-context plugin, ...) for a block; afterwards put back exactly
    what was there, for those and for the ``keep`` variables that the block may set itself."""
    saved = {k: os.environ.get(k) for k in (*keep, *values)}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def call(fn, *args, **kwargs):
    """Call the MLflow client; its failures become ``MlflowNotFound`` or ``MlflowUnavailable``."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        raise translated(e) from e


def translated(error: Exception) -> HokusaiError:
    """A failure of MLflow's client as the domain's error, by MLflow's error code."""
    if isinstance(error, MlflowException):
        if error.error_code in _NOT_FOUND:
            return MlflowNotFound(str(error))
        return MlflowUnavailable(f"MLflow did not answer: {error.message[:300]}")
    return MlflowUnavailable(f"MLflow is unreachable: {type(error).__name__}")  # connection refused, timeouts, DNS


def pages(search: Callable, *args, page_size: int = 200, **kwargs) -> Iterator:
    """Every item of an MLflow search or list call (``search_model_versions``, ``list_webhooks``),
    page after page, as the pages are needed."""
    token = None
    while True:
        page = search(*args, max_results=page_size, page_token=token, **kwargs)
        yield from page
        token = page.token
        if not token:
            return
