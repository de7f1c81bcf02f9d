"""Decide one model version against its token: pure, given what MLflow and the token store hold.

Each rejection carries a sentence the user can act on; it becomes ``hokusai_reason`` in the UI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hokusai_mlflow_plugin import gate
from hokusai_mlflow_plugin import tags as T
from hokusai_mlflow_plugin.db.models import DRAFT, OUTCOME_REGISTERED, OUTCOME_REJECTED, Token
from hokusai_mlflow_plugin.mlflow_facts import VersionFacts
from hokusai_mlflow_plugin.metrics import normalize_metric_name


@dataclass(frozen=True)
class Decision:
    outcome: str  # registered | rejected
    reason: str
    token_id: str | None = None
    metric_name: str | None = None
    metric_value: float | None = None
    baseline_value: float | None = None
    run_id: str | None = None


def token_id_of(facts: VersionFacts) -> tuple[str | None, str | None]:
    """(normalised token id, None) or (None, the reason there is none)."""
    raw = facts.tag(T.TOKEN_ID)
    if raw is None:
        return None, (
            f"Model '{facts.model_name}' version {facts.version} has no {T.TOKEN_ID} tag on the "
            "version, its LoggedModel or its run: set HOKUSAI_TOKEN_ID when you log the model, or "
            f"add the {T.TOKEN_ID} tag to this version in the MLflow UI."
        )
    token_id = T.normalize_token_id(raw)
    if token_id is None:
        return None, f"The {T.TOKEN_ID} tag {raw!r} is not a token id: expected {T.TOKEN_ID_FORM}."
    return token_id, None


def decide(facts: VersionFacts, token: Token | None) -> Decision:
    token_id, why_not = token_id_of(facts)
    if token_id is None:
        return Decision(OUTCOME_REJECTED, why_not, run_id=facts.run_id)

    def reject(reason: str, **extra) -> Decision:
        return Decision(OUTCOME_REJECTED, reason, token_id=token_id, run_id=facts.run_id, **extra)

    if token is None:
        return reject(
            f"Unknown token '{token_id}': create it on the Hokusai site (or with "
            f"'hokusai token create {token_id}'), then register the model again."
        )
    if token.status != DRAFT:
        if token.model_name:
            return reject(
                f"Token '{token_id}' is already registered to model '{token.model_name}' version "
                f"{token.model_version}; a token takes one model. Use a new token for this model."
            )
        return reject(f"Token '{token_id}' is in status '{token.status}', not 'draft': it cannot take a model.")

    tag_metric = facts.tag(T.METRIC)
    metric_name = token.metric_name or tag_metric
    if token.metric_name and tag_metric and normalize_metric_name(tag_metric) != normalize_metric_name(token.metric_name):
        return reject(
            f"The {T.METRIC} tag '{tag_metric}' differs from token '{token_id}''s metric "
            f"'{token.metric_name}': the token's metric is authoritative; log {token.metric_name}."
        )

    tag_baseline = facts.tag(T.BASELINE)
    baseline = token.baseline_value
    if tag_baseline is not None:
        parsed = T.parse_baseline(tag_baseline)
        if baseline is not None and (parsed is None or not math.isclose(parsed, baseline, rel_tol=0, abs_tol=1e-12)):
            return reject(
                f"The {T.BASELINE} tag '{tag_baseline}' differs from token '{token_id}''s baseline "
                f"{baseline:g}: the token's baseline is authoritative and a tag may not change it."
            )
        if baseline is None:
            if parsed is None:
                return reject(f"The {T.BASELINE} tag '{tag_baseline}' is not {T.BASELINE_FORM}.")
            baseline = parsed

    try:
        m = gate.metric(metric_name)
        value = facts.metric(m.name)
        reason = gate.judge(m.name, baseline, value)
    except gate.GateError as e:
        name = normalize_metric_name(metric_name) if metric_name else None
        value = facts.metric(name) if name else None
        return reject(str(e), metric_name=name, metric_value=_finite_or_none(value), baseline_value=baseline)
    return Decision(
        OUTCOME_REGISTERED,
        reason,
        token_id=token_id,
        metric_name=m.name,
        metric_value=value,
        baseline_value=baseline,
        run_id=facts.run_id,
    )


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
