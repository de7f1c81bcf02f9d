"""Fixtures of the HTTP surfaces: the live stack on PostgreSQL alone, for the API's own checks."""

from __future__ import annotations

import mlflow
import pytest


@pytest.fixture
def pg_stack(stack_postgres, monkeypatch):
    """The PostgreSQL stack, with plain MLflow in this process pointed at its server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack_postgres.mlflow.url)
    mlflow.set_tracking_uri(stack_postgres.mlflow.url)
    yield stack_postgres
    mlflow.end_run()
