"""The metric and baseline a submitted model is judged on: the token's own where it has them."""

from __future__ import annotations

from sqlalchemy.orm import Session

from hokusai_mlflow_plugin.core import gate
from hokusai_mlflow_plugin.core.errors import CONFLICT
from hokusai_mlflow_plugin.db.models import DRAFT, Token
from hokusai_mlflow_plugin.registration import tokens
from hokusai_mlflow_plugin.submit.errors import BadOption, ModelError


def resolve_bar(token: Token, metric: str | None, baseline: float | None) -> tuple[str, float]:
    """The metric and baseline to register against: the token's own where it has them (they are
    authoritative), else the ones given. ``BadOption`` of kind ``CONFLICT`` on a difference or a
    gap (the token's state decides what the request must hold), ``INVALID`` for a baseline out of
    its metric's range."""
    if token.status != DRAFT:
        where = f" (model {token.model_name} version {token.model_version})" if token.model_name else ""
        raise ModelError(
            f"Token '{token.token_id}' is {token.status} already{where}; a token takes one model: use a new token.",
            CONFLICT,
        )
    name = gate.metric(metric).name if metric else None
    if token.metric_name and name and not gate.same_metric(name, token.metric_name):
        raise BadOption(
            "--metric",
            f"Token '{token.token_id}' is judged on {token.metric_name}, not {name}; the token's metric is "
            f"authoritative: pass --metric {token.metric_name}.",
            CONFLICT,
        )
    if token.baseline_value is not None and baseline is not None and not gate.same_baseline(baseline, token.baseline_value):
        raise BadOption(
            "--baseline",
            f"Token '{token.token_id}' has the baseline {token.baseline_value:g}, not {baseline:g}; the token's "
            f"baseline is authoritative: pass --baseline {token.baseline_value:g}.",
            CONFLICT,
        )
    name, bar = token.metric_name or name, token.baseline_value if token.baseline_value is not None else baseline
    # the request is whole; the token's state (no bar of its own yet) is what needs more: CONFLICT
    if name is None:
        raise BadOption("--metric", f"Token '{token.token_id}' has no metric yet: pass --metric (one of {gate.SUPPORTED}).",
                        CONFLICT)
    if bar is None:
        raise BadOption("--baseline", f"Token '{token.token_id}' has no baseline yet: pass --baseline, such as 0.82.",
                        CONFLICT)
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
