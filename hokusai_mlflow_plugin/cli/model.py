"""``hokusai model register | status | list``: the original Hokusai platform's model commands, a thin
click shell over ``submit`` (the register workflow) and the token views."""

from __future__ import annotations

import math

import click

from hokusai_mlflow_plugin.cli.common import NUMBER, domain_errors, emit, number_text, pass_ctx, record, table, token_line


def _supported_metric(_ctx, _param, value):
    from hokusai_mlflow_plugin.core.metrics import SUPPORTED, get_metric

    if value is not None and get_metric(value) is None:
        raise click.BadParameter(f"'{value}' is not a supported metric: use one of {SUPPORTED}.")
    return value


@click.group()
def model():
    """Register models for tokens and compare them."""


@model.command("register")
@click.option("--token-id", required=True, envvar="HOKUSAI_TOKEN_ID", help="The token the model is for, such as XRAY.")
@click.option("--model-path", required=True, type=click.Path(), help="A pickled or joblib model file, an MLflow model directory, or a directory of checkpoint files.")
@click.option("--metric", envvar="HOKUSAI_METRIC", callback=_supported_metric, help="The metric the model is judged on, such as auroc (default: the token's).")
@click.option("--baseline", type=NUMBER, envvar="HOKUSAI_BASELINE", help="The value the metric must reach, such as 0.82 (default: the token's).")
@click.option("--metric-value", type=NUMBER, help="The model's measured metric value.")
@click.option("--run-id", help="An MLflow run that logged the metric; the model is logged into it.")
@click.option("--eval-data", type=click.Path(exists=True, dir_okay=False), help="A CSV file to compute the metric on with scikit-learn.")
@click.option("--target", help="The label column of --eval-data.")
@click.option("--model-name", help="The registered model's name (default: hokusai-<token id>).")
@click.option("--wait", default=15.0, show_default=True, type=click.FloatRange(min=0), help="Seconds to wait for the webhook receiver's decision before deciding here.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@pass_ctx
@domain_errors
def submit_model(obj, token_id, model_path, metric, baseline, metric_value, run_id, eval_data, target, model_name, wait, as_json):
    """Log the model at --model-path to MLflow, register it for its token, and print the decision.

    The metric comes from exactly one of --metric-value, --run-id or --eval-data with --target.
    Exits 1 when the model is rejected."""
    from hokusai_mlflow_plugin.registration.service import REJECTED_STATUS
    from hokusai_mlflow_plugin.submit.workflow import Submission, submit, submit_over_api

    sources = [flag for flag, given in (("--metric-value", metric_value is not None), ("--run-id", run_id), ("--eval-data", eval_data)) if given]
    if len(sources) != 1:
        given = f" (got {' and '.join(sources)})" if sources else ""
        raise click.UsageError(f"Give exactly one metric source: --metric-value, --run-id, or --eval-data with --target{given}.")
    if bool(eval_data) != bool(target):
        raise click.UsageError("--eval-data and --target go together: the CSV file and its label column.")

    job = Submission(token_id, model_path, metric, baseline, metric_value, run_id, eval_data, target, model_name, wait)
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    if (api := obj.api()) is not None:
        decided = submit_over_api(api, obj.client(), obj.settings.tracking_uri, job, say)
        # the keys the database path prints: an Outcome's
        fields = ("status", "reason", "model_name", "model_version", "token_id", "decision", "metric_name",
                  "metric_value", "baseline_value", "run_id")
        decided = {**decided, "decision": decided["status"], "baseline_value": decided.get("baseline")}
        outcome = record({k: decided.get(k) for k in fields})
        data = {k: v for k, v in vars(outcome).items() if v is not None}
    else:
        outcome = submit(obj.service(), obj.settings.tracking_uri, job, say)
        data = outcome.to_dict()
    emit(data, as_json, _outcome_text(outcome))
    if outcome.status == REJECTED_STATUS:
        click.get_current_context().exit(1)


@model.command("status")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def model_status(obj, token_id, as_json):
    """Show token TOKEN_ID and the model versions registered for it, newest first."""
    from hokusai_mlflow_plugin.registration import tokens

    if (api := obj.api()) is not None:
        data = api.token(token_id)
        token, regs = record(data), [record(r) for r in data["registrations"]]
    else:
        with obj.sessions()() as session:
            token = tokens.get(session, token_id)
            regs = tokens.registrations(session, token.token_id)
            data = {**token.to_dict(), "registrations": [r.to_dict() for r in regs]}
    lines = [token_line(token)]
    lines += [f"  {r.model_name} v{r.model_version}  {r.outcome:<11}{_value_text(r)}  {r.reason}" for r in regs]
    if not regs:
        lines.append(f"  No model registered yet: run 'hokusai model register --token-id {token.token_id} --model-path PATH ...'.")
    emit(data, as_json, "\n".join(lines))


@model.command("list")
@click.option("--status", type=click.Choice(["registered", "rejected"]), help="Only registrations with this outcome.")
@click.option("--token", "token_id", help="Only this token's registrations.")
@click.option("--model", "model_name", help="Only the versions of this registered model.")
@click.option("--latest", is_flag=True, help="Only the newest version of each model among those the other options select (as MLflow's latest version per stage: with --status rejected, the newest rejected one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def model_list(obj, status, token_id, model_name, latest, as_json):
    """List registered and rejected model versions, best first within each metric."""
    from hokusai_mlflow_plugin.registration import tokens

    if (api := obj.api()) is not None:
        found = [record(r) for r in api.registrations(token=token_id, status=status, model=model_name)]
        found = tokens.newest_of_each_model(found) if latest else found
        data = [vars(r) for r in tokens.sort_best_first(found)]
    else:
        with obj.sessions()() as session:
            found = tokens.registrations(session, token_id, status, model_name=model_name, latest=latest)
            data = [r.to_dict() for r in tokens.sort_best_first(found)]
    headers = ("TOKEN", "MODEL", "VERSION", "METRIC", "VALUE", "BASELINE", "OUTCOME", "REASON")
    rows = [
        (r["token_id"] or "-", r["model_name"], r["model_version"], r["metric_name"] or "-", number_text(r["metric_value"]),
         number_text(r["baseline_value"]), r["outcome"], r["reason"])
        for r in data
    ]
    emit(data, as_json, table(headers, rows) if rows else "No registrations.")


def _value_text(r) -> str:
    if r.metric_value is None or not math.isfinite(r.metric_value):
        return f"{r.metric_name or 'metric'} -"
    bar = f" (baseline {r.baseline_value:g})" if r.baseline_value is not None else ""
    return f"{r.metric_name} {r.metric_value:g}{bar}"


def _outcome_text(o) -> str:
    return (
        f"{o.status.capitalize()}: token {o.token_id}, model {o.model_name} version {o.model_version}, "
        f"{o.metric_name or 'metric'} {number_text(o.metric_value)} vs baseline {number_text(o.baseline_value)}.\n{o.reason}"
    )
