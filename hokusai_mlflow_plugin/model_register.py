"""The work behind ``hokusai model register``: load a model from a path, measure its metric, log it
to MLflow as a registered model version, and wait for the decision. Plain functions; the click
shell is ``model_cli``.

Loading a pickled or joblib file runs code from that file, as unpickling always does: pass only
files you trust (your own training output).
"""

from __future__ import annotations

import math
import os
import pickle
import sys
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from sqlalchemy.orm import Session

from hokusai_mlflow_plugin import gate, mlflow_facts
from hokusai_mlflow_plugin import tags as T
from hokusai_mlflow_plugin import tokens
from hokusai_mlflow_plugin.db.models import DRAFT, Registration, Token
from hokusai_mlflow_plugin.errors import first_line
from hokusai_mlflow_plugin.service import wait_for_decision  # noqa: F401  (used by model_cli)
from hokusai_mlflow_plugin.metrics import get_metric

SKLEARN, PICKLED, MLFLOW_DIR, CHECKPOINTS = "scikit-learn", "pickled", "mlflow", "checkpoints"
_WHAT_TO_PASS = (
    "pass a pickled or joblib model file, an MLflow model directory, or a directory that holds "
    "your checkpoint files"
)


class ModelError(Exception):
    """A model, its data or MLflow cannot do what was asked; the message says what to do."""


