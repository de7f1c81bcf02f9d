"""Signing in with an API key. The session holds the key's id, name and scopes, never the key;
every page checks again (one SELECT by key id) that the key is neither revoked nor expired."""

from __future__ import annotations

import time

from flask import abort, current_app, flash, g, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.db.errors import guarded
from hokusai_mlflow_plugin.operations.overview import key_in_force
from webhook_app.access import SELF, Decisions
from webhook_app.console.blueprint import bp, csrf

#: the console's decisions (``webhook_app.access``); a page missing here is refused
ACCESS = Decisions()
needs, public = ACCESS.needs, ACCESS.public
LIFETIME_SECONDS = 12 * 3600  # a session signs in again after this, even with a good key


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, Secure whenever the request came over https (behind a proxy, as
    ProxyFix reports it), so that one deployment serves http on a laptop and https in production."""

    def get_cookie_secure(self, app) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure)


@bp.before_request
def signed_in():
    """CSRF on every POST; then the page's access decision (``ACCESS``: none is a 403), and for all
    but the public ones a session whose key is still in force and holds the page's scope."""
    if request.method == "POST":
        csrf.protect()
    if request.endpoint in (None, "console.static"):
        return None  # no such page (Flask's 404), or our own CSS and JS
    access = ACCESS.of(request.endpoint)
    if access is None:
        abort(403, description=f"The page {request.path} has no access decision, so it is refused: this is a bug, report it.")
    if access.scope is None:
        return None
    key_id = session.get("key_id")
    if not key_id:
        return redirect(url_for("console.login", next=_here()))
    engine = current_app.extensions["hokusai"].reads

    def check():
        with engine.begin() as conn:
            return key_in_force(conn, key_id)

    caller = guarded(check)
    if caller is None or time.time() - session.get("at", 0) > LIFETIME_SECONDS:
        session.clear()
        flash(f"The session of key {key_id} has ended (the key was revoked or expired, or the session is old): sign in again.", "bad")
        return redirect(url_for("console.login", next=_here()))
    if not caller.allows(access.scope):
        abort(403, description=f"Your key {key_id} lacks the '{access.scope}' scope: sign in with a key created with --scope "
                               f"{access.scope}.")
    g.caller = caller
    return None


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    error, status = None, 200
    if request.method == "POST":
        engine = current_app.extensions["hokusai"].reads

        def check():
            with engine.begin() as conn:
                return keys.authenticate(conn, request.form.get("key", ""))

        try:
            caller = guarded(check)
        except keys.NotAuthenticated as e:
            error, status = str(e), 401
        else:
            session.clear()  # nothing of an earlier session survives a sign-in
            session.update(key_id=caller.key_id, name=caller.name, scopes=list(caller.scopes), at=int(time.time()))
            return redirect(_safe_next(request.form.get("next")))
    return render_template("console/login.html", error=error, next=request.values.get("next", "")), status


@bp.post("/logout")
@needs(keys.READ, SELF)
def logout():
    session.clear()
    flash("You are signed out.", "ok")
    return redirect(url_for("console.login"))


def _here() -> str:
    return request.full_path.rstrip("?") if request.method == "GET" else url_for("console.overview")


def _safe_next(target: str | None) -> str:
    """Only a console path of this site: never another host (an open redirect)."""
    if target and target.startswith(bp.url_prefix + "/") and "\\" not in target and not target.startswith("//"):
        return target
    return url_for("console.overview")
