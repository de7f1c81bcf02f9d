"""The operator console under ``/console``: server-rendered pages behind a session signed in with
an API key. ``init_app`` adds it to the receiver's app, with its cookie, CSRF and headers."""

from __future__ import annotations

import hashlib
import os
from urllib.parse import urlsplit

from flask import current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix

from webhook_app.console import actions, errors, formats, pages, signin  # noqa: F401 (their routes)
from webhook_app.console.blueprint import bp, csrf

__all__ = ["bp", "init_app"]

# No script or style but our own files; no framing; no referrer leaves the console.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def init_app(app) -> None:
    """Register the console: its cookies (HttpOnly, SameSite=Lax, Secure over https),
    CSRF on its own forms only, its security headers, and ProxyFix when behind a proxy."""
    app.config.setdefault("HOKUSAI_PROXY_FIX", False)
    # The MLflow UI through the gateway, where it has an origin of its own (a laptop's other port):
    # the one place off this origin that a sign-in may go back to.
    app.config.setdefault("HOKUSAI_GATEWAY_PUBLIC_URL", os.environ.get("HOKUSAI_GATEWAY_PUBLIC_URL") or None)
    # Flask's defaults hold these keys already (None, "session"): replace the defaults only.
    if not app.config.get("SECRET_KEY"):
        # Every gunicorn worker derives the same key from the webhook secret; an operator may set one.
        app.config["SECRET_KEY"] = hashlib.sha256(
            b"hokusai-console-session:" + app.config["HOKUSAI_WEBHOOK_SECRETS"][0].encode()).hexdigest()
    if app.config.get("SESSION_COOKIE_NAME") in (None, "session"):
        app.config["SESSION_COOKIE_NAME"] = "hokusai_console"
    if not app.config.get("SESSION_COOKIE_PATH"):
        app.config["SESSION_COOKIE_PATH"] = bp.url_prefix  # never sent to /api, /mlflow, /webhooks
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    # The other blueprints take no forms (MLflow's signature, bearer keys): only the console
    # checks CSRF tokens, in its own before_request.
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # a token lives as long as its session
    app.session_interface = signin.ConsoleSessionInterface()
    if app.config["HOKUSAI_PROXY_FIX"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=1)
    csrf.init_app(app)
    app.register_blueprint(bp)
    app.after_request(_headers)


def _headers(response):
    """On every answer under /console, its error pages and static files included."""
    if request.path == bp.url_prefix or request.path.startswith(bp.url_prefix + "/"):
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        gateway = current_app.config.get("HOKUSAI_GATEWAY_PUBLIC_URL")
        if gateway and request.endpoint == "console.login":
            # The sign-in's form may go back to the MLflow UI on the gateway's own origin: Chromium
            # holds a form's redirect to form-action too.
            origin = "{0.scheme}://{0.netloc}".format(urlsplit(gateway))
            response.headers["Content-Security-Policy"] = response.headers["Content-Security-Policy"].replace(
                "form-action 'self'", f"form-action 'self' {origin}")
        if not request.path.startswith(bp.url_prefix + "/static/"):
            response.headers["Cache-Control"] = "no-store"
    return response
