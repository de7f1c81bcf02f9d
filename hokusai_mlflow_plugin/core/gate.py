"""The metric gate: does a model's real metric reach its token's baseline?

Pure functions over numbers. Every failure is a ``GateError`` whose message is the sentence the
user reads in the MLflow UI (``hokusai_reason``).
"""

from __future__ import annotations

import math

from hokusai_mlflow_plugin.core.metrics import SUPPORTED, Metric, get_metric, normalize_metric_name


class GateError(ValueError):
    """A metric, baseline or value that cannot pass the gate; the message says why."""


def metric(name: str | None) -> Metric:
    if not name:
        raise GateError(
            "No metric is named: give the token a metric, or set HOKUSAI_METRIC when you log the model."
        )
    found = get_metric(name)
    if found is None:
        raise GateError(f"The metric '{name}' is not supported; use one of {SUPPORTED}.")
    return found


def check_baseline(m: Metric, baseline: float | None) -> float:
    if baseline is None:
        raise GateError(
            f"No baseline is set for {m.name}: give the token a baseline, or set HOKUSAI_BASELINE."
        )
    if not m.in_range(baseline):
        raise GateError(
            f"The baseline {baseline!r} for {m.name} is outside its valid range {m.range_text}."
        )
    return baseline


def check_value(m: Metric, value: float | None) -> float:
    if value is None:
        raise GateError(
            f"The metric '{m.name}' was not logged on the model's run or LoggedModel: log it "
            f"(mlflow.log_metric('{m.name}', value)) before registering the model."
        )
    if math.isnan(value) or math.isinf(value):
        raise GateError(f"The logged {m.name} is {value}, not a finite number.")
    if not m.in_range(value):
        raise GateError(f"The logged {m.name} {value:g} is outside its valid range {m.range_text}.")
    return value


def judge(metric_name: str | None, baseline: float | None, value: float | None) -> str:
    """Return the reason the model passes; raise ``GateError`` with the reason it does not."""
    m = metric(metric_name)
    bar = check_baseline(m, baseline)
    got = check_value(m, value)
    if not m.meets(got, bar):
        word = "below" if m.higher_is_better else "above"
        need = "at least" if m.higher_is_better else "at most"
        raise GateError(
            f"{m.name} {got:g} is {word} the baseline {bar:g} ({m.name} must be {need} {bar:g})."
        )
    return f"{m.name} {got:g} {m.sign} baseline {bar:g}."


def same_metric(a: str, b: str) -> bool:
    """Whether two metric names name the same metric (a tag or an option against the token's)."""
    return normalize_metric_name(a) == normalize_metric_name(b)


def same_baseline(a: float, b: float) -> bool:
    """Whether a given baseline is the token's own: the token's is authoritative, and a value that
    differs, however little, would move the bar."""
    return math.isclose(a, b, rel_tol=0, abs_tol=1e-12)
