"""The ``hokusai`` command line (also installed as ``hokusai-ml-platform``): a thin shell over the
functions the receiver and the sweep use."""

from __future__ import annotations

import functools
import json
import logging

import click

from hokusai_mlflow_plugin import __version__
from hokusai_mlflow_plugin.errors import first_line


class Context:
    """What every command may need, built on first use from the group's options."""

    def __init__(self, config_file, overrides, debug):
        self.config_file = config_file
        self.overrides = overrides
        self.debug = debug
        self._settings = None

    @property
    def settings(self):
        if self._settings is None:
            from hokusai_mlflow_plugin.config import load_settings

            self._settings = load_settings(self.config_file, **self.overrides)
        return self._settings

    def sessions(self):
        from hokusai_mlflow_plugin.db.session import session_factory

        return session_factory(self.settings.database_url)

    def client(self):
        from mlflow import MlflowClient

        uri = self.settings.tracking_uri
        if not uri:
            raise click.ClickException(
                "MLFLOW_TRACKING_URI is not set: point it (or --tracking-uri) at your MLflow server."
            )
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def service(self):
        from hokusai_mlflow_plugin.service import RegistrationService

        return RegistrationService(self.sessions(), self.client())


pass_ctx = click.make_pass_decorator(Context)


class Number(click.ParamType):
    """A float whose error says what to give (click's own says only "not a valid float")."""

    name = "number"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            return float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number: give a decimal such as 0.82.", param, ctx)


NUMBER = Number()


