"""The metrics a Hokusai token may be judged on: direction and valid range.

Standard library only: the run-context plugin imports it inside every ``import mlflow``.
"""

from __future__ import annotations

import math


class Metric:
    """A plain class, not a dataclass: this module loads inside every ``import mlflow``, and
    building a dataclass costs about 1.5 ms there (see BENCHMARKS.md)."""

    __slots__ = ("name", "higher_is_better", "low", "high")

    def __init__(self, name: str, higher_is_better: bool, low: float = 0.0, high: float = math.inf):
        self.name = name
        self.higher_is_better = higher_is_better
        self.low = low
        self.high = high

    def __repr__(self) -> str:
        return f"Metric({self.name!r}, higher_is_better={self.higher_is_better}, range={self.range_text})"

    def in_range(self, value: float) -> bool:
        return math.isfinite(value) and self.low <= value <= self.high

    def meets(self, value: float, baseline: float) -> bool:
        return value >= baseline if self.higher_is_better else value <= baseline

    @property
    def sign(self) -> str:
        """How "meets the baseline" reads: ``>=`` or ``<=``."""
        return ">=" if self.higher_is_better else "<="

    @property
    def range_text(self) -> str:
        high = "inf" if math.isinf(self.high) else f"{self.high:g}"
        low = "-inf" if math.isinf(self.low) else f"{self.low:g}"
        return f"[{low}, {high}]"


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("auroc", True, 0.0, 1.0),
        Metric("accuracy", True, 0.0, 1.0),
        Metric("f1", True, 0.0, 1.0),
        Metric("precision", True, 0.0, 1.0),
        Metric("recall", True, 0.0, 1.0),
        Metric("r2", True, -math.inf, 1.0),
        Metric("rmse", False),
        Metric("mse", False),
        Metric("mae", False),
        Metric("log_loss", False),
    )
}

SUPPORTED = ", ".join(sorted(METRICS))


def normalize_metric_name(name: str) -> str:
    return name.strip().lower()


def get_metric(name: str) -> Metric | None:
    return METRICS.get(normalize_metric_name(name))
