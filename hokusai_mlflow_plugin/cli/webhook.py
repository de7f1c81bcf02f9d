"""``hokusai webhook ...``: the MLflow webhook receiver, and the webhook that calls it."""

from __future__ import annotations

import click

from hokusai_mlflow_plugin.cli.common import domain_errors, pass_ctx


@click.group()
def webhook():
    """The MLflow webhook receiver."""


@webhook.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8787, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="gunicorn worker processes.")
@click.option("--threads", type=click.IntRange(1, 256),
              help="Threads per worker: decisions in flight at once, each mostly waiting on MLflow (default: 8).")
@pass_ctx
@domain_errors
def webhook_serve(obj, host, port, workers, threads):
    """Run the receiver (and every HTTP surface of webhook_app) under gunicorn, in the foreground;
    the settings of --config, the environment and the options above reach its workers."""
    import os
    import sys
    from pathlib import Path

    from hokusai_mlflow_plugin.config import receiver_problem
    from hokusai_mlflow_plugin.events import sinks
    from hokusai_mlflow_plugin.stack.local import RECEIVER_THREADS, metrics_dir, receiver_command

    threads = threads or RECEIVER_THREADS
    settings = obj.settings
    problem = receiver_problem(settings.webhook_secrets, settings.tracking_uri)
    if problem:
        raise click.ClickException(problem)
    for sink in sinks.from_settings(settings):  # a misconfigured sink: one sentence here, not a worker's traceback
        sink.close()
    env = {**os.environ, "HOKUSAI_DATABASE_URL": settings.database_url, "MLFLOW_TRACKING_URI": settings.tracking_uri}
    if obj.config_file:
        env["HOKUSAI_CONFIG"] = str(obj.config_file)
    # /metrics adds up every worker's counters (prometheus-client's multiprocess mode)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir(Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.home / "prometheus" / f"receiver-{port}")))
    click.echo(f"Receiving MLflow webhooks at http://{host}:{port}/webhooks/mlflow (gunicorn, {workers} workers x {threads} threads)", err=True)
    os.execve(sys.executable, receiver_command(host, port, workers, threads), env)


@webhook.command("install")
@click.option("--url", required=True, help="The receiver's URL, such as https://hokusai.example.com/webhooks/mlflow.")
@click.option("--secret", envvar="HOKUSAI_WEBHOOK_SECRET", help="The shared secret (default: HOKUSAI_WEBHOOK_SECRET, else a new one is generated into a 0600 file in HOKUSAI_HOME, never printed).")
@click.option("--name", default="hokusai", show_default=True, help="The MLflow webhook's name; an existing one is updated.")
@pass_ctx
@domain_errors
def webhook_install(obj, url, secret, name):
    """Install the webhook that sends model_version.created and model_version_tag.set to URL on
    the MLflow server of MLFLOW_TRACKING_URI."""
    from hokusai_mlflow_plugin.mlflow_io import webhooks
    from hokusai_mlflow_plugin.mlflow_io.client import failing_fast

    secret_file = None
    if secret is None:  # shown once, through a file only its owner reads, never on the terminal
        secret = webhooks.new_secret()
        secret_file = webhooks.save_secret(obj.settings.home / f"webhook-secret-{name}", secret + "\n")
    with failing_fast():
        installed = webhooks.install(obj.client(), url, secret, name)
    click.echo(f"{'Created' if installed.created else 'Updated'} MLflow webhook '{name}' -> {url}")
    if secret_file is not None:
        click.echo(f"Generated a secret in {secret_file} (mode 0600): give it to the receiver as HOKUSAI_WEBHOOK_SECRET.")
    if installed.tested:
        click.echo("MLflow's test delivery reached the receiver.")
    else:
        click.echo(f"Warning: MLflow's test delivery failed: {installed.test_error}", err=True)
