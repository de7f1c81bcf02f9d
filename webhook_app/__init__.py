"""Flask adapter that receives MLflow registry webhooks (DESIGN.md, step 3).

Production: ``gunicorn 'webhook_app:create_app()'`` (see the README); ``hokusai webhook serve``
runs it under gunicorn too. The MLflow gateway (``/mlflow``) is a process of its own:
``webhook_app.gateway``.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from flask import Flask
from flask_openapi3 import Info, OpenAPI

from hokusai_mlflow_plugin import __version__
from hokusai_mlflow_plugin.config import load_settings, receiver_problem, trusted_proxies
from hokusai_mlflow_plugin.core.errors import ConfigError
from hokusai_mlflow_plugin.db.session import session_factory
from hokusai_mlflow_plugin.events.relay import from_settings as relay_from_settings
from hokusai_mlflow_plugin.mlflow_io.client import client, fail_fast_by_default, store_client
from hokusai_mlflow_plugin.registration.service import RegistrationService
from webhook_app.proxies import TrustedProxyFix
from webhook_app.signature import DEFAULT_TOLERANCE, MAX_BODY, WebhookConfigurationError


def create_app(test_config: dict | None = None) -> Flask:
    """Safe defaults, then the environment (and ``HOKUSAI_CONFIG``), then ``test_config``."""
    from webhook_app.api import SECURITY_SCHEMES, problems

    app = OpenAPI(
        __name__, info=Info(title="Hokusai", version=__version__), security_schemes=SECURITY_SCHEMES,
        validation_error_callback=problems.of_validation, doc_ui=False,
    )
    settings = load_settings()
    app.config.from_mapping(
        HOKUSAI_WEBHOOK_SECRETS=settings.webhook_secrets,
        HOKUSAI_DATABASE_URL=settings.database_url,
        MLFLOW_TRACKING_URI=settings.tracking_uri,
        SIGNATURE_TOLERANCE=DEFAULT_TOLERANCE,
        MAX_CONTENT_LENGTH=MAX_BODY,
        HOKUSAI_SETTINGS=settings,  # sinks and retry policy of the in-process relay
        HOKUSAI_RELAY=True,
        HOKUSAI_RELAY_POLL=1.0,  # seconds; the relay is also woken the moment a registration commits
        HOKUSAI_TRUSTED_PROXIES=settings.trusted_proxies,  # whose X-Forwarded-* is believed (webhook_app.proxies)
        HOKUSAI_OUTCOME_TAG_LINGER=settings.outcome_tag_linger,  # seconds the outcome tags gather (mlflow_io.outcome_tags)
        HOKUSAI_MLFLOW_STORE_URI=settings.mlflow_store_uri,  # MLflow's database: the decisions' reads and tags there
    )
    if test_config:
        app.config.update(test_config)
    problem = receiver_problem(app.config["HOKUSAI_WEBHOOK_SECRETS"], app.config["MLFLOW_TRACKING_URI"])
    if problem:
        raise WebhookConfigurationError(problem)
    # The receiver answers MLflow within its short retry window: fail fast on an unreachable
    # MLflow (503, MLflow retries, the reconcile sweep catches the rest) instead of MLflow's
    # default minutes of client-side retries. Operators may still set these themselves.
    fail_fast_by_default()
    configure_logging(app.config["HOKUSAI_SETTINGS"].log_level)
    _wire(app)

    from webhook_app import api, console, views

    app.register_blueprint(views.bp)
    api.init_app(app)
    console.init_app(app)
    app.register_error_handler(413, lambda e: ({"error": "body too large", "limit": app.config["MAX_CONTENT_LENGTH"]}, 413))
    app.register_error_handler(500, lambda e: ({"error": "internal error"}, 500))  # JSON, no page
    proxies = trusted_proxies(app.config["HOKUSAI_TRUSTED_PROXIES"])
    if proxies:  # outermost: the client's address, scheme and host from these proxies alone (without, Flask reads none)
        app.wsgi_app = TrustedProxyFix(app.wsgi_app, proxies)
    return app


def _wire(app: Flask) -> None:
    """The registration service the views call, and this process's relay on its fast path."""
    # The outcome tags are written after the answer: MLflow's delivery (and the next one) does not
    # wait on two more MLflow writes. The pool's threads start at the first decision, in the worker.
    tagger = ThreadPoolExecutor(max_workers=2, thread_name_prefix="hokusai-outcome-tags")
    try:
        reader = store_client(app.config["HOKUSAI_MLFLOW_STORE_URI"])
    except ConfigError as e:
        raise WebhookConfigurationError(str(e)) from None
    service = RegistrationService(
        session_factory(app.config["HOKUSAI_DATABASE_URL"]), client(app.config["MLFLOW_TRACKING_URI"]), tag_later=tagger.submit,
        provenance=app.config["HOKUSAI_SETTINGS"].provenance, outcome_tag_linger=app.config["HOKUSAI_OUTCOME_TAG_LINGER"],
        reader=reader,
    )
    app.extensions["hokusai"] = service
    if not app.config["HOKUSAI_RELAY"]:
        return
    # The fast path: this process's relay threads wake the moment a registration commits.
    try:
        relay = relay_from_settings(app.config["HOKUSAI_SETTINGS"], service.sessions, poll_interval=app.config["HOKUSAI_RELAY_POLL"])
    except ConfigError as e:
        raise WebhookConfigurationError(str(e)) from None
    if relay.sinks:
        # Started by the first request in each process, not here: under `gunicorn --preload`
        # the app is built in the master, and threads do not survive the fork into workers.
        service.after_commit.append(relay.kick)
        app.extensions["hokusai_relay"] = relay
        app.before_request(lambda: relay.ensure_started())


def configure_logging(level: str) -> None:
    for name in ("hokusai_mlflow_plugin", "webhook_app"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not logging.getLogger().handlers and not logger.handlers:  # gunicorn: no root handler
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