class BadOption(ModelError):
    """An option value that cannot be used (a usage error, exit 2); ``option`` names it."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


# -- loading -------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    path: Path
    kind: str  # scikit-learn | pickled | mlflow | checkpoints
    obj: Any = None  # the unpickled object, for files
    files: int = 1
    size: int = 0

    @property
    def estimator(self):
        """The scikit-learn estimator to score, or None."""
        if self.kind == SKLEARN:
            return self.obj
        if self.kind == MLFLOW_DIR and "sklearn" in _flavors(self.path):
            from mlflow import sklearn as mlflow_sklearn

            try:
                return mlflow_sklearn.load_model(str(self.path))
            except Exception as e:
                raise ModelError(
                    f"The scikit-learn model in {self.path} cannot be loaded ({type(e).__name__}: {first_line(e, limit=200)}): "
                    "install what it needs (pip install scikit-learn), or pass --metric-value or --run-id."
                ) from None
        return None

    def describe(self) -> str:
        what = {
            SKLEARN: f"scikit-learn {type(self.obj).__name__}",
            PICKLED: f"pickled {type(self.obj).__name__}",
            MLFLOW_DIR: "MLflow model directory",
            CHECKPOINTS: f"checkpoint directory, {self.files} file{'s' if self.files != 1 else ''}",
        }[self.kind]
        return f"{self.path} ({what}, {_size(self.size)})"


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Classify and, for a file, unpickle the model at ``path``; ``ModelError`` when it is missing,
    unreadable or not a model."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelError(f"Model path {p} does not exist: {_WHAT_TO_PASS}.")
    if p.is_dir():
        return _load_directory(p)
    try:
        with p.open("rb") as f:
            f.read(1)
    except OSError as e:
        raise ModelError(f"Model file {p} is not readable ({e.strerror}): fix its permissions or {_WHAT_TO_PASS}.") from None
    try:
        obj = unpickle(p)
    except Exception as e:
        raise ModelError(
            f"Model file {p} cannot be loaded as a pickle or joblib file ({type(e).__name__}: {first_line(e, limit=200)}): "
            f"{_WHAT_TO_PASS}."
        ) from None
    return LoadedModel(p, SKLEARN if _is_estimator(obj) else PICKLED, obj, size=p.stat().st_size)


def unpickle(path: Path):
    """joblib first (it reads plain pickles too), plain pickle where joblib is not installed."""
    try:
        import joblib
    except ImportError:
        with path.open("rb") as f:
            return pickle.load(f)
    return joblib.load(path)


def _load_directory(p: Path) -> LoadedModel:
    files, size, errors = 0, 0, []
    for root, _dirs, names in os.walk(p, onerror=errors.append):
        for name in names:
            files += 1
            try:
                size += (Path(root) / name).stat().st_size
            except OSError as e:
                errors.append(e)
    if errors:
        raise ModelError(f"Model directory {p} is not readable ({errors[0].strerror}): fix its permissions.")
    if files == 0:
        raise ModelError(f"Model directory {p} holds no files: {_WHAT_TO_PASS}.")
    if (p / "MLmodel").is_file():
        try:
            _flavors(p)
        except Exception as e:
            raise ModelError(
                f"The MLmodel file in {p} cannot be read ({type(e).__name__}): save the model again with "
                "mlflow.<flavor>.save_model, or pass the directory without its MLmodel file as checkpoints."
            ) from None
        return LoadedModel(p, MLFLOW_DIR, files=files, size=size)
    return LoadedModel(p, CHECKPOINTS, files=files, size=size)


def _flavors(p: Path) -> dict:
    from mlflow.models import Model

    return Model.load(str(p / "MLmodel")).flavors


def _is_estimator(obj) -> bool:
    base = sys.modules.get("sklearn.base")  # an estimator's unpickling imported it already
    return base is not None and isinstance(obj, base.BaseEstimator)


# -- measuring -----------------------------------------------------------------------------------


def read_eval_data(csv: str | os.PathLike, target: str):
    """(features, labels) from a CSV file with a ``target`` column."""
    import pandas as pd

    try:
        frame = pd.read_csv(csv)
    except Exception as e:
        raise BadOption("--eval-data", f"{csv} cannot be read as CSV ({type(e).__name__}: {first_line(e, limit=200)}): pass a CSV file with a header row.") from None
    if target not in frame.columns:
        shown = ", ".join(map(str, frame.columns[:20]))
        raise BadOption("--target", f"Column '{target}' is not in {csv} (its columns: {shown}): pass the label column as --target.")
    if len(frame) == 0:
        raise BadOption("--eval-data", f"{csv} has a header but no rows: pass the evaluation data.")
    return frame.drop(columns=[target]), frame[target]


def compute_metric(estimator, metric_name: str, X, y) -> float:
    """The metric of ``estimator`` on (X, y), computed with scikit-learn."""
    import numpy as np
    from sklearn import metrics as skm

    name = gate.metric(metric_name).name
    if not hasattr(estimator, "feature_names_in_"):
        X = X.to_numpy()  # fitted on an array: a frame would draw a feature-name warning
    classes = getattr(estimator, "classes_", None)
    binary = classes is not None and len(classes) == 2
    try:
        if name in ("auroc", "log_loss"):
            if not hasattr(estimator, "predict_proba"):
                raise ModelError(
                    f"{name} needs class probabilities and {type(estimator).__name__} has no predict_proba: "
                    "compute the metric yourself and pass --metric-value."
                )
            proba = estimator.predict_proba(X)
            if name == "log_loss":
                value = skm.log_loss(y, proba, labels=classes)
            elif binary:
                value = skm.roc_auc_score(y, proba[:, 1])
            else:
                value = skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes)
        else:
            predicted = estimator.predict(X)
            if name in ("f1", "precision", "recall"):
                score = {"f1": skm.f1_score, "precision": skm.precision_score, "recall": skm.recall_score}[name]
                how = {"average": "binary", "pos_label": classes[1]} if binary else {"average": "macro"}
                value = score(y, predicted, **how)
            else:
                value = {
                    "accuracy": skm.accuracy_score,
                    "r2": skm.r2_score,
                    "mse": skm.mean_squared_error,
                    "mae": skm.mean_absolute_error,
                    "rmse": lambda a, b: math.sqrt(skm.mean_squared_error(a, b)),
                }[name](y, predicted)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(
            f"{type(estimator).__name__} could not be scored on the evaluation data ({type(e).__name__}: "
            f"{first_line(e, limit=200)}): its columns must be the model's features plus the --target column."
        ) from None
    return float(np.asarray(value))


# -- the token's bar -----------------------------------------------------------------------------


def resolve_bar(token: Token, metric: str | None, baseline: float | None) -> tuple[str, float]:
    """The metric and baseline to register against: the token's own where it has them (they are
    authoritative), else the ones given. ``BadOption`` on a difference or a gap."""
    if token.status != DRAFT:
        where = f" (model {token.model_name} version {token.model_version})" if token.model_name else ""
        raise ModelError(
            f"Token '{token.token_id}' is {token.status} already{where}; a token takes one model: use a new token."
        )
    name = gate.metric(metric).name if metric else None
    if token.metric_name and name and name != token.metric_name:
        raise BadOption(
            "--metric",
            f"Token '{token.token_id}' is judged on {token.metric_name}, not {name}; the token's metric is "
            f"authoritative: pass --metric {token.metric_name}.",
        )
    if token.baseline_value is not None and baseline is not None and not math.isclose(baseline, token.baseline_value, rel_tol=0, abs_tol=1e-12):
        raise BadOption(
            "--baseline",
            f"Token '{token.token_id}' has the baseline {token.baseline_value:g}, not {baseline:g}; the token's "
            f"baseline is authoritative: pass --baseline {token.baseline_value:g}.",
        )
    name, bar = token.metric_name or name, token.baseline_value if token.baseline_value is not None else baseline
    if name is None:
        raise BadOption("--metric", f"Token '{token.token_id}' has no metric yet: pass --metric (one of {gate.SUPPORTED}).")
    if bar is None:
        raise BadOption("--baseline", f"Token '{token.token_id}' has no baseline yet: pass --baseline, such as 0.82.")
    try:
        gate.check_baseline(gate.metric(name), bar)
    except gate.GateError as e:
        raise BadOption("--baseline", str(e)) from None
    return name, bar


def set_bar(session: Session, token_id: str, metric: str | None, baseline: float | None) -> tuple[str, float]:
    """Store the metric and baseline on a draft token that lacks them; the session's transaction
    is the caller's."""
    token = tokens.get(session, token_id)
    session.refresh(token, with_for_update=True)  # PostgreSQL: no racing writer between check and set
    name, bar = resolve_bar(token, metric, baseline)
    token.metric_name, token.baseline_value = name, bar
    return name, bar


