"""``hokusai up`` and ``hokusai demo``: the embedded stack, for a laptop."""

from __future__ import annotations

import click

from hokusai_mlflow_plugin.cli.common import domain_errors, pass_ctx, stop_on_signals


def _stack(obj, host, mlflow_port, receiver_port, **kwargs):
    from hokusai_mlflow_plugin.stack.local import LocalStack

    return LocalStack(
        home=obj.settings.home, database_url=obj.settings.database_url, host=host,
        mlflow_port=mlflow_port, receiver_port=receiver_port, log=lambda m: click.echo(m, err=True), **kwargs,
    )


def _start(stack):
    try:
        return stack.start()  # a StackError says what to change
    except (RuntimeError, TimeoutError) as e:
        raise click.ClickException(f"The stack did not start: {e}") from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--mlflow-port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--receiver-port", default=8787, show_default=True, type=click.IntRange(1, 65535))
@click.option("--gateway-port", default=5080, show_default=True, type=click.IntRange(1, 65535),
              help="The MLflow gateway: MLflow for clients with an API key (MLFLOW_TRACKING_TOKEN).")
@click.option("--reconcile-interval", default=30.0, show_default=True, type=float, help="Seconds between sweeps.")
@pass_ctx
@domain_errors
def up(obj, host, mlflow_port, receiver_port, gateway_port, reconcile_interval):
    """Run the whole stack on the embedded default until Ctrl-C: MLflow, the receiver, the MLflow
    gateway, the relay and the reconcile sweep, with data in HOKUSAI_HOME."""
    stack = _stack(obj, host, mlflow_port, receiver_port, gateway_port=gateway_port, reconcile_interval=reconcile_interval,
                   inherit_relay_output=True)
    stop = stop_on_signals()
    _start(stack)
    click.echo(
        f"\nHokusai is up (data in {stack.home}).\n"
        f"  MLflow UI and tracking: {stack.mlflow_url} (MLflow direct, no sign-in)\n"
        f"  MLflow UI, signed in:   {stack.ui_url} (through the gateway: sign in with an API key)\n"
        f"  Webhook receiver:       {stack.receiver_url}/webhooks/mlflow\n"
        f"  HTTP API and console:   {stack.receiver_url}/api/v1, {stack.receiver_url}/console\n"
        f"  MLflow gateway:         {stack.gateway_url} (with MLFLOW_TRACKING_TOKEN=<a key from 'hokusai apikey create'>)\n"
        f"  Logs:                   {stack.home / 'logs'}\n\n"
        f"In your training shell:\n\n  export MLFLOW_TRACKING_URI={stack.mlflow_url}\n\n"
        "Events print below as they are emitted. Ctrl-C stops everything."
    )
    try:
        while not stop.wait(1.0):
            dead = stack.dead_child()
            if dead is not None:
                click.echo(f"The {dead.name} stopped unexpectedly; see {dead.log_path}. Stopping.", err=True)
                raise SystemExit(1)
    finally:
        click.echo("Stopping ...", err=True)
        stack.stop()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--mlflow-port", default=0, type=int, help="Default: a free port.")
@click.option("--receiver-port", default=0, type=int, help="Default: a free port.")
@pass_ctx
@domain_errors
def demo(obj, host, mlflow_port, receiver_port):
    """One real registration end to end, then one rejection; exits 0 only if both happened."""
    from hokusai_mlflow_plugin.stack import demo as story
    from hokusai_mlflow_plugin.stack.local import running_stack
    from hokusai_mlflow_plugin.stack.process import free_port

    running = running_stack(obj.settings.home)
    stack = None
    if running:
        tracking_uri = running["mlflow_url"]
        click.echo(f"Using the stack that runs from {obj.settings.home} (MLflow at {tracking_uri}).", err=True)
    else:
        stack = _stack(obj, host, mlflow_port or free_port(host), receiver_port or free_port(host), reconcile_interval=5.0)
        click.echo(f"Starting the stack in the background (data in {stack.home}) ...", err=True)
        _start(stack)
        tracking_uri = stack.mlflow_url
    try:
        ok = story.run(obj.sessions(), tracking_uri, click.echo)
    finally:
        if stack is not None:
            click.echo("Stopping the stack ...", err=True)
            stack.stop()
    if not ok:
        raise SystemExit(1)
    click.echo("Demo complete: one model registered, one rejected with its reason.")
