"""``hokusai gateway serve``: the authenticating gateway in front of the internal MLflow server."""

from __future__ import annotations

import click

from hokusai_mlflow_plugin.cli.common import domain_errors, pass_ctx


@click.group()
def gateway():
    """The MLflow gateway: plain MLflow clients with a Hokusai API key."""


@gateway.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="gunicorn worker processes, one event loop each (one serves thousands of requests in flight).")
@click.option("--internal-uri", envvar="HOKUSAI_MLFLOW_INTERNAL_URI",
              help="The MLflow server to stand in front of (default: MLFLOW_TRACKING_URI).")
@pass_ctx
@domain_errors
def gateway_serve(obj, host, port, workers, internal_uri):
    """Serve /mlflow/... under gunicorn, in the foreground: every request needs an API key
    (MLFLOW_TRACKING_TOKEN on the client's side) with the scope it asks for, and goes on to MLflow
    without it."""
    import os
    import sys
    from pathlib import Path

    from hokusai_mlflow_plugin.config import rate_limit_problem
    from hokusai_mlflow_plugin.stack.local import gateway_command, metrics_dir

    settings = obj.settings
    internal_uri = internal_uri or settings.gateway_upstream
    if not internal_uri:
        raise click.ClickException("Give the MLflow server to stand in front of: --internal-uri, HOKUSAI_MLFLOW_INTERNAL_URI "
                                   "or MLFLOW_TRACKING_URI.")
    problem = rate_limit_problem(settings.gateway_rate_limit)
    if problem:  # one sentence here, not a worker's traceback
        raise click.ClickException(problem)
    env = {**os.environ, "HOKUSAI_DATABASE_URL": settings.database_url, "HOKUSAI_MLFLOW_INTERNAL_URI": internal_uri}
    if obj.config_file:
        env["HOKUSAI_CONFIG"] = str(obj.config_file)
    # /metrics adds up every worker's counters (prometheus-client's multiprocess mode)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir(Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.home / "prometheus" / f"gateway-{port}")))
    click.echo(f"MLflow gateway at http://{host}:{port}/mlflow -> {internal_uri} (gunicorn, {workers} workers); clients set "
               f"MLFLOW_TRACKING_URI=http://{host}:{port}/mlflow and MLFLOW_TRACKING_TOKEN=hk_...", err=True)
    os.execve(sys.executable, gateway_command(host, port, workers), env)
