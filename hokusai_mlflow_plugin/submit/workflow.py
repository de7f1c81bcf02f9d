"""``hokusai model register`` from start to end: load the model, fix the token's bar, measure the
metric, log and register the model in MLflow, and wait for the receiver's decision (or decide here
when no receiver answers in time). Each step is its own module; this one only orders them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import SimpleNamespace
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
    loaded = load.load_model(job.model_path)  # a bad path is the first thing to hear of
    with service.sessions() as session:
        token = tokens.get(session, job.token_id)
    plan = _prepare(job, loaded, token, service.client, tracking_uri, say)
    with service.sessions.begin() as session:
        bar.set_bar(session, plan.token_id, job.metric, job.baseline)
    logged = _upload(plan, tracking_uri, say, register=True)
    say(f"Registered {plan.model_name} version {logged.version} (run {logged.run_id}); waiting for the decision ...")
    return _decision(service, plan.model_name, logged.version, job.wait)


def submit_over_api(api, client, tracking_uri: str, job: Submission, say: Callable[[str], None]) -> dict:
    """The same, for a user who holds an API key and no database: the model is logged to MLflow at
    ``tracking_uri`` (the gateway, or a server of their own), then ``POST /models/register``
    creates the version and returns the decision."""
    loaded = load.load_model(job.model_path)
    token = SimpleNamespace(**api.token(job.token_id))
    plan = _prepare(job, loaded, token, client, tracking_uri, say)
    logged = _upload(plan, tracking_uri, say, register=False)
    say(f"Logged model {logged.model_id} (run {logged.run_id}); registering it through the Hokusai API ...")
    return api.register(plan.token_id, f"models:/{logged.model_id}", plan.model_name, plan.metric_name, plan.baseline)


@dataclass(frozen=True)
class _Plan:
    token_id: str
    model_name: str
    metric_name: str
    baseline: float
    loaded: load.LoadedModel
    metric_value: float | None
    run_id: str | None


def _prepare(job: Submission, loaded: load.LoadedModel, token, client, tracking_uri: str, say) -> _Plan:
    """Everything else that can fail before anything is written: the bar, MLflow, the metric."""
    metric_name, baseline = bar.resolve_bar(token, job.metric, job.baseline)
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
    model_name = job.model_name or f"hokusai-{token.token_id.lower()}"
    return _Plan(token.token_id, model_name, metric_name, baseline, loaded, to_log, job.run_id)


def _upload(plan: _Plan, tracking_uri: str, say, register: bool) -> upload.Logged:
    say(f"Uploading {plan.loaded.describe()} to MLflow at {tracking_uri} ...")
    return upload.log_and_register(
        plan.loaded, tracking_uri=tracking_uri, model_name=plan.model_name if register else None,
        token_id=plan.token_id, metric_name=plan.metric_name, baseline=plan.baseline, metric_value=plan.metric_value,
        run_id=plan.run_id,
    )


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
