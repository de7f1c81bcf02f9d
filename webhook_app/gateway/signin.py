"""People in the MLflow UI through the gateway: the console's session cookie in place of a bearer
key (a browser cannot send one), a page load with no session sent to the sign-in and back, and
CSRF for what a cookie sends.

- A request with an ``Authorization`` header is a program's: the cookie plays no part in it.
- Without one, the ``hokusai_session`` cookie (``auth.sessions``) is read on every request, so a
  sign-out, a revoked or expired key or the session's age ends it at its next request.
- A page load (a ``GET`` outside ``api/``, ``ajax-api/`` and ``graphql``) with no session in force
  is redirected to the console's sign-in, whose ``next`` brings the person back; the UI's own
  calls get the 401 problem.
- MLflow's API has no CSRF protection of its own: a cookie's unsafe request (POST, PUT, PATCH,
  DELETE) must come with an ``Origin`` (or, lacking one, a ``Referer``) of the gateway's public
  origin, or it is refused (403). MLflow is then sent no ``Origin``: the gateway has judged it,
  and MLflow's own check would refuse a public origin it does not know.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from aiohttp import web
from sqlalchemy.exc import DBAPIError

from hokusai_mlflow_plugin.auth import sessions
from hokusai_mlflow_plugin.auth.keys import Caller, NotAuthenticated
from hokusai_mlflow_plugin.core.errors import DatabaseUnavailable
from hokusai_mlflow_plugin.db.errors import guarded
from hokusai_mlflow_plugin.db.session import get_engine, read_engine
from hokusai_mlflow_plugin.monitoring import GATEWAY_SESSION_SIGNINS
from webhook_app import problem_details

SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
API_HEADS = ("api", "ajax-api", "graphql")  # what the UI calls: a 401 without a session, never a redirect
CHECK_TIMEOUT = 5.0  # seconds for one session's read: past it the request is a 503
FROM_SESSION = web.RequestKey("hokusai_from_session", bool)  # set on a request let in by its cookie
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass
class SignIn:
    """``database_url``: the token database the sessions are in. ``console_url``: where people sign
    in, ``/console`` on the gateway's own origin (one ingress) or a URL of its own
    (``HOKUSAI_CONSOLE_URL``). ``public_url``: the gateway's URL as browsers reach it
    (``HOKUSAI_GATEWAY_PUBLIC_URL``); without it, the request's own scheme and host (which only
    a trusted proxy may change)."""

    database_url: str
    console_url: str = "/console"
    public_url: str | None = None

    def __post_init__(self):
        self.console_url = self.console_url.rstrip("/")
        self._engine = read_engine(get_engine(self.database_url))

    async def caller(self, request: web.Request, path: str, prefix: str) -> Caller | web.Response | None:
        """Who a request without an ``Authorization`` header is: the caller its session names, the
        answer that refuses it (to the sign-in, or the 403 of a cross-site write), or None when it
        has no cookie and is no page load (the bearer rules then answer it: 401)."""
        session_id = request.cookies.get(sessions.COOKIE)
        page = request.method in ("GET", "HEAD") and path.split("/", 1)[0] not in API_HEADS
        if not session_id:
            return self.to_sign_in(request, prefix) if page else None
        caller = await self._lookup(session_id)
        if caller is None:
            GATEWAY_SESSION_SIGNINS.labels("refused").inc()
            if page:
                response = self.to_sign_in(request, prefix)
                response.del_cookie(sessions.COOKIE, path="/")
                return response
            raise NotAuthenticated("Your session has ended (you signed out, its key was revoked or expired, or it is 12 hours "
                                   f"old): sign in again at {self.console_url}/login.")
        if request.method not in SAFE:
            refusal = self.cross_site(request)
            if refusal is not None:
                return refusal
        if page and path.strip("/") == "":
            GATEWAY_SESSION_SIGNINS.labels("signed_in").inc()  # the UI opened by a session
        request[FROM_SESSION] = True
        return caller

    def origin(self, request: web.Request) -> str:
        """The gateway's public origin, as browsers write it in ``Origin``."""
        if self.public_url:
            parts = urlsplit(self.public_url)
            return _origin(parts.scheme, parts.netloc)
        return _origin(request.scheme, request.host)

    def cross_site(self, request: web.Request) -> web.Response | None:
        """The 403 of a cookie's unsafe request whose ``Origin`` (or ``Referer``) is not ours."""
        sent = request.headers.get("Origin")
        if sent is None and (referer := request.headers.get("Referer")):
            parts = urlsplit(referer)
            sent = _origin(parts.scheme, parts.netloc) if parts.scheme and parts.netloc else "a malformed Referer"
        if sent is not None and sent.lower() != "null" and _normal(sent) == self.origin(request):
            return None
        said = f"from {sent}" if sent else "with neither Origin nor Referer"
        return _problem(403, f"A request signed in by the session cookie that changes something must come from the MLflow UI "
                            f"at {self.origin(request)}; this one came {said}, so it was refused (CSRF). Programs send "
                            "'Authorization: Bearer hk_...' instead of the cookie.")

    def to_sign_in(self, request: web.Request, prefix: str) -> web.Response:
        """302 to the console's sign-in, whose ``next`` is this page (on the gateway's public
        origin when the console has one of its own)."""
        here = request.rel_url.raw_path + (f"?{request.rel_url.raw_query_string}" if request.rel_url.raw_query_string else "")
        if not here.startswith(prefix + "/"):
            here = prefix + "/"
        back = here if self.console_url.startswith("/") else self.origin(request) + here
        response = web.Response(status=302, headers={"Location": f"{self.console_url}/login?next={quote(back, safe='/')}",
                                                     "Cache-Control": "no-store"})
        return response

    async def _lookup(self, session_id: str) -> Caller | None:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(None, guarded, self._read, session_id), CHECK_TIMEOUT)
        except TimeoutError:
            raise DatabaseUnavailable(f"The token database did not answer within {CHECK_TIMEOUT:g} s") from None

    def _read(self, session_id: str) -> Caller | None:
        for attempt in (1, 2):
            try:
                with self._engine.begin() as conn:
                    return sessions.lookup(conn, session_id)
            except DBAPIError as e:
                # A pooled connection that died while idle (a database restart): SQLAlchemy has
                # dropped the pool, and a new connection is made once.
                if attempt == 2 or not e.connection_invalidated:
                    raise
        return None


def forwarded_headers(request: web.Request, headers) -> None:
    """What MLflow is sent of a request let in by its session: no ``Origin``, which the gateway
    has checked (MLflow's own check knows only localhost origins, not the public one)."""
    if request.get(FROM_SESSION):
        headers.pop("Origin", None)


async def with_slash(request: web.Request) -> web.Response:
    """``/mlflow`` -> ``/mlflow/``: the UI's relative links need the slash."""
    query = request.rel_url.raw_query_string
    raise web.HTTPFound(request.rel_url.raw_path + "/" + (f"?{query}" if query else ""))


def _problem(status: int, detail: str) -> web.Response:
    return web.json_response(problem_details.with_mlflow_error(status, problem_details.problem_body(status, detail)),
                             status=status, content_type=problem_details.MEDIA_TYPE)


def _origin(scheme: str, netloc: str) -> str:
    return _normal(f"{scheme}://{netloc}")


def _normal(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, without the scheme's default port."""
    parts = urlsplit(origin.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return origin
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != DEFAULT_PORTS.get(scheme) else "")
