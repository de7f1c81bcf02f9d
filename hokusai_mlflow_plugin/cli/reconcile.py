"""``hokusai reconcile``: decide the versions that no webhook decided."""

from __future__ import annotations

import click

from hokusai_mlflow_plugin.cli.common import domain_errors, emit, pass_ctx, stop_on_signals


@click.command()
@click.option("--interval", type=float, help="Sweep every S seconds until interrupted (default: once).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def reconcile(obj, interval, as_json):
    """Decide the versions of draft tokens that no webhook decided."""
    from hokusai_mlflow_plugin.mlflow_io.client import fail_fast_by_default, failing_fast
    from hokusai_mlflow_plugin.registration import reconcile as sweep

    service = obj.service()
    if interval:
        # A worker, like the receiver: a sweep that cannot reach MLflow gives up in seconds and is
        # tried again at the next interval, instead of waiting out MLflow's minutes of retries.
        fail_fast_by_default()
        click.echo(f"Reconciling every {interval:g}s; Ctrl-C to stop.")
        sweep.run_forever(service, interval, stop_on_signals())
        return
    with failing_fast():
        outcomes = sweep.reconcile_once(service)
    data = [o.to_dict() for o in outcomes]
    lines = "\n".join(f"{o.model_name} v{o.model_version}: {o.status} - {o.reason}" for o in outcomes)
    emit(data, as_json, lines or "Nothing to reconcile.")
