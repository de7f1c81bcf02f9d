"""Load the model at a path: a pickled or joblib file, an MLflow model directory, or a directory
of checkpoint files.

Loading a pickled or joblib file runs code from that file, as unpickling always does: pass only
files you trust (your own training output).
"""

from __future__ import annotations

import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hokusai_mlflow_plugin.core.errors import first_line
from hokusai_mlflow_plugin.submit.errors import ModelError

SKLEARN, PICKLED, MLFLOW_DIR, CHECKPOINTS = "scikit-learn", "pickled", "mlflow", "checkpoints"
_WHAT_TO_PASS = (
    "pass a pickled or joblib model file, an MLflow model directory, or a directory that holds "
    "your checkpoint files"
)


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


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
