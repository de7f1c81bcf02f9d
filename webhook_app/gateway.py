"""``/mlflow/<path>``: the authenticating gateway in front of the internal MLflow server.

Plain MLflow clients set ``MLFLOW_TRACKING_URI=https://<hokusai>/mlflow`` and
``MLFLOW_TRACKING_TOKEN=hk_...`` (sent as ``Authorization: Bearer``). Each request is checked
(the key, then the scope its method and path need), stripped of the key and any cookie, and
forwarded with ``X-Forwarded-*``; bodies stream both ways in constant memory, artifacts of any size
included. A run created through the gateway is made by the key's name (``mlflow.user``).
"""

from __future__ import annotations

import json
import logging
import time

import requests
import requests.adapters
from flask import Blueprint, Response, current_app, g, request, stream_with_context

from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.auth.keys import ADMIN, READ, REGISTER
from hokusai_mlflow_plugin.core.errors import HokusaiError
from webhook_app.api.auth import caller_of
from webhook_app.api.problems import of_error, problem

bp = Blueprint("gateway", __name__, url_prefix="/mlflow")
_logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024  # large reads and writes: the artifact throughput follows the chunk size
SMALL = 256 * 1024  # answers up to this size are passed on whole
PUBLIC = {"health", "version"}  # what a load balancer or `mlflow` asks before it has a key
# RFC 9110 section 7.6.1: meant for one connection, never forwarded; plus what the gateway sets itself.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "proxy-connection"}
NOT_FORWARDED = HOP_BY_HOP | {"authorization", "cookie", "host", "content-length", "x-forwarded-for",
                              "x-forwarded-proto", "x-forwarded-host"}
NOT_RETURNED = HOP_BY_HOP | {"set-cookie"}
RUN_CREATE = ("api/2.0/mlflow/runs/create", "ajax-api/2.0/mlflow/runs/create")


def scope_of(method: str, path: str) -> str | None:
    """The scope a request to MLflow needs: ``read`` for reads and searches, ``admin`` for webhooks
    and deleting registered models, ``register`` for every other write; None for public paths."""
    path = path.strip("/")
    if path in PUBLIC:
        return None
    if "/mlflow/webhooks" in f"/{path}" or (path.endswith("registered-models/delete")):
        return ADMIN
    if method in ("GET", "HEAD", "OPTIONS"):
        return READ
    if method == "POST" and (path.endswith("/search") or "/search-" in path or path.endswith("/get-history-bulk-interval")):
        return READ
    return REGISTER


