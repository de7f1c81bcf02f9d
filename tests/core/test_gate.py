"""The metric gate and the metric table: direction, range, and the sentences a user reads."""

from __future__ import annotations

import math

import pytest

from hokusai_mlflow_plugin.core import gate
from hokusai_mlflow_plugin.core.metrics import METRICS, SUPPORTED, get_metric

HIGHER = ["auroc", "accuracy", "f1", "precision", "recall", "r2"]
LOWER = ["rmse", "mse", "mae", "log_loss"]


def test_the_supported_metrics_are_exactly_the_documented_ones():
    assert set(METRICS) == set(HIGHER) | set(LOWER)
    for name in HIGHER + LOWER:
        assert name in SUPPORTED


@pytest.mark.parametrize("name", HIGHER)
def test_higher_is_better_metrics_pass_above_and_fail_below(name):
    assert get_metric(name).higher_is_better
    assert gate.judge(name, 0.5, 0.6) == f"{name} 0.6 >= baseline 0.5."
    with pytest.raises(gate.GateError) as e:
        gate.judge(name, 0.5, 0.4)
    assert str(e.value) == f"{name} 0.4 is below the baseline 0.5 ({name} must be at least 0.5)."


@pytest.mark.parametrize("name", LOWER)
def test_lower_is_better_metrics_pass_below_and_fail_above(name):
    assert not get_metric(name).higher_is_better
    assert gate.judge(name, 0.5, 0.4) == f"{name} 0.4 <= baseline 0.5."
    with pytest.raises(gate.GateError) as e:
        gate.judge(name, 0.5, 0.6)
    assert str(e.value) == f"{name} 0.6 is above the baseline 0.5 ({name} must be at most 0.5)."


@pytest.mark.parametrize("name", HIGHER + LOWER)
def test_a_value_equal_to_the_baseline_meets_it(name):
    assert "baseline 0.82" in gate.judge(name, 0.82, 0.82)


def test_metric_names_are_case_and_space_insensitive():
    assert gate.metric("  AUROC ").name == "auroc"
    assert gate.judge("RMSE", 1.0, 0.5) == "rmse 0.5 <= baseline 1."


def test_an_unsupported_metric_lists_the_supported_ones():
    with pytest.raises(gate.GateError) as e:
        gate.judge("bleu", 0.5, 0.6)
    message = str(e.value)
    assert "'bleu' is not supported" in message
    for name in HIGHER + LOWER:
        assert name in message


@pytest.mark.parametrize("name", [None, ""])
def test_no_metric_name_says_how_to_give_one(name):
    with pytest.raises(gate.GateError, match="HOKUSAI_METRIC"):
        gate.judge(name, 0.5, 0.6)


def test_a_missing_value_tells_the_user_to_log_the_metric():
    with pytest.raises(gate.GateError) as e:
        gate.judge("auroc", 0.8, None)
    assert "'auroc' was not logged" in str(e.value)
    assert "mlflow.log_metric('auroc', value)" in str(e.value)


def test_a_missing_baseline_says_how_to_set_one():
    with pytest.raises(gate.GateError, match="No baseline is set for auroc.*HOKUSAI_BASELINE"):
        gate.judge("auroc", None, 0.9)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_rejected(value):
    with pytest.raises(gate.GateError) as e:
        gate.judge("auroc", 0.5, value)
    assert str(e.value) == f"The logged auroc is {value}, not a finite number."


@pytest.mark.parametrize("baseline", [math.nan, math.inf, -math.inf])
def test_non_finite_baselines_are_rejected(baseline):
    with pytest.raises(gate.GateError, match="The baseline .* for auroc is outside its valid range"):
        gate.judge("auroc", baseline, 0.9)


@pytest.mark.parametrize(
    "name, value, range_text",
    [
        ("auroc", 1.2, "[0, 1]"),
        ("accuracy", -0.1, "[0, 1]"),
        ("f1", 1.5, "[0, 1]"),
        ("precision", -1.0, "[0, 1]"),
        ("recall", 2.0, "[0, 1]"),
        ("r2", 1.5, "[-inf, 1]"),
        ("rmse", -0.5, "[0, inf]"),
        ("mse", -1.0, "[0, inf]"),
        ("mae", -2.0, "[0, inf]"),
        ("log_loss", -0.1, "[0, inf]"),
    ],
)
def test_out_of_range_values_and_baselines_are_rejected_with_the_range(name, value, range_text):
    with pytest.raises(gate.GateError) as e:
        gate.judge(name, 0.5, value)
    assert str(e.value) == f"The logged {name} {value:g} is outside its valid range {range_text}."
    with pytest.raises(gate.GateError) as e:
        gate.judge(name, value, 0.5)
    assert str(e.value) == f"The baseline {value!r} for {name} is outside its valid range {range_text}."


def test_range_edges_are_valid():
    assert gate.judge("auroc", 1.0, 1.0)
    assert gate.judge("auroc", 0.0, 0.0)
    assert gate.judge("rmse", 0.0, 0.0)
    assert gate.judge("r2", -5.0, -3.0) == "r2 -3 >= baseline -5."
    assert gate.judge("mse", 1e9, 12345.0) == "mse 12345 <= baseline 1e+09."


def test_gate_error_is_a_value_error():
    assert issubclass(gate.GateError, ValueError)
