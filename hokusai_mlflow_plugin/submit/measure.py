"""Measure a model's metric: computed on evaluation data with scikit-learn, or read from a run."""

from __future__ import annotations

import math
import os

from hokusai_mlflow_plugin.core import gate
from hokusai_mlflow_plugin.core.errors import first_line
from hokusai_mlflow_plugin.submit.errors import BadOption, ModelError


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


def run_metric(client, run_id: str, metric_name: str) -> float:
    """The value ``metric_name`` was last logged with on run ``run_id``."""
    from hokusai_mlflow_plugin.mlflow_io.client import MlflowNotFound, call

    try:
        run = call(client.get_run, run_id)  # MlflowUnavailable when MLflow cannot be asked
    except MlflowNotFound as e:
        raise ModelError(f"MLflow has no run '{run_id}' ({first_line(e, limit=200)}): check --run-id.") from None
    if metric_name not in run.data.metrics:
        logged = ", ".join(sorted(run.data.metrics)) or "none"
        raise ModelError(
            f"Metric '{metric_name}' is missing from run {run_id} (its metrics: {logged}): log it with "
            f"mlflow.log_metric('{metric_name}', value), or pass --metric-value or --eval-data."
        )
    return run.data.metrics[metric_name]