@bp.route("/", defaults={"path": ""}, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@bp.route("/<path:path>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def forward(path: str):
    try:
        _authorize(request.method, path)
    except HokusaiError as e:
        return of_error(e)
    request.max_content_length = 2**63  # artifacts of any size: the body streams, it is never held
    body = _body(path)
    internal = current_app.config["HOKUSAI_MLFLOW_INTERNAL_URI"].rstrip("/")
    try:
        upstream = current_app.extensions["hokusai_gateway"].request(
            request.method, f"{internal}/{path}", params=request.query_string or None, data=body,
            headers=_headers_out(), stream=True, allow_redirects=False,
            timeout=(current_app.config["HOKUSAI_GATEWAY_CONNECT_TIMEOUT"], current_app.config["HOKUSAI_GATEWAY_READ_TIMEOUT"]),
        )
    except requests.Timeout:
        return problem(504, "MLflow did not answer in time: try again, or raise HOKUSAI_GATEWAY_READ_TIMEOUT.", headers={"Retry-After": "5"})
    except requests.RequestException as e:
        _logger.warning("gateway: MLflow at %s is unreachable: %s", internal, type(e).__name__)
        return problem(502, "MLflow is unreachable behind the gateway: try again shortly.", headers={"Retry-After": "5"})
    headers = _headers_back(upstream, internal)
    length = upstream.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) <= SMALL:
        # An API answer: whole, in one write (the HTTP server sends a streamed body's first chunk
        # apart from the headers, and small writes on loopback then wait on delayed ACKs).
        body = upstream.raw.read(decode_content=False)
        upstream.close()
        return Response(body, status=upstream.status_code, headers=headers)
    return Response(stream_with_context(_chunks(upstream)), status=upstream.status_code, headers=headers, direct_passthrough=True)


def _authorize(method: str, path: str) -> None:
    scope = scope_of(method, path)
    if scope is None:
        return
    g.caller = caller_of(request.headers.get("Authorization"))
    keys.require(g.caller, scope)


def _body(path: str):
    """The request body to send on: the stream itself (constant memory), except for a run's
    creation, whose JSON gets the key's name as its user."""
    if request.method in ("GET", "HEAD", "OPTIONS") and not request.content_length:
        return None
    if path.strip("/") not in RUN_CREATE or not getattr(g, "caller", None):
        return _Stream(request.stream, request.content_length)
    try:
        payload = json.loads(request.get_data() or b"{}")
    except ValueError:
        return request.get_data()  # MLflow answers the malformed body itself
    if isinstance(payload, dict):
        user = g.caller.name
        payload["user_id"] = user
        run_tags = [t for t in payload.get("tags") or [] if isinstance(t, dict) and t.get("key") != "mlflow.user"]
        payload["tags"] = [*run_tags, {"key": "mlflow.user", "value": user}]
    return json.dumps(payload).encode()


class _Stream:
    """The request body, read a chunk at a time as ``requests`` sends it. With a known length,
    ``requests`` sends it as Content-Length (its ``len``); without one, chunked."""

    def __init__(self, stream, length: int | None):
        self.stream, self.length = stream, length

    def __len__(self) -> int:
        return self.length or 0

    def __iter__(self):
        while chunk := self.stream.read(CHUNK):
            yield chunk


def _headers_out() -> dict:
    """The request's headers for MLflow: without the key, cookies and hop-by-hop headers (the
    body's length is set by ``requests``), with ``X-Forwarded-*``."""
    named = {h.strip().lower() for h in request.headers.get("Connection", "").split(",")}
    headers = {k: v for k, v in request.headers.items() if k.lower() not in NOT_FORWARDED and k.lower() not in named}
    forwarded_for = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{forwarded_for}, {request.remote_addr}" if forwarded_for else (request.remote_addr or "")
    headers["X-Forwarded-Proto"] = request.headers.get("X-Forwarded-Proto", request.scheme)
    headers["X-Forwarded-Host"] = request.headers.get("X-Forwarded-Host", request.host)
    return headers


def _headers_back(upstream: requests.Response, internal: str) -> list[tuple[str, str]]:
    named = {h.strip().lower() for h in upstream.headers.get("Connection", "").split(",")}
    headers = [(k, v) for k, v in upstream.raw.headers.items() if k.lower() not in NOT_RETURNED and k.lower() not in named]
    location = upstream.headers.get("Location")
    if location and location.startswith(internal):  # a redirect to the internal server: to us instead
        headers = [(k, v) for k, v in headers if k.lower() != "location"]
        headers.append(("Location", request.host_url.rstrip("/") + bp.url_prefix + location[len(internal):]))
    return headers


def _chunks(upstream: requests.Response):
    """The response body as it arrives, undecoded (its Content-Encoding goes back as it came)."""
    try:
        yield from upstream.raw.stream(CHUNK, decode_content=False)
    finally:
        upstream.close()


def rate_limit_key() -> str:
    """The rate limit's bucket: the key's public id (checked afterwards), else the address."""
    header = request.headers.get("Authorization", "")
    token = header.partition(" ")[2].strip()
    return "key:" + token[3:11] if token.startswith(keys.PREFIX) else f"addr:{request.remote_addr}"


def init_app(app) -> None:
    """The gateway and its per-key rate limit (Flask-Limiter; Redis storage when configured)."""
    from flask_limiter import Limiter
    from flask_limiter.errors import RateLimitExceeded

    settings = app.config["HOKUSAI_SETTINGS"]
    # One pool of kept-alive connections to MLflow per process: no TCP handshake per request. The
    # environment's proxy settings are not read per request (MLflow is an internal hop).
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64))
    session.mount("https://", requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64))
    app.extensions["hokusai_gateway"] = session
    limiter = Limiter(rate_limit_key, app=app, storage_uri=settings.redis_url or "memory://", headers_enabled=True,
                      default_limits=[], strategy="moving-window")
    limiter.limit(lambda: current_app.config["HOKUSAI_GATEWAY_RATE_LIMIT"])(bp)
    app.register_blueprint(bp)

    @app.errorhandler(RateLimitExceeded)
    def too_many(error):
        current = limiter.current_limit
        wait = max(1, int(current.reset_at - time.time())) if current else 1
        return problem(429, f"Rate limit of {error.description} for this key: retry after {wait} s.",
                       headers={"Retry-After": str(wait)})
