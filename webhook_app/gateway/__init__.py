"""The authenticating gateway in front of the internal MLflow server: ``/mlflow/<path>``.

Plain MLflow clients set ``MLFLOW_TRACKING_URI=https://<hokusai>/mlflow`` and
``MLFLOW_TRACKING_TOKEN=hk_...`` (sent as ``Authorization: Bearer``); nothing else reaches MLflow.
It is a process of its own, asyncio (aiohttp) under gunicorn, not a blueprint of the receiver's
Flask app: a hop through a threaded WSGI worker cost more than a sixth of MLflow's own time per
request (BENCHMARKS.md).

    gunicorn 'webhook_app.gateway:create_app()' --worker-class aiohttp.GunicornUVLoopWebWorker

``hokusai gateway serve`` runs exactly that; ``hokusai up`` starts it beside the receiver.
"""

from __future__ import annotations

import os

from aiohttp import web

from hokusai_mlflow_plugin.auth.key_check import KeyCheck
from hokusai_mlflow_plugin.config import load_settings, trusted_proxies
from hokusai_mlflow_plugin.core.errors import ConfigError
from webhook_app import configure_logging
from webhook_app.gateway import credentials, forwarded, metrics
from webhook_app.gateway.makers import MakerRecord
from webhook_app.gateway.owners import Owners
from webhook_app.gateway.proxy import GATEWAY, PREFIX, Gateway, forward
from webhook_app.gateway.rate_limit import RateLimit
from webhook_app.gateway.signin import SignIn, with_slash


MLFLOW_ROUTE = PREFIX + "{tail:(?:/.*)?}"
#: The access decision of each of the gateway's own routes (a route's canonical path -> why), read by the
#: authorization matrix test: a route added without one fails it. None of them takes an id but
#: MLflow's, and MLflow's routes are each classified by ``scopes`` (tests/webhook_app/test_gateway_routes.py).
ACCESS = {
    "/health": "public: takes no id, answers only that the process is up",
    "/metrics": "public, as the receiver's /metrics: takes no id, counts only (no key, user, token or object "
                "name is a label); restrict it at the ingress",
    PREFIX: "public: takes no id, a redirect to /mlflow/ on this host (the query kept, a key in it refused before)",
    PREFIX + "{tail}": "MLflow's routes: the key or session, then each route's scope and owners (scopes.access_of, judge)",
}


def create_app(test_config: dict | None = None) -> web.Application:
    """The settings of the environment (and ``HOKUSAI_CONFIG``), then ``test_config``: keys
    ``internal_uri``, ``database_url``, ``rate_limit``, ``redis_url``, ``connect_timeout``,
    ``read_timeout``, ``console_url``, ``public_url``, ``trusted_proxies`` (addresses or networks, or their text)."""
    settings = load_settings()
    config = {
        "internal_uri": settings.gateway_upstream,
        "database_url": settings.database_url,
        "rate_limit": settings.gateway_rate_limit,
        "redis_url": settings.redis_url,
        "connect_timeout": settings.gateway_connect_timeout,
        "read_timeout": settings.gateway_read_timeout,
        "key_lease": settings.gateway_key_lease,  # seconds memory of keys is trusted (auth.revocation)
        # Teams inside MLflow (issue 19): each key reads and writes its team's objects only. On
        # unless a deployment turns it off (README: the risk of "off").
        "mlflow_ownership": os.environ.get("HOKUSAI_GATEWAY_MLFLOW_OWNERSHIP", "on").strip().lower() not in ("off", "0", "false"),
        "trusted_proxies": settings.trusted_proxies,  # whose X-Forwarded-* is believed (forwarded)
        # People in the MLflow UI: where they sign in (the console), and the gateway's own URL as
        # browsers reach it (else each request's scheme and host). README: the MLflow UI.
        "console_url": os.environ.get("HOKUSAI_CONSOLE_URL") or "/console",
        "public_url": os.environ.get("HOKUSAI_GATEWAY_PUBLIC_URL") or None,
        **(test_config or {}),
    }
    if not config["internal_uri"]:
        raise ConfigError("HOKUSAI_MLFLOW_INTERNAL_URI (or MLFLOW_TRACKING_URI) is not set: the gateway needs the URL of "
                          "the MLflow server it stands in front of.")
    configure_logging(settings.log_level)
    credentials.redact_access_logs()
    gateway = Gateway(config["internal_uri"], KeyCheck(config["database_url"], lease=config["key_lease"]),
                      RateLimit(config["rate_limit"], config["redis_url"]), config["connect_timeout"], config["read_timeout"],
                      MakerRecord(config["database_url"]), Owners(config["database_url"]))
    gateway.ownership = bool(config["mlflow_ownership"])
    gateway.signin = SignIn(config["database_url"], config["console_url"], config["public_url"])
    # Artifacts of any size stream through; only the few small bodies that scopes.route_of names are
    # read whole (proxy.WHOLE at most).
    # Bodies go on as they came: a compressed upload stays compressed (aiohttp would inflate it).
    # Outermost first: the forwarding headers judged before anything reads them; every answer
    # counted, a key in a URL refused included.
    app = web.Application(client_max_size=1024 * 1024, handler_args={"auto_decompress": False}, middlewares=[
        forwarded.believe_trusted_proxies, metrics.count_requests, credentials.keys_in_headers_only])
    app[GATEWAY] = gateway
    app[forwarded.TRUSTED_PROXIES] = trusted_proxies(config["trusted_proxies"])
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics.serve)
    app.router.add_get(PREFIX, with_slash)  # before the catch-all: /mlflow -> /mlflow/
    app.router.add_route("*", MLFLOW_ROUTE, forward)  # forward reads the raw path itself
    app.on_startup.append(_open)
    app.on_cleanup.append(_close)
    return app


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _open(app: web.Application) -> None:
    gateway = app[GATEWAY]
    gateway.key_check.start()  # in the worker, not gunicorn's master: its watch is a thread
    await gateway.open()


async def _close(app: web.Application) -> None:
    await app[GATEWAY].close()
