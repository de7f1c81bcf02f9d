"""Flask adapter that receives MLflow registry webhooks (DESIGN.md, step 3).

Production: ``gunicorn 'webhook_app:create_app()'`` (see the README); ``hokusai webhook serve``
runs Flask's development server for local use.
"""

from __future__ import annotations

import logging
import os

from flask import Flask

from hokusai_mlflow_plugin.config import load_settings
from webhook_app.signature import DEFAULT_TOLERANCE, MAX_BODY, WebhookConfigurationError


def create_app(test_config: dict | None = None) -> Flask:
    """Safe defaults, then the environment (and ``HOKUSAI_CONFIG``), then ``test_config``."""
    app = Flask(__name__)
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
    )
    if test_config:
        app.config.update(test_config)
    if not app.config["HOKUSAI_WEBHOOK_SECRETS"]:
        raise WebhookConfigurationError(
            "HOKUSAI_WEBHOOK_SECRET is not set: the receiver cannot verify MLflow's signatures. "
            "Set it to the secret given to the MLflow webhook (a comma-separated list for rotation)."
        )
    if not app.config["MLFLOW_TRACKING_URI"]:
        raise WebhookConfigurationError(
            "MLFLOW_TRACKING_URI is not set: the receiver reads model versions, runs and metrics "
            "from MLflow. Set it to the MLflow server's URL."
        )
    # The receiver answers MLflow within its short retry window: fail fast on an unreachable
    # MLflow (503, MLflow retries, the reconcile sweep catches the rest) instead of MLflow's
    # default minutes of client-side retries. Operators may still set these themselves.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    level = app.config["HOKUSAI_SETTINGS"].log_level
    for name in ("hokusai_mlflow_plugin", "webhook_app"):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not logging.getLogger().handlers and not logger.handlers:  # gunicorn: no root handler
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)

    from webhook_app import views

    views.init_app(app)
    return app
