"""``hokusai model register | status | list``: the original Hokusai platform's model commands, a thin
click shell over ``model_register`` and the registration service.

Import it through ``hokusai_mlflow_plugin.cli`` (which adds ``model`` to the ``hokusai`` group)."""

from __future__ import annotations

import dataclasses
import math

import click

from hokusai_mlflow_plugin.cli import NUMBER, _token_line, domain_errors, emit, pass_ctx, translating


def _model_error(e: Exception, _ctx) -> click.ClickException | None:
    """``ModelError`` -> ClickException (exit 1); ``BadOption`` -> BadParameter (exit 2)."""
    from hokusai_mlflow_plugin.model_register import BadOption, ModelError

    if isinstance(e, BadOption):
        return click.BadParameter(str(e), param_hint=f"'{e.option}'")
    if isinstance(e, ModelError):
        return click.ClickException(str(e))
    return None


model_errors = translating(_model_error)


def _supported_metric(_ctx, _param, value):
    from hokusai_mlflow_plugin.metrics import SUPPORTED, get_metric

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
@model_errors
def model_register(obj, token_id, model_path, metric, baseline, metric_value, run_id, eval_data, target, model_name, wait, as_json):
    """Log the model at --model-path to MLflow, register it for its token, and print the decision.

    The metric comes from exactly one of --metric-value, --run-id or --eval-data with --target.
    Exits 1 when the model is rejected."""
    from hokusai_mlflow_plugin import model_register as R
    from hokusai_mlflow_plugin import tokens
    from hokusai_mlflow_plugin.service import DUPLICATE, REGISTERED_STATUS, REJECTED_STATUS, Outcome

    sources = [flag for flag, given in (("--metric-value", metric_value is not None), ("--run-id", run_id), ("--eval-data", eval_data)) if given]
    if len(sources) != 1:
        given = f" (got {' and '.join(sources)})" if sources else ""
        raise click.UsageError(f"Give exactly one metric source: --metric-value, --run-id, or --eval-data with --target{given}.")
    if bool(eval_data) != bool(target):
        raise click.UsageError("--eval-data and --target go together: the CSV file and its label column.")

    loaded = R.load_model(model_path)
    with obj.sessions()() as session:
        token = tokens.get(session, token_id)
        metric_name, bar = R.resolve_bar(token, metric, baseline)
        token_id = token.token_id
    model_name = model_name or f"hokusai-{token_id.lower()}"

    estimator = None
    if eval_data:
        estimator = loaded.estimator
        if estimator is None:
            raise click.ClickException(
                f"--eval-data needs a scikit-learn model and {loaded.describe()} is not one: pass --metric-value or --run-id."
            )
    client = obj.client()
    url = obj.settings.tracking_uri
    R.check_reachable(client, url)
    to_log = metric_value
    if run_id:
        value = R.run_metric(client, run_id, metric_name)
        click.echo(f"Run {run_id} logged {metric_name} {value:g}.", err=True)
    elif eval_data:
        X, y = R.read_eval_data(eval_data, target)
        to_log = R.compute_metric(estimator, metric_name, X, y)
        click.echo(f"Computed {metric_name} {to_log:g} on {len(y)} rows of {eval_data}.", err=True)

    with obj.sessions().begin() as session:
        R.set_bar(session, token_id, metric, baseline)
    click.echo(f"Uploading {loaded.describe()} to MLflow at {url} ...", err=True)
    logged = R.log_and_register(
        loaded, tracking_uri=url, model_name=model_name, token_id=token_id, metric_name=metric_name,
        baseline=bar, metric_value=to_log, run_id=run_id,
    )
    click.echo(f"Registered {model_name} version {logged.version} (run {logged.run_id}); waiting for the decision ...", err=True)

    reg = R.wait_for_decision(obj.sessions(), model_name, logged.version, wait)
    outcome = Outcome.of(reg) if reg is not None else obj.service().register(model_name, logged.version)
    if outcome.status == DUPLICATE:  # the receiver decided while we asked: its decision stands
        outcome = dataclasses.replace(outcome, status=outcome.decision)
    if outcome.status not in (REGISTERED_STATUS, REJECTED_STATUS):
        raise click.ClickException(f"{model_name} version {logged.version} was not decided: {outcome.reason}")
    emit(outcome.to_dict(), as_json, _outcome_text(outcome))
    if outcome.status == REJECTED_STATUS:
        click.get_current_context().exit(1)


@model.command("status")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def model_status(obj, token_id, as_json):
    """Show token TOKEN_ID and the model versions registered for it, newest first."""
    from hokusai_mlflow_plugin import tokens

    with obj.sessions()() as session:
        token = tokens.get(session, token_id)
        regs = tokens.registrations(session, token.token_id)
        data = {**token.to_dict(), "registrations": [r.to_dict() for r in regs]}
        lines = [_token_line(token)]
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
    from hokusai_mlflow_plugin import tokens
    from hokusai_mlflow_plugin.model_register import sort_best_first

    with obj.sessions()() as session:
        regs = tokens.registrations(session, token_id, status)
        if model_name:
            regs = [r for r in regs if r.model_name == model_name]
        if latest:
            newest = {}
            for r in regs:
                if r.model_name not in newest or _version_key(r) > _version_key(newest[r.model_name]):
                    newest[r.model_name] = r
            regs = list(newest.values())
        data = [r.to_dict() for r in sort_best_first(regs)]
    headers = ("TOKEN", "MODEL", "VERSION", "METRIC", "VALUE", "BASELINE", "OUTCOME", "REASON")
    rows = [
        (r["token_id"] or "-", r["model_name"], r["model_version"], r["metric_name"] or "-", _num(r["metric_value"]),
         _num(r["baseline_value"]), r["outcome"], r["reason"])
        for r in data
    ]
    emit(data, as_json, _table(headers, rows) if rows else "No registrations.")


# -- text ----------------------------------------------------------------------------------------


def _version_key(r) -> tuple:
    """MLflow's versions are numbers in strings: "10" is newer than "9"."""
    return (0, int(r.model_version)) if r.model_version.isdecimal() else (-1, r.model_version)


def _num(value) -> str:
    return "-" if value is None else f"{value:g}"


def _value_text(r) -> str:
    if r.metric_value is None or not math.isfinite(r.metric_value):
        return f"{r.metric_name or 'metric'} -"
    bar = f" (baseline {r.baseline_value:g})" if r.baseline_value is not None else ""
    return f"{r.metric_name} {r.metric_value:g}{bar}"


def _outcome_text(o) -> str:
    return (
        f"{o.status.capitalize()}: token {o.token_id}, model {o.model_name} version {o.model_version}, "
        f"{o.metric_name or 'metric'} {_num(o.metric_value)} vs baseline {_num(o.baseline_value)}.\n{o.reason}"
    )


def _table(headers, rows) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    widths[-1] = 0  # the reason runs to the end of the line
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in (headers, *rows))
