"""Decide one model version against its token: pure, given what MLflow and the token store hold.

Each rejection carries a sentence the user can act on; it becomes ``hokusai_reason`` in the UI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hokusai_mlflow_plugin.core import gate, tags
from hokusai_mlflow_plugin.core.metrics import normalize_metric_name
from hokusai_mlflow_plugin.db.models import ARCHIVED, DRAFT, OUTCOME_REGISTERED, OUTCOME_REJECTED, Token
from hokusai_mlflow_plugin.mlflow_io.facts import VersionFacts


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
    raw = facts.tag(tags.TOKEN_ID)
    if raw is None:
        return None, (
            f"Model '{facts.model_name}' version {facts.version} has no {tags.TOKEN_ID} tag on the "
            "version, its LoggedModel or its run: set HOKUSAI_TOKEN_ID when you log the model, or "
            f"add the {tags.TOKEN_ID} tag to this version in the MLflow UI."
        )
    token_id = tags.normalize_token_id(raw)
    if token_id is None:
        return None, f"The {tags.TOKEN_ID} tag {raw!r} is not a token id: expected {tags.TOKEN_ID_FORM}."
    return token_id, None


class _Refused(Exception):
    """Why a version cannot be judged against its token (the rejection's reason)."""


def decide(facts: VersionFacts, token: Token | None, not_theirs: str | None = None) -> Decision:
    """``not_theirs``: why the version's makers may not register for the token (provenance,
    judged by ``auth.ownership``), a rejection once the token is known to take a model."""
    token_id, why_not = token_id_of(facts)
    if token_id is None:
        return Decision(OUTCOME_REJECTED, why_not, run_id=facts.run_id)

    def reject(reason: str, **extra) -> Decision:
        return Decision(OUTCOME_REJECTED, reason, token_id=token_id, run_id=facts.run_id, **extra)

    try:
        _check_token(token_id, token)
        if not_theirs:
            raise _Refused(not_theirs)
        metric_name, baseline = _bar(facts, token)
    except _Refused as e:
        return reject(str(e))
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


def _check_token(token_id: str, token: Token | None) -> None:
    """``_Refused`` unless the token exists and can take a model."""
    if token is None:
        raise _Refused(
            f"Unknown token '{token_id}': create it on the Hokusai site (or with "
            f"'hokusai token create {token_id}'), then register the model again."
        )
    if token.status == ARCHIVED:
        raise _Refused(
            f"Token '{token_id}' is archived: it takes no model, and an archived token is never un-archived. "
            "Make a new token for this model."
        )
    if token.status != DRAFT:
        if token.model_name:
            raise _Refused(
                f"Token '{token_id}' is already registered to model '{token.model_name}' version "
                f"{token.model_version}; a token takes one model. Use a new token for this model."
            )
        raise _Refused(f"Token '{token_id}' is in status '{token.status}', not 'draft': it cannot take a model.")


def _bar(facts: VersionFacts, token: Token) -> tuple[str | None, float | None]:
    """The metric and baseline to judge on: the token's own where it has them (authoritative: a
    tag that differs is a refusal), else the tags'."""
    token_id = token.token_id
    tag_metric = facts.tag(tags.METRIC)
    metric_name = token.metric_name or tag_metric
    if token.metric_name and tag_metric and not gate.same_metric(tag_metric, token.metric_name):
        raise _Refused(
            f"The {tags.METRIC} tag '{tag_metric}' differs from token '{token_id}''s metric "
            f"'{token.metric_name}': the token's metric is authoritative; log {token.metric_name}."
        )
    tag_baseline = facts.tag(tags.BASELINE)
    baseline = token.baseline_value
    if tag_baseline is not None:
        parsed = tags.parse_baseline(tag_baseline)
        if baseline is not None and (parsed is None or not gate.same_baseline(parsed, baseline)):
            raise _Refused(
                f"The {tags.BASELINE} tag '{tag_baseline}' differs from token '{token_id}''s baseline "
                f"{baseline:g}: the token's baseline is authoritative and a tag may not change it."
            )
        if baseline is None:
            if parsed is None:
                raise _Refused(f"The {tags.BASELINE} tag '{tag_baseline}' is not {tags.BASELINE_FORM}.")
            baseline = parsed
    return metric_name, baseline


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
