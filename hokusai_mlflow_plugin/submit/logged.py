"""Register a model that is logged already (the platform's ``POST /models/register``): check the
token and its bar, create the MLflow model version with the token's tags, and decide it with the
same ``register()`` the webhook uses, so that the webhook's delivery of the same version finds it
decided (a duplicate) and nothing is decided twice."""

from __future__ import annotations

import dataclasses

from hokusai_mlflow_plugin.core import tags
from hokusai_mlflow_plugin.core.errors import HokusaiError
from hokusai_mlflow_plugin.mlflow_io import versions
from hokusai_mlflow_plugin.registration import tokens
from hokusai_mlflow_plugin.registration.service import DUPLICATE, Outcome, RegistrationService
from hokusai_mlflow_plugin.submit import bar


def register_logged(
    service: RegistrationService,
    token_id: str,
    model_uri: str,
    model_name: str | None = None,
    metric: str | None = None,
    baseline: float | None = None,
) -> Outcome:
    """The decision on a new version of ``model_name`` (default ``hokusai-<token>``) made from the
    logged model at ``model_uri``. ``TokenError`` (404) for an unknown token; ``ModelError``
    (409) for a token that is not draft; ``BadOption`` (409) for a metric or baseline that differs
    from the token's own or that neither gives, (422) for a baseline out of its metric's range; ``BadModelUri`` (422) for a URI
    not of a logged model's form, (404) for one that names no run or LoggedModel in MLflow."""
    versions.parse_model_uri(model_uri)  # a malformed URI is refused before anything is written
    with service.sessions() as session:
        token = tokens.get(session, token_id)
        token_id = token.token_id
        metric_name, baseline_value = bar.resolve_bar(token, metric, baseline)
    version_tags = {tags.TOKEN_ID: token_id, tags.METRIC: metric_name, tags.BASELINE: repr(float(baseline_value))}
    name = model_name or f"hokusai-{token_id.lower()}"
    created = versions.create_version(service.client, name, model_uri, version_tags)
    # The bar is stored on the token only once MLflow holds the version: a URI that names nothing
    # (404) or an MLflow that is down (503) leaves the token as it was. If another request stored a
    # different bar meanwhile, the version's tags differ from it and the decision says so.
    try:
        with service.sessions.begin() as session:
            bar.set_bar(session, token_id, metric_name, baseline_value)
    except HokusaiError:
        pass
    outcome = service.register(created.name, str(created.version))
    if outcome.status == DUPLICATE:  # the webhook's delivery decided it first: its decision stands
        outcome = dataclasses.replace(outcome, status=outcome.decision)
    return outcome