# -- MLflow --------------------------------------------------------------------------------------


def check_reachable(client, url: str) -> None:
    """One cheap call, without MLflow's minutes of retries, before anything is uploaded."""
    try:
        with mlflow_facts.mlflow_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10"):
            client.search_experiments(max_results=1)
    except Exception:
        raise ModelError(f"MLflow is unreachable at {url}: start it or set MLFLOW_TRACKING_URI.") from None


def run_metric(client, run_id: str, metric_name: str) -> float:
    """The value ``metric_name`` was last logged with on run ``run_id``."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        raise ModelError(f"MLflow has no run '{run_id}' ({first_line(e, limit=200)}): check --run-id.") from None
    if metric_name not in run.data.metrics:
        logged = ", ".join(sorted(run.data.metrics)) or "none"
        raise ModelError(
            f"Metric '{metric_name}' is missing from run {run_id} (its metrics: {logged}): log it with "
            f"mlflow.log_metric('{metric_name}', value), or pass --metric-value or --eval-data."
        )
    return run.data.metrics[metric_name]


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
    version: str


def log_and_register(
    loaded: LoadedModel,
    *,
    tracking_uri: str,
    model_name: str,
    token_id: str,
    metric_name: str,
    baseline: float,
    metric_value: float | None = None,
    run_id: str | None = None,
) -> Logged:
    """Log ``loaded`` as a model (into run ``run_id``, or a new run), with the ``hokusai_*`` tags on
    the run and the LoggedModel and ``metric_value`` logged where given, and register it as a new
    version of ``model_name``. The webhook receiver decides the version as soon as it exists."""
    import requests
    from mlflow.exceptions import MlflowException

    tags = {T.TOKEN_ID: T.normalize_token_id(token_id), T.METRIC: metric_name, T.BASELINE: repr(float(baseline))}
    try:
        # MLflow prints the run's link to stdout: keep stdout for our answer (--json).
        with _tracking(tracking_uri), redirect_stdout(sys.stderr):
            run_name = None if run_id else f"hokusai-register-{tags[T.TOKEN_ID].lower()}"
            with mlflow.start_run(run_id=run_id, run_name=run_name) as run:
                # Before log_model: the version is decided from these the moment it is created.
                mlflow.set_tags(tags)
                if metric_value is not None:
                    mlflow.log_metric(metric_name, metric_value)
                info = _log_model(loaded, model_name, tags)
    except (MlflowException, requests.RequestException) as e:
        raise ModelError(
            f"MLflow at {tracking_uri} failed while logging the model ({type(e).__name__}: {first_line(e, limit=200)}): "
            "check that the server is up and has room for artifacts, then run the command again."
        ) from None
    return Logged(run.info.run_id, str(info.registered_model_version))


def _log_model(loaded: LoadedModel, model_name: str, tags: dict[str, str]):
    if loaded.kind == SKLEARN:
        import sklearn
        from mlflow import sklearn as mlflow_sklearn

        return mlflow_sklearn.log_model(
            loaded.obj,
            name="model",
            registered_model_name=model_name,
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],  # explicit: no slow inference
            tags=tags,
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
        tags=tags,
    )


@contextmanager
def _tracking(uri: str):
    """Point MLflow's fluent API (tracking and registry) at ``uri``, then put back exactly what was
    there: the explicitly set values (MLflow's module globals, None when unset) and the variables
    that setting them writes. Restoring the resolved URIs instead would pin them for the process."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved = tracking_utils._tracking_uri, registry_utils._registry_uri
    with mlflow_facts.mlflow_env("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(saved[0])
            registry_utils._registry_uri = saved[1]


# -- the decision --------------------------------------------------------------------------------


def sort_best_first(registrations: list[Registration]) -> list[Registration]:
    """Best first within each metric by its direction; rows without a value last."""

    def key(reg: Registration):
        m = get_metric(reg.metric_name) if reg.metric_name else None
        if reg.metric_value is None or m is None or not math.isfinite(reg.metric_value):
            return (1, reg.metric_name is None, reg.metric_name or "", 0.0)
        return (0, False, m.name, -reg.metric_value if m.higher_is_better else reg.metric_value)

    return sorted(registrations, key=key)


# -- small things --------------------------------------------------------------------------------


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
