"""``hokusai model register`` from start to end: load the model, fix the token's bar, measure the
metric, log and register the model in MLflow, and wait for the receiver's decision (or decide here
when no receiver answers in time). Each step is its own module; this one only orders them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from hokusai_mlflow_plugin.registration import records, tokens
from hokusai_mlflow_plugin.registration.service import DUPLICATE, REGISTERED_STATUS, REJECTED_STATUS, Outcome, RegistrationService
from hokusai_mlflow_plugin.submit import bar, load, measure, upload
from hokusai_mlflow_plugin.submit.errors import ModelError


@dataclass(frozen=True)
class Submission:
    """What to register: a model file or directory for a token, and where its metric comes from
    (exactly one of ``metric_value``, ``run_id`` or ``eval_data`` with ``target``)."""

    token_id: str
    model_path: str
    metric: str | None = None
    baseline: float | None = None
    metric_value: float | None = None
    run_id: str | None = None
    eval_data: str | None = None
    target: str | None = None
    model_name: str | None = None
    wait: float = 15.0


def submit(service: RegistrationService, tracking_uri: str, job: Submission, say: Callable[[str], None]) -> Outcome:
    """Register ``job``'s model and return its decision (``registered`` or ``rejected``). ``say``
    reports progress to the person waiting."""
    sessions, client = service.sessions, service.client
    loaded = load.load_model(job.model_path)
    with sessions() as session:
        token = tokens.get(session, job.token_id)
        metric_name, baseline = bar.resolve_bar(token, job.metric, job.baseline)
        token_id = token.token_id
    model_name = job.model_name or f"hokusai-{token_id.lower()}"
    estimator = _estimator(loaded) if job.eval_data else None

    upload.check_reachable(client, tracking_uri)
    to_log = job.metric_value
    if job.run_id:
        value = measure.run_metric(client, job.run_id, metric_name)
        say(f"Run {job.run_id} logged {metric_name} {value:g}.")
    elif job.eval_data:
        X, y = measure.read_eval_data(job.eval_data, job.target)
        to_log = measure.compute_metric(estimator, metric_name, X, y)
        say(f"Computed {metric_name} {to_log:g} on {len(y)} rows of {job.eval_data}.")

    with sessions.begin() as session:
        bar.set_bar(session, token_id, job.metric, job.baseline)
    say(f"Uploading {loaded.describe()} to MLflow at {tracking_uri} ...")
    logged = upload.log_and_register(
        loaded, tracking_uri=tracking_uri, model_name=model_name, token_id=token_id, metric_name=metric_name,
        baseline=baseline, metric_value=to_log, run_id=job.run_id,
    )
    say(f"Registered {model_name} version {logged.version} (run {logged.run_id}); waiting for the decision ...")
    return _decision(service, model_name, logged.version, job.wait)


def _estimator(loaded: load.LoadedModel):
    estimator = loaded.estimator
    if estimator is None:
        raise ModelError(
            f"--eval-data needs a scikit-learn model and {loaded.describe()} is not one: pass --metric-value or --run-id."
        )
    return estimator


def _decision(service: RegistrationService, model_name: str, version: str, wait: float) -> Outcome:
    """The receiver's decision when it comes within ``wait`` seconds, else this process's own (the
    same ``register()``, so either way the version is decided once)."""
    reg = records.wait_for_decision(service.sessions, model_name, version, wait)
    outcome = Outcome.of(reg) if reg is not None else service.register(model_name, version)
    if outcome.status == DUPLICATE:  # the receiver decided while we asked: its decision stands
        outcome = dataclasses.replace(outcome, status=outcome.decision)
    if outcome.status not in (REGISTERED_STATUS, REJECTED_STATUS):
        raise ModelError(f"{model_name} version {version} was not decided: {outcome.reason}")
    return outcome
