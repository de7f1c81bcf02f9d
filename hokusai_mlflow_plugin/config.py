"""Settings, read from a JSON or YAML file, the environment, and CLI overrides (in that order of
increasing precedence; see the configuration table in DESIGN.md).

A database password may arrive in any of these places; it only ever leaves through
``Settings.database_url`` (to SQLAlchemy) and is shown redacted by ``Settings.safe_database_url``.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import quote

from sqlalchemy.engine import make_url

from hokusai_mlflow_plugin.core.errors import ConfigError

__all__ = ["ConfigError", "Settings", "load_settings", "receiver_problem", "redact_url", "trusted_proxies"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# Config-file keys (also accepted in upper case, as the original platform's files wrote them).
_FILE_KEYS = {
    "database_url", "db_type", "db_host", "db_port", "db_name", "db_user", "db_password", "home",
    "tracking_uri", "webhook_secret", "event_webhook_url", "event_webhook_secret", "redis_url",
    "redis_stream", "log_level", "event_console", "relay_horizon", "relay_retry_base",
    "relay_retry_cap", "relay_lease", "api_url", "api_key", "mlflow_internal_uri", "gateway_connect_timeout",
    "gateway_read_timeout", "gateway_rate_limit", "gateway_key_lease", "provenance", "trusted_proxies",
    "outcome_tag_linger", "mlflow_store_uri",
}


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str = field(repr=False)
    tracking_uri: str | None = None
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    event_webhook_urls: tuple[str, ...] = field(default=(), repr=False)
    event_webhook_secret: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    redis_stream: str = "hokusai:events"
    log_level: str = "INFO"
    event_console: bool = False
    relay_horizon: float = 3 * 24 * 3600.0  # retry for about 3 days, as Stripe does
    relay_retry_base: float = 10.0  # first retry after about this many seconds, then doubling
    relay_retry_cap: float = 4 * 3600.0  # never wait longer than this between two attempts
    relay_lease: float = 60.0  # a claimed delivery is another worker's again after this
    api_url: str | None = None  # the Hokusai HTTP API: with api_key, the CLI needs no database
    api_key: str | None = field(default=None, repr=False)
    mlflow_internal_uri: str | None = None  # the MLflow server behind the gateway (default: tracking_uri)
    gateway_connect_timeout: float = 5.0
    gateway_read_timeout: float = 300.0  # between two reads: an artifact download is one long answer
    gateway_rate_limit: str = "1200/minute"  # per API key, the notation of the limits library
    # Seconds a gateway trusts its memory of keys after it last heard the database; a revoke that
    # a gateway does not confirm waits this long (auth.revocation).
    gateway_key_lease: float = 2.0
    # Versions whose run or logged model has no recorded maker (made on MLflow directly): "open"
    # decides them as ever (a laptop, the embedded default); "required" rejects them (production,
    # where everyone goes through the gateway).
    provenance: str = "open"
    # The proxies (addresses and networks) whose X-Forwarded-* headers are believed: the scheme and
    # host a client used. Empty: nobody's, and a redirect never follows a header a client made up.
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # Seconds the receiver gathers outcome tags before writing them, one request per registered
    # model (mlflow_io.outcome_tags): the tags show in MLflow's UI up to this much later.
    outcome_tag_linger: float = 1.0
    # MLflow's own database (its --backend-store-uri, a SQLAlchemy URL): when set, the receiver
    # reads a version's LoggedModel, run and metrics there with MLflow's own store, and writes the
    # outcome tags there, none of it through MLflow's server (issue 23). Unset: through the server.
    mlflow_store_uri: str | None = field(default=None, repr=False)

    @property
    def event_webhook_secrets(self) -> tuple[str, ...]:
        return _split(self.event_webhook_secret)

    @property
    def gateway_upstream(self) -> str | None:
        """The MLflow server the gateway stands in front of."""
        return self.mlflow_internal_uri or self.tracking_uri

    @property
    def safe_database_url(self) -> str:
        return redact_url(self.database_url)

    def with_overrides(self, **overrides) -> "Settings":
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in overrides.items() if k in known and v is not None})


def receiver_problem(webhook_secrets, tracking_uri) -> str | None:
    """Why the receiver cannot start with these settings (what to set), or None."""
    if not webhook_secrets:
        return (
            "HOKUSAI_WEBHOOK_SECRET is not set: the receiver cannot verify MLflow's signatures. "
            "Set it to the secret given to the MLflow webhook (a comma-separated list for rotation)."
        )
    if not tracking_uri:
        return (
            "MLFLOW_TRACKING_URI is not set: the receiver reads model versions, runs and metrics "
            "from MLflow. Set it to the MLflow server's URL."
        )
    return None


def trusted_proxies(text) -> tuple[IPNetwork, ...]:
    """``HOKUSAI_TRUSTED_PROXIES``: addresses and CIDR networks, separated by commas or spaces (or
    a list of them)."""
    networks = []
    items = text if isinstance(text, (list, tuple)) else (text or "").replace(",", " ").split()  # a YAML list too
    for item in items:
        if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            networks.append(item)
            continue
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ConfigError(f"HOKUSAI_TRUSTED_PROXIES holds {item!r}, which is neither an IP address nor a network: "
                              "list the proxies in front of Hokusai as addresses or CIDR networks, such as "
                              "'10.0.0.0/8, 192.0.2.7'.") from None
    return tuple(networks)


#: the SQLAlchemy dialects MLflow's SQL backend runs on (``postgresql+psycopg`` is ``postgresql``).
STORE_DIALECTS = ("sqlite", "postgresql", "mysql", "mssql")


def is_store_uri(uri: str | None) -> bool:
    """Is ``uri`` MLflow's database (a SQLAlchemy URL), not its server?"""
    return bool(uri) and uri.split(":", 1)[0].split("+", 1)[0].lower() in STORE_DIALECTS


