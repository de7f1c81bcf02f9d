"""Signing in with an API key. A sign-in makes a session on the server (``auth.sessions``) whose
random id is the ``hokusai_session`` cookie: it opens the console and the MLflow UI through the
gateway, and every page reads it again (one SELECT), so that a sign-out, a revoked or expired key,
or the session's age ends it at the next page, wherever its cookie is replayed. Flask's own signed
cookie holds only what a page flashes and the CSRF token."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import abort, current_app, flash, g, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface

from hokusai_mlflow_plugin.auth import keys, sessions
from hokusai_mlflow_plugin.db.errors import guarded
from webhook_app.access import SELF, Decisions
from webhook_app.console.blueprint import bp, csrf

#: the console's decisions (``webhook_app.access``); a page missing here is refused
ACCESS = Decisions()
needs, public = ACCESS.needs, ACCESS.public
GATEWAY_PREFIX = "/mlflow"  # the MLflow UI through the gateway, when it shares the console's origin


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, Secure whenever the request came over https (behind a proxy, as
    ProxyFix reports it), so that one deployment serves http on a laptop and https in production."""

    def get_cookie_secure(self, app) -> bool:
        return _secure()


@bp.before_request
def signed_in():
    """CSRF on every POST; then the page's access decision (``ACCESS``: none is a 403), and for all
    but the public ones a session still in force whose key holds the page's scope."""
    if request.method == "POST":
        csrf.protect()
    if request.endpoint in (None, "console.static"):
        return None  # no such page (Flask's 404), or our own CSS and JS
    access = ACCESS.of(request.endpoint)
    if access is None:
        abort(403, description=f"The page {request.path} has no access decision, so it is refused: this is a bug, report it.")
    if access.scope is None:
        return None
    session_id = request.cookies.get(sessions.COOKIE)
    if not session_id:
        return redirect(url_for("console.login", next=_here()))
    engine = current_app.extensions["hokusai"].reads

    def check():
        with engine.begin() as conn:
            return sessions.lookup(conn, session_id)

    caller = guarded(check)
    if caller is None:
        session.clear()
        flash("Your session has ended (you signed out, its key was revoked or expired, or it is 12 hours old): "
              "sign in again.", "bad")
        return _without_session(redirect(url_for("console.login", next=_here())))
    if not caller.allows(access.scope):
        abort(403, description=f"Your key {caller.key_id} lacks the '{access.scope}' scope: sign in with a key created with "
                               f"--scope {access.scope}.")
    g.caller = caller
    return None


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    error, status = None, 200
    if request.method == "POST":
        service = current_app.extensions["hokusai"]

        def check():
            with service.reads.begin() as conn:
                return keys.authenticate(conn, request.form.get("key", ""))

        def open_session(caller):
            with service.sessions.begin() as s:
                return sessions.create(s, caller)

        try:
            caller = guarded(check)
        except keys.NotAuthenticated as e:
            error, status = str(e), 401
        else:
            session_id = guarded(open_session, caller)
            session.clear()  # nothing of an earlier session survives a sign-in (its CSRF token included)
            response = redirect(safe_next(request.form.get("next")))
            response.set_cookie(sessions.COOKIE, session_id, path="/", secure=_secure(), httponly=True, samesite="Lax")
            return response
    back = request.values.get("next", "")
    to_ui = bool(back) and not back.startswith(bp.url_prefix) and safe_next(back) == back  # the MLflow UI's sign-in
    return render_template("console/login.html", error=error, next=back, to_ui=to_ui), status


@bp.post("/logout")
@needs(keys.READ, SELF)
def logout():
    service = current_app.extensions["hokusai"]

    def end():
        with service.sessions.begin() as s:
            sessions.end(s, request.cookies.get(sessions.COOKIE))

    guarded(end)
    session.clear()
    flash("You are signed out.", "ok")
    return _without_session(redirect(url_for("console.login")))


def _without_session(response):
    response.delete_cookie(sessions.COOKIE, path="/", secure=_secure(), httponly=True, samesite="Lax")
    return response


def _secure() -> bool:
    return bool(current_app.config["SESSION_COOKIE_SECURE"] or request.is_secure)


def _here() -> str:
    return request.full_path.rstrip("?") if request.method == "GET" else url_for("console.overview")


def safe_next(target: str | None) -> str:
    """Where a sign-in goes back to: a console page, the MLflow UI through the gateway on this
    origin (``/mlflow/...``), or under the gateway's public URL (``HOKUSAI_GATEWAY_PUBLIC_URL``,
    when it has an origin of its own). Anything else (another host: an open redirect) is the
    overview."""
    fallback = url_for("console.overview")
    if not target or any(c in target for c in "\\\r\n\t ") or any(ord(c) < 32 for c in target):
        return fallback
    parts = urlsplit(target)
    if not parts.scheme and not parts.netloc and not target.startswith("//"):
        return target if _under(parts.path, bp.url_prefix) or _under(parts.path, GATEWAY_PREFIX) else fallback
    gateway = current_app.config.get("HOKUSAI_GATEWAY_PUBLIC_URL")
    if not gateway:
        return fallback
    public = urlsplit(gateway.rstrip("/"))
    same_origin = (parts.scheme.lower(), (parts.netloc or "").lower()) == (public.scheme.lower(), public.netloc.lower())
    if same_origin and "@" not in parts.netloc and _under(parts.path, public.path or "/"):
        return target
    return fallback


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/") or (not prefix and path.startswith("/"))
