"""Small training helpers: a real scikit-learn model, logged with plain MLflow."""

from __future__ import annotations

import mlflow
import numpy as np
from sklearn.linear_model import LogisticRegression

# Skip pip-requirement inference (a subprocess per log_model): the tests do not serve the model.
PIP = ["scikit-learn"]


def small_model() -> LogisticRegression:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(int)
    return LogisticRegression().fit(X, y)


def log_model(model=None, registered_model_name: str | None = None, **kwargs):
    return mlflow.sklearn.log_model(
        model or small_model(),
        name="model",
        pip_requirements=PIP,
        registered_model_name=registered_model_name,
        **kwargs,
    )


def train_and_register(model_name: str, metrics: dict[str, float], params: dict | None = None):
    """A training run as a user writes it: log metrics, then log_model(registered_model_name=...).
    Returns (run_id, version)."""
    with mlflow.start_run() as run:
        if params:
            mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        info = log_model(registered_model_name=model_name)
    return run.info.run_id, str(info.registered_model_version)


class CountingClient:
    """The real MLflow client, recording the name of each call made through it (what a decision
    or a sweep costs MLflow)."""

    def __init__(self, client):
        self.client, self.calls = client, []

    def count(self, name: str) -> int:
        return self.calls.count(name)

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def counted(*args, **kwargs):
            self.calls.append(name)
            return attr(*args, **kwargs)

        return counted