def store_uri_problem(uri: str | None) -> str | None:
    """Why ``HOKUSAI_MLFLOW_STORE_URI`` cannot be used (what to set instead), or None."""
    if uri and not is_store_uri(uri):
        return ("HOKUSAI_MLFLOW_STORE_URI must be MLflow's database, the URL given to `mlflow server "
                f"--backend-store-uri` (such as sqlite:////srv/mlflow.db or postgresql://...), not {uri.split('://')[0]}://...")
    return None


def rate_limit_problem(rate: str) -> str | None:
    """Why ``HOKUSAI_GATEWAY_RATE_LIMIT`` cannot be used (what to write instead), or None."""
    from limits import parse

    try:
        parse(rate)
    except ValueError:
        return f"HOKUSAI_GATEWAY_RATE_LIMIT must read like '1200/minute' or '20/second', not {rate!r}."
    return None


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def _read_file(path: str) -> dict:
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"Cannot read the config file {p}: {e.strerror}. Check the path given by --config or HOKUSAI_CONFIG.") from e
    is_yaml = p.suffix.lower() in (".yaml", ".yml")
    try:
        if is_yaml:
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as e:
        # Parsers quote the offending line, which may hold a password: report its position only.
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else getattr(e, "lineno", None)
        where = f" (line {line})" if line else ""
        raise ConfigError(f"The config file {p} is not valid {'YAML' if is_yaml else 'JSON'}{where}; fix it or point HOKUSAI_CONFIG elsewhere.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"The config file {p} must hold a mapping of settings, not {type(data).__name__}.")
    out = {}
    for key, value in data.items():
        k = str(key).lower().removeprefix("hokusai_")
        if k in _FILE_KEYS and value is not None:
            out[k] = str(value)
    return out


def _database_url_from_parts(parts: dict) -> str | None:
    kind = parts.get("db_type")
    if not kind and not parts.get("db_host") and not parts.get("db_name"):
        return None
    kind = (kind or "postgresql").lower()
    if kind in ("postgres", "postgresql"):
        kind = "postgresql"
    if kind == "sqlite":
        return f"sqlite:///{parts.get('db_name') or 'hokusai.db'}"
    user = parts.get("db_user") or ""
    password = parts.get("db_password")
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    host = parts.get("db_host") or "localhost"
    port = f":{parts['db_port']}" if parts.get("db_port") else ""
    return f"{kind}://{auth + '@' if auth else ''}{host}{port}/{parts.get('db_name') or 'hokusai'}"


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _floats(values: dict, *keys: str) -> dict:
    out = {}
    for key in keys:
        if values.get(key):
            try:
                out[key] = float(values[key])
            except ValueError:
                raise ConfigError(f"HOKUSAI_{key.upper()} must be a number of seconds, not {values[key]!r}.") from None
            if out[key] <= 0:
                raise ConfigError(f"HOKUSAI_{key.upper()} must be positive, not {values[key]!r}.")
    return out


def _provenance(value: str | None) -> str:
    mode = (value or "open").strip().lower()
    if mode not in ("open", "required"):
        raise ConfigError(f"HOKUSAI_PROVENANCE is {value!r}: use 'open' (decide versions with no recorded maker as "
                          "ever) or 'required' (reject them; production, behind the gateway).")
    return mode


def load_settings(config_file: str | None = None, environ=None, **overrides) -> Settings:
    """Settings from a config file, then the environment, then ``overrides`` (CLI options)."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    config_file = config_file or env.get("HOKUSAI_CONFIG")
    if config_file:
        values.update(_read_file(config_file))
    from_env = {key: env[f"HOKUSAI_{key.upper()}"] for key in _FILE_KEYS if env.get(f"HOKUSAI_{key.upper()}")}
    if any(k.startswith("db_") or k == "database_url" for k in from_env):
        # the environment names the database (as a URL or as parts): the file's database is out
        for key in [k for k in values if k.startswith("db_") or k == "database_url"]:
            del values[key]
    values.update(from_env)
    if env.get("MLFLOW_TRACKING_URI") and not env.get("HOKUSAI_TRACKING_URI"):
        values["tracking_uri"] = env["MLFLOW_TRACKING_URI"]

    home = Path(values.get("home") or "~/.hokusai").expanduser()
    database_url = values.get("database_url") or _database_url_from_parts(values)
    if not database_url:
        database_url = f"sqlite:///{home / 'hokusai.db'}"
    settings = Settings(
        home=home,
        database_url=database_url,
        tracking_uri=values.get("tracking_uri"),
        webhook_secrets=_split(values.get("webhook_secret")),
        event_webhook_urls=_split(values.get("event_webhook_url")),
        event_webhook_secret=values.get("event_webhook_secret"),
        redis_url=values.get("redis_url"),
        redis_stream=values.get("redis_stream") or "hokusai:events",
        log_level=(values.get("log_level") or "INFO").upper(),
        event_console=(values.get("event_console") or "").lower() in ("1", "true", "yes", "on"),
        api_url=values.get("api_url"),
        api_key=values.get("api_key"),
        mlflow_internal_uri=values.get("mlflow_internal_uri"),
        gateway_rate_limit=values.get("gateway_rate_limit") or "1200/minute",
        provenance=_provenance(values.get("provenance")),
        trusted_proxies=trusted_proxies(values.get("trusted_proxies")),
        mlflow_store_uri=values.get("mlflow_store_uri"),
        **_floats(values, "outcome_tag_linger", "relay_horizon", "relay_retry_base", "relay_retry_cap", "relay_lease", "gateway_connect_timeout",
                  "gateway_read_timeout", "gateway_key_lease"),
    )
    settings = settings.with_overrides(**overrides)
    problem = store_uri_problem(settings.mlflow_store_uri)
    if problem:
        raise ConfigError(problem)
    try:
        make_url(settings.database_url)
    except Exception:
        raise ConfigError(
            f"The database URL is not a SQLAlchemy URL ({redact_url(settings.database_url)}); use a "
            "form such as postgresql://user:password@host:5432/hokusai or sqlite:////path/hokusai.db."
        ) from None
    return settings
