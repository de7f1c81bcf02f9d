"""Tag names and the rules for their values, and how MLflow spells its own identifiers (LoggedModel
ids, version numbers); shared by the plugins, the registration service and the CLI.

Standard library only: the run-context plugin imports it inside every ``import mlflow``.
"""

from __future__ import annotations

import math
import re
import urllib.parse

from hokusai_mlflow_plugin.core.metrics import SUPPORTED, get_metric, normalize_metric_name

TOKEN_ID = "hokusai_token_id"
METRIC = "hokusai_metric"
BASELINE = "hokusai_baseline"
STATUS = "hokusai_status"
REASON = "hokusai_reason"
#: On a registered model: the id of the principal (team or user) that owns it (auth.mlflow_objects),
#: written by the system alone, so that a search is narrowed by one short filter.
OWNER = "hokusai_owner"

#: Tags that travel from a run or LoggedModel to a model version.
INPUT_TAGS = (TOKEN_ID, METRIC, BASELINE)

ENV_TOKEN_ID = "HOKUSAI_TOKEN_ID"
ENV_METRIC = "HOKUSAI_METRIC"
ENV_BASELINE = "HOKUSAI_BASELINE"

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

TOKEN_ID_FORM = "1 to 64 characters from A-Z, a-z, 0-9, '_' and '-' (stored upper case)"
BASELINE_FORM = "a finite number, such as 0.82"
METRIC_FORM = f"one of {SUPPORTED}"


def normalize_token_id(value: str) -> str | None:
    """Return the token id as the Hokusai platform stores it (stripped, upper case), or None."""
    token = value.strip()
    if not TOKEN_RE.fullmatch(token):
        return None
    return token.upper()


def parse_baseline(value: str) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def normalize_metric(value: str) -> str | None:
    return normalize_metric_name(value) if get_metric(value) else None


def _as_mlflow_reads(source: str | None) -> str:
    """``source`` with a ``runs:`` or ``models:`` scheme spelled ``runs:/...``: MLflow parses these
    with urllib, for which ``RUNS:/x``, ``runs:///x`` and ``runs:/x`` are one URI."""
    source = source or ""
    try:
        parsed = urllib.parse.urlparse(source)
    except ValueError:
        return source
    if parsed.scheme in ("runs", "models") and not parsed.netloc:
        return f"{parsed.scheme}:/{parsed.path.lstrip('/')}"
    return source


def logged_model_id(source: str | None) -> str | None:
    """``models:/m-abc`` -> ``m-abc``; anything else (runs:/, models:/name/1, paths) -> None."""
    source = _as_mlflow_reads(source)
    if source.startswith("models:/"):
        rest = source[len("models:/"):].strip("/")
        if rest.startswith("m-") and "/" not in rest:
            return rest
    return None


def version_key(version: str) -> tuple:
    """The order of MLflow's model versions, which are numbers in strings: "10" is newer than "9"."""
    version = str(version)
    return (0, int(version), "") if version.isdecimal() else (-1, 0, version)


_RUN_IN_SOURCE = re.compile(r"^runs:/([0-9a-f]{32})(?:/|$)|/([0-9a-f]{32})/artifacts(?:/|$)")
_MODEL_IN_SOURCE = re.compile(r"/models/(m-[0-9a-f]{32})/artifacts(?:/|$)")


def source_run_id(source: str | None) -> str | None:
    """The run a version's source names, as MLflow lays out artifacts: ``runs:/<id>/...``, or a
    location ``.../<experiment id>/<run id>/artifacts/...`` (``mlflow-artifacts:/``, a path, a
    bucket); None when it names none."""
    match = _RUN_IN_SOURCE.search(_as_mlflow_reads(source))
    return (match.group(1) or match.group(2)) if match else None


def source_logged_model_id(source: str | None) -> str | None:
    """The LoggedModel a version's source names: ``models:/m-...`` or a location
    ``.../models/m-<id>/artifacts``; None when it names none."""
    found = logged_model_id(source)
    if found:
        return found
    match = _MODEL_IN_SOURCE.search(source or "")
    return match.group(1) if match else None
