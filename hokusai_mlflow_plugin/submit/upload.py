"""Log a loaded model to MLflow with its token's tags, and register it as a new model version."""

from __future__ import annotations

import sys
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd

from hokusai_mlflow_plugin.core import tags
from hokusai_mlflow_plugin.core.errors import UNAVAILABLE, first_line
from hokusai_mlflow_plugin.mlflow_io.client import failing_fast, mlflow_env
from hokusai_mlflow_plugin.submit.errors import ModelError
from hokusai_mlflow_plugin.submit.load import PICKLED, SKLEARN, LoadedModel, unpickle


def check_reachable(client, url: str) -> None:
    """One cheap call, without MLflow's minutes of retries, before anything is uploaded."""
    try:
        with failing_fast():
            client.search_experiments(max_results=1)
    except Exception:
        raise ModelError(f"MLflow is unreachable at {url}: start it or set MLFLOW_TRACKING_URI.", UNAVAILABLE) from None


class ArtifactModel(mlflow.pyfunc.PythonModel):
    """A model Hokusai logged from a path: an MLflow model directory (predict delegates to it), a
    pickled file (predict calls the object's own predict) or checkpoint files (stored, not served)."""

    def load_context(self, context):
        path = Path(context.artifacts["model"])
        self._path = path
        self._model = None
        if path.is_dir() and (path / "MLmodel").is_file():
            self._model = mlflow.pyfunc.load_model(str(path))
        elif path.is_file():
            self._model = unpickle(path)

    # A DataFrame hint: MLflow then neither validates the input nor warns about a missing hint.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        if self._model is None:
            raise NotImplementedError(
                f"This model holds checkpoint files ({self._path.name}), not a servable model: download "
                "them with mlflow.artifacts.download_artifacts and load them with the framework that wrote them."
            )
        if not hasattr(self._model, "predict"):
            raise NotImplementedError(f"The pickled {type(self._model).__name__} has no predict method.")
        return self._model.predict(model_input)


@dataclass(frozen=True)
class Logged:
    run_id: str
    version: str | None  # None when the model was logged without registering it
    model_id: str | None = None  # the LoggedModel: models:/<model_id>


def log_and_register(
    loaded: LoadedModel,
    *,
    tracking_uri: str,
    model_name: str | None,
    token_id: str,
    metric_name: str,
    baseline: float,
    metric_value: float | None = None,
    run_id: str | None = None,
) -> Logged:
    """Log ``loaded`` as a model (into run ``run_id``, or a new run), with the ``hokusai_*`` tags on
    the run and the LoggedModel and ``metric_value`` logged where given, and register it as a new
    version of ``model_name`` (without one, the model is logged only: the API registers it). The
    webhook receiver decides the version as soon as it exists."""
    import requests
    from mlflow.exceptions import MlflowException

    token_tags = {
        tags.TOKEN_ID: tags.normalize_token_id(token_id), tags.METRIC: metric_name, tags.BASELINE: repr(float(baseline))
    }
    try:
        # MLflow prints the run's link to stdout: keep stdout for our answer (--json).
        with _tracking(tracking_uri), redirect_stdout(sys.stderr):
            run_name = None if run_id else f"hokusai-register-{token_tags[tags.TOKEN_ID].lower()}"
            with mlflow.start_run(run_id=run_id, run_name=run_name) as run:
                # Before log_model: the version is decided from these the moment it is created.
                mlflow.set_tags(token_tags)
                if metric_value is not None:
                    mlflow.log_metric(metric_name, metric_value)
                info = _log_model(loaded, model_name, token_tags)
    except (MlflowException, requests.RequestException) as e:
        raise ModelError(
            f"MLflow at {tracking_uri} failed while logging the model ({type(e).__name__}: {first_line(e, limit=200)}): "
            "check that the server is up and has room for artifacts, then run the command again."
        ) from None
    version = info.registered_model_version
    return Logged(run.info.run_id, str(version) if version is not None else None, info.model_id)


def _log_model(loaded: LoadedModel, model_name: str, token_tags: dict[str, str]):
    if loaded.kind == SKLEARN:
        import sklearn
        from mlflow import sklearn as mlflow_sklearn

        return mlflow_sklearn.log_model(
            loaded.obj,
            name="model",
            registered_model_name=model_name,
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],  # explicit: no slow inference
            tags=token_tags,
        )
    pip = [f"mlflow=={mlflow.__version__}"]
    if loaded.kind == PICKLED and "joblib" in sys.modules:
        pip.append(f"joblib=={sys.modules['joblib'].__version__}")
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=ArtifactModel(),
        artifacts={"model": str(loaded.path)},
        registered_model_name=model_name,
        pip_requirements=pip,
        tags=token_tags,
    )


@contextmanager
def _tracking(uri: str):
    """Point MLflow's fluent API (tracking and registry) at ``uri``, then put back exactly what was
    there: the explicitly set values (MLflow's module globals, None when unset) and the variables
    that setting them writes. Restoring the resolved URIs instead would pin them for the process."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = tracking_utils._tracking_uri, registry_utils._registry_uri
    with mlflow_env("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(saved[0])
            registry_utils._registry_uri = saved[1]