def emit(data, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def translating(translate):
    """A decorator that turns the exceptions ``translate`` knows into the click error it returns
    (one sentence, exit 1 or 2, no traceback); others, and all of them under ``--debug``, propagate."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                ctx = click.get_current_context().find_object(Context)
                error = None if ctx and ctx.debug else translate(e, ctx)
                if error is None:
                    raise
                raise error from None

        return wrapper

    return decorate


def _domain_error(e: Exception, ctx) -> click.ClickException | None:
    from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError, ProgrammingError

    from hokusai_mlflow_plugin.config import ConfigError
    from hokusai_mlflow_plugin.mlflow_facts import MlflowUnavailable
    from hokusai_mlflow_plugin.service import Unavailable
    from hokusai_mlflow_plugin.tokens import TokenError

    if isinstance(e, (TokenError, ConfigError)):
        return click.ClickException(str(e))
    if isinstance(e, (Unavailable, MlflowUnavailable)):
        if "database" in str(e):
            return click.ClickException(str(e))
        uri = ctx.settings.tracking_uri if ctx else None
        return click.ClickException(f"MLflow is unreachable at {uri}: start it or set MLFLOW_TRACKING_URI (--debug shows why).")
    if isinstance(e, ArgumentError):
        return click.ClickException(
            "The database URL is not a SQLAlchemy URL: use a form such as "
            "postgresql://user:password@host:5432/hokusai or sqlite:////path/hokusai.db."
        )
    if isinstance(e, (OperationalError, InterfaceError, ProgrammingError)):
        url = ctx.settings.safe_database_url if ctx else "?"
        first = first_line(e.orig or e, limit=200)
        hint = "run 'hokusai db upgrade'" if "no such table" in first or "does not exist" in first else "check HOKUSAI_DATABASE_URL and that the database is running"
        return click.ClickException(f"The token database at {url} failed ({first}): {hint}.")
    return None


#: The domain's errors as one-sentence ClickExceptions (exit 1), no traceback unless --debug.
domain_errors = translating(_domain_error)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": None})
@click.version_option(__version__, prog_name="hokusai")
@click.option("--config", "config_file", envvar="HOKUSAI_CONFIG", type=click.Path(dir_okay=False), help="A JSON or YAML settings file.")
@click.option("--database-url", envvar="HOKUSAI_DATABASE_URL", help="SQLAlchemy URL of the token database.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="The MLflow tracking server.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def main(ctx, config_file, database_url, tracking_uri, debug):
    """Connect Hokusai tokens to MLflow model registrations."""
    import os

    level = "DEBUG" if debug else os.environ.get("HOKUSAI_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level if isinstance(logging.getLevelName(level), int) else "WARNING",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx.obj = Context(config_file, {"database_url": database_url, "tracking_uri": tracking_uri}, debug)


# -- db ------------------------------------------------------------------------------------------


@main.group()
def db():
    """The token database."""


@db.command("upgrade")
@pass_ctx
@domain_errors
def db_upgrade(obj):
    """Create or migrate the token database's tables."""
    from hokusai_mlflow_plugin.db.migrate import upgrade

    upgrade(obj.settings.database_url)
    click.echo(f"Token database is current: {obj.settings.safe_database_url}")


# -- token ---------------------------------------------------------------------------------------


@main.group()
def token():
    """Create and inspect tokens (they normally come from the Hokusai site)."""


def _token_line(t) -> str:
    from hokusai_mlflow_plugin.metrics import get_metric

    m = get_metric(t.metric_name) if t.metric_name else None
    sign = ">=" if m is None or m.higher_is_better else "<="
    metric = f"{t.metric_name} {sign} {t.baseline_value:g}" if m and t.baseline_value is not None else (t.metric_name or "-")
    where = f"  {t.model_name} v{t.model_version} ({t.metric_name} {t.metric_value:g})" if t.model_name else ""
    return f"{t.token_id:<20} {t.status:<11} {metric}{where}"


@token.command("create")
@click.argument("token_id")
@click.option("--metric", help="The metric the model is judged on, such as auroc.")
@click.option("--baseline", type=NUMBER, help="The value the metric must reach, such as 0.82.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_create(obj, token_id, metric, baseline, as_json):
    """Create token TOKEN_ID in draft status."""
    from hokusai_mlflow_plugin import tokens

    with obj.sessions().begin() as session:
        t = tokens.create(session, token_id, metric, baseline)
        data = t.to_dict()
    emit(data, as_json, f"Created token {data['token_id']} (draft)")


@token.command("show")
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_show(obj, token_id, as_json):
    """Show one token."""
    from hokusai_mlflow_plugin import tokens

    with obj.sessions()() as session:
        t = tokens.get(session, token_id)
        data = t.to_dict()
        line = _token_line(t)
    emit(data, as_json, line)


@token.command("list")
@click.option("--status", help="Only tokens in this status (draft, registered, deployed, archived).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def token_list(obj, status, as_json):
    """List tokens."""
    from hokusai_mlflow_plugin import tokens

    with obj.sessions()() as session:
        found = tokens.list_tokens(session, status)
        data = [t.to_dict() for t in found]
        lines = "\n".join(_token_line(t) for t in found) or "No tokens."
    emit(data, as_json, lines)


# -- reconcile -----------------------------------------------------------------------------------


@main.command()
@click.option("--interval", type=float, help="Sweep every S seconds until interrupted (default: once).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
@domain_errors
def reconcile(obj, interval, as_json):
    """Decide the versions of draft tokens that no webhook decided."""
    from hokusai_mlflow_plugin import reconcile as sweep

    service = obj.service()
    if interval:
        click.echo(f"Reconciling every {interval:g}s; Ctrl-C to stop.")
        try:
            sweep.run_forever(service, interval)
        except KeyboardInterrupt:
            return
    outcomes = sweep.reconcile_once(service)
    data = [o.to_dict() for o in outcomes]
    lines = "\n".join(f"{o.model_name} v{o.model_version}: {o.status} - {o.reason}" for o in outcomes)
    emit(data, as_json, lines or "Nothing to reconcile.")


# -- webhook -------------------------------------------------------------------------------------


@main.group()
def webhook():
    """The MLflow webhook receiver."""


@webhook.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8787, show_default=True, type=int)
@pass_ctx
@domain_errors
def webhook_serve(obj, host, port):
    """Run the receiver on Flask's development server (use gunicorn in production)."""
    from webhook_app import create_app
    from webhook_app.signature import WebhookConfigurationError

    settings = obj.settings  # --config, the environment and the group's options, in that order
    try:
        app = create_app({
            "HOKUSAI_SETTINGS": settings,
            "HOKUSAI_WEBHOOK_SECRETS": settings.webhook_secrets,
            "HOKUSAI_DATABASE_URL": settings.database_url,
            "MLFLOW_TRACKING_URI": settings.tracking_uri,
        })
    except WebhookConfigurationError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Receiving MLflow webhooks at http://{host}:{port}/webhooks/mlflow (development server)")
    app.run(host=host, port=port)


@webhook.command("install")
@click.option("--url", required=True, help="The receiver's URL, such as https://hokusai.example.com/webhooks/mlflow.")
@click.option("--secret", envvar="HOKUSAI_WEBHOOK_SECRET", help="The shared secret (default: HOKUSAI_WEBHOOK_SECRET, else a new one is generated into a 0600 file in HOKUSAI_HOME, never printed).")
@click.option("--name", default="hokusai", show_default=True, help="The MLflow webhook's name; an existing one is updated.")
@pass_ctx
@domain_errors
def webhook_install(obj, url, secret, name):
    """Install the webhook that sends model_version.created and model_version_tag.set to URL on
    the MLflow server of MLFLOW_TRACKING_URI."""
    import os
    import secrets as _secrets

    from hokusai_mlflow_plugin import mlflow_webhook
    from hokusai_mlflow_plugin.mlflow_facts import mlflow_env

    generated = secret is None
    secret = secret or _secrets.token_urlsafe(32)
    secret_file = None
    if generated:  # shown once, through a file only its owner reads, never on the terminal
        obj.settings.home.mkdir(parents=True, exist_ok=True)
        secret_file = obj.settings.home / f"webhook-secret-{name}"
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
    # A few retries, not MLflow's default seven with backoff (two minutes on a server answering 500)
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    try:
        with mlflow_env(MLFLOW_HTTP_REQUEST_MAX_RETRIES=retries):
            installed = mlflow_webhook.install(obj.client(), url, secret, name)
    except mlflow_webhook.WebhookInstallError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{'Created' if installed.created else 'Updated'} MLflow webhook '{name}' -> {url}")
    if generated:
        click.echo(f"Generated a secret in {secret_file} (mode 0600): give it to the receiver as HOKUSAI_WEBHOOK_SECRET.")
    if installed.tested:
        click.echo("MLflow's test delivery reached the receiver.")
    else:
        click.echo(f"Warning: MLflow's test delivery failed: {installed.test_error}", err=True)


# The command groups that live in their own modules (they import this one for its helpers).
from hokusai_mlflow_plugin.events_cli import events  # noqa: E402
from hokusai_mlflow_plugin.model_cli import model  # noqa: E402
from hokusai_mlflow_plugin.stack_cli import demo, up  # noqa: E402

for command in (events, model, up, demo):
    main.add_command(command)
