"""What every command group shares: the context built from the root group's options, the
``--json`` printer, number parsing, stopping on a signal, and the one mapping of the domain's
errors to click's (one sentence, exit 1 or 2, a traceback only with ``--debug``).

Command modules import this module and nothing else of the CLI; domain modules are imported
inside the commands, so that ``hokusai --help`` stays fast."""

from __future__ import annotations

import functools
import json
import signal
import threading

import click


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
        from hokusai_mlflow_plugin.mlflow_io.client import client

        uri = self.settings.tracking_uri
        if not uri:
            raise click.ClickException(
                "MLFLOW_TRACKING_URI is not set: point it (or --tracking-uri) at your MLflow server."
            )
        return client(uri)

    def system_client(self):
        """The system's MLflow: behind the gateway where one is named (HOKUSAI_MLFLOW_INTERNAL_URI). Its
        writes (outcome tags, owner tags) are the system's word, which the gateway refuses to every key."""
        from hokusai_mlflow_plugin.mlflow_io.client import client

        internal = self.settings.mlflow_internal_uri
        return client(internal) if internal else self.client()

    def service(self):
        from hokusai_mlflow_plugin.mlflow_io.client import store_client
        from hokusai_mlflow_plugin.registration.service import RegistrationService

        return RegistrationService(self.sessions(), self.system_client(),
                                   provenance=self.settings.provenance,
                                   reader=store_client(self.settings.mlflow_store_uri),  # MLflow's database, when named
                                   # the receiver's: the sweep leaves the outcome tags to it that long
                                   outcome_tag_linger=self.settings.outcome_tag_linger)

    def api(self):
        """The HTTP API's client when HOKUSAI_API_URL and HOKUSAI_API_KEY are set (the command then
        needs no database), else None."""
        from hokusai_mlflow_plugin.config import ConfigError

        url, key = self.settings.api_url, self.settings.api_key
        if not url and not key:
            return None
        if not (url and key):
            missing = "HOKUSAI_API_KEY" if url else "HOKUSAI_API_URL"
            raise ConfigError(f"{missing} is not set: the CLI talks to the API with both HOKUSAI_API_URL and HOKUSAI_API_KEY.")
        from hokusai_mlflow_plugin.client import HokusaiClient

        return HokusaiClient(url, key)


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


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM: a long-running command waits on it, then stops cleanly.
    A second signal, while the command is finishing its step, stops it at once."""
    stop = threading.Event()

    def handle(signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handle)
    return stop


def click_error(error: Exception, ctx: Context | None) -> click.ClickException | None:
    """The click error for a domain error, chosen by its type and kind, never by its text; None
    for anything else (a bug: its traceback is worth seeing)."""
    from sqlalchemy.exc import SQLAlchemyError

    from hokusai_mlflow_plugin.core.errors import BadOption, HokusaiError, MlflowUnavailable
    from hokusai_mlflow_plugin.db.errors import explain

    if isinstance(error, SQLAlchemyError):
        error = explain(error, ctx.settings.database_url) if ctx else None
    if isinstance(error, BadOption):
        return click.BadParameter(str(error), param_hint=f"'{error.option}'")  # exit 2, a usage error
    if isinstance(error, MlflowUnavailable):
        uri = ctx.settings.tracking_uri if ctx else None
        return click.ClickException(f"MLflow is unreachable at {uri}: start it or set MLFLOW_TRACKING_URI (--debug shows why).")
    if isinstance(error, HokusaiError):
        return click.ClickException(str(error))  # every other kind: exit 1, the sentence says what to do
    return None


def domain_errors(fn):
    """Turn the domain's errors raised by a command into click's; under ``--debug`` they propagate
    with their traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            ctx = click.get_current_context().find_object(Context)
            error = None if ctx and ctx.debug else click_error(e, ctx)
            if error is None:
                raise
            raise error from None

    return wrapper


# -- text ----------------------------------------------------------------------------------------


def record(data: dict):
    """An API answer with the attributes of the row it shows, for the same text as from the database."""
    from types import SimpleNamespace

    return SimpleNamespace(**data)


def number_text(value) -> str:
    return "-" if value is None else f"{value:g}"


def token_line(t) -> str:
    """One token on one line: id, status, its bar, the model it took, and where it serves."""
    from hokusai_mlflow_plugin.core.metrics import get_metric

    m = get_metric(t.metric_name) if t.metric_name else None
    if m is not None and t.baseline_value is not None:
        bar = f"{m.name} {m.sign} {t.baseline_value:g}"
    else:
        bar = t.metric_name or "-"
    where = f"  {t.model_name} v{t.model_version} ({t.metric_name} {t.metric_value:g})" if t.model_name else ""
    serving = f"  serving at {t.deployment_target}" if getattr(t, "deployment_target", None) else ""
    return f"{t.token_id:<20} {t.status:<11} {bar}{where}{serving}"


def table(headers, rows) -> str:
    """Columns padded to their widest cell; the last one runs to the end of the line."""
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    widths[-1] = 0
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in (headers, *rows))
