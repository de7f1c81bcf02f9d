"""The errors of ``hokusai model register``."""

from __future__ import annotations

from hokusai_mlflow_plugin.core.errors import BadOption, HokusaiError

__all__ = ["BadOption", "ModelError"]


class ModelError(HokusaiError):
    """A model, its data or MLflow cannot do what was asked; the message says what to do."""
