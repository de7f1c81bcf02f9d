"""One request through the gateway: the key and its scope, the rate limit, then MLflow.

The request goes on without the key, cookies and hop-by-hop headers (RFC 9110 section 7.6.1),
with ``X-Forwarded-*``; bodies stream both ways in constant memory (aiohttp's flow control: a
slow side pauses the other), Content-Length kept as it came. A run created through the gateway
is made by the key's name (``mlflow.user``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

import webhook_app.problem_details as problem_details
from hokusai_mlflow_plugin.auth import keys
from hokusai_mlflow_plugin.auth.key_check import KeyCheck
from hokusai_mlflow_plugin.config import redact_url
from hokusai_mlflow_plugin.core.errors import UNAUTHORIZED, HokusaiError
from webhook_app.gateway.rate_limit import RateLimit
from webhook_app.gateway.scopes import RUN_CREATE, scope_of

_logger = logging.getLogger(__name__)

PREFIX = "/mlflow"
CHUNK = 1024 * 1024  # large reads and writes: the artifact throughput follows the chunk size
SMALL = 256 * 1024  # answers up to this size are read whole and written in one piece
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "proxy-connection"})
# Plus what the gateway sets itself (the length is put back as it came, below).
NOT_FORWARDED = HOP_BY_HOP | {"authorization", "cookie", "host", "content-length", "x-forwarded-for",
                              "x-forwarded-proto", "x-forwarded-host"}
NOT_RETURNED = HOP_BY_HOP | {"set-cookie", "content-length"}
NO_BODY = frozenset({204, 304})


class Gateway:
    """What every request shares: the pool of kept-alive connections to MLflow, the key check,
    the rate limit and the settings."""

    def __init__(self, internal_uri: str, key_check: KeyCheck, rate_limit: RateLimit, connect_timeout: float, read_timeout: float):
        self.internal = internal_uri.rstrip("/")
        self.key_check = key_check
        self.rate_limit = rate_limit
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
            timeout=self.timeout, auto_decompress=False, read_bufsize=CHUNK,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        await self.rate_limit.close()
        await self.key_check.close()


GATEWAY = web.AppKey("gateway", Gateway)


async def forward(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    raw = request.rel_url.raw_path
    if not (raw == PREFIX or raw.startswith(PREFIX + "/")):
        return problem(400, f"The path must start with {PREFIX}/ as written, not escaped.")
    raw_tail = raw[len(PREFIX):]
    # The scope is judged on the path as MLflow will read it (decoded once), and the path goes on
    # exactly as it came: a path escaped to look like another (delete%3F/search) names to MLflow
    # what it names to the scope rules.
    path = unquote(raw_tail)[1:]
    if any(segment in (".", "..") for segment in path.split("/")):
        return problem(400, "The path has '.' or '..' segments: send the path of the MLflow resource itself.")
    caller = None
    scope = scope_of(request.method, path)
    if scope is not None:
        caller = await _authorize(request, gateway, scope)
        if isinstance(caller, web.Response):
            return caller
    headers = _headers_out(request)
    data = await _body(request, path, caller, headers)
    query = request.rel_url.raw_query_string
    url = URL(gateway.internal + raw_tail + (f"?{query}" if query else ""), encoded=True)
    try:
        upstream = await gateway.session.request(request.method, url, data=data, headers=headers, allow_redirects=False)
    except asyncio.TimeoutError:
        return _timed_out()
    except aiohttp.ClientError as e:
        return _unreachable(request, gateway, e)
    try:
        return await _answer(request, upstream, gateway.internal)
    except asyncio.TimeoutError:
        return _timed_out()
    except aiohttp.ClientError as e:
        return _unreachable(request, gateway, e)
    finally:
        upstream.release()


async def _authorize(request: web.Request, gateway: Gateway, scope: str) -> keys.Caller | web.Response:
    """The caller, or the answer that refuses the request. A good key counts against its own
    limit; a refused one against its address's (which never holds up a good key from there, as
    all of a proxy's or a NAT's users share one address): nobody spends another key's limit by
    naming its (public) id."""
    try:
        caller = await gateway.key_check.caller(keys.bearer(request.headers.get("Authorization")))
    except HokusaiError as e:
        if e.kind == UNAUTHORIZED and (wait := await gateway.rate_limit.retry_after(f"addr:{request.remote}")) is not None:
            return problem(429, f"Too many refused keys from this address: retry after {wait} s.", {"Retry-After": str(wait)})
        return _refused(e)
    if (wait := await gateway.rate_limit.retry_after(f"key:{caller.key_id}")) is not None:
        return problem(429, f"Rate limit of {gateway.rate_limit.rate} for this key: retry after {wait} s.", {"Retry-After": str(wait)})
    try:
        keys.require(caller, scope)
    except HokusaiError as e:
        return _refused(e)
    return caller


async def _answer(request: web.Request, upstream: aiohttp.ClientResponse, internal: str) -> web.StreamResponse:
    headers = _headers_back(request, upstream, internal)
    length = upstream.content_length
    if request.method == "HEAD" or upstream.status in NO_BODY:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        if length is not None:
            response.content_length = length
        await response.prepare(request)
        await response.write_eof()
        return response
    if length is not None and length <= SMALL:
        # An API answer: whole, in one write with its headers (no delayed ACK between them).
        return web.Response(status=upstream.status, reason=upstream.reason, headers=headers, body=await upstream.read())
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    if length is not None:
        response.content_length = length  # else chunked, as it came
    await response.prepare(request)
    try:
        async for chunk in upstream.content.iter_chunked(CHUNK):
            await response.write(chunk)
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        # The status is sent: the one honest answer left is a cut connection, never a short body
        # that looks whole (aiohttp's write_eof on the closed transport sends nothing more).
        _logger.warning("gateway: MLflow's answer to %s %s broke off (%s); the client's connection is closed",
                        request.method, request.rel_url.path, type(e).__name__)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


def _refused(error: HokusaiError) -> web.Response:
    return _problem_response(*problem_details.of_error(error))


def _timed_out() -> web.Response:
    return problem(504, "MLflow did not answer in time: try again, or raise HOKUSAI_GATEWAY_READ_TIMEOUT.",
                   {"Retry-After": problem_details.RETRY_AFTER})


def _unreachable(request: web.Request, gateway: Gateway, error: Exception) -> web.Response:
    if request.transport is None or request.transport.is_closing():
        _logger.info("gateway: the client left during %s %s", request.method, request.rel_url.path)
    else:
        _logger.warning("gateway: MLflow at %s is unreachable: %s", redact_url(gateway.internal), type(error).__name__)
    return problem(502, "MLflow is unreachable behind the gateway, or broke off its answer: try again shortly.",
                   {"Retry-After": problem_details.RETRY_AFTER})


async def _body(request: web.Request, path: str, caller: keys.Caller | None, headers: CIMultiDict):
    """The request body to send on: the stream itself (constant memory), except for a run's
    creation, whose JSON gets the key's name as its user."""
    if not request.body_exists:
        return None
    if path.strip("/") not in RUN_CREATE or caller is None:
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        return request.content
    raw = await request.read()
    try:
        payload = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        payload = None  # MLflow answers the malformed body itself
    if isinstance(payload, dict) and isinstance(payload.get("tags") or [], list):
        user = caller.name
        payload["user_id"] = user
        run_tags = [t for t in payload.get("tags") or [] if isinstance(t, dict) and t.get("key") != "mlflow.user"]
        payload["tags"] = [*run_tags, {"key": "mlflow.user", "value": user}]
        raw = json.dumps(payload).encode()
    headers["Content-Length"] = str(len(raw))
    return raw


def _end_to_end(headers, dropped: frozenset) -> CIMultiDict:
    """``headers`` without ``dropped`` and without those their ``Connection`` header names."""
    named = {h.strip().lower() for h in headers.get("Connection", "").split(",")}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in dropped and k.lower() not in named)


def _public(request: web.Request) -> tuple[str, str]:
    """The scheme and host the client used: a proxy in front of the gateway says them."""
    return request.headers.get("X-Forwarded-Proto", request.scheme), request.headers.get("X-Forwarded-Host", request.host)


def _headers_out(request: web.Request) -> CIMultiDict:
    """The request's headers for MLflow: without the key, cookies and hop-by-hop headers, with
    ``X-Forwarded-*``."""
    headers = _end_to_end(request.headers, NOT_FORWARDED)
    forwarded_for = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{forwarded_for}, {request.remote}" if forwarded_for else (request.remote or "")
    headers["X-Forwarded-Proto"], headers["X-Forwarded-Host"] = _public(request)
    return headers


def _headers_back(request: web.Request, upstream: aiohttp.ClientResponse, internal: str) -> CIMultiDict:
    headers = _end_to_end(upstream.headers, NOT_RETURNED)
    location = headers.get("Location")
    if location:  # a redirect to the internal server (absolute, or relative to it): to us instead
        inside = URL(internal + "/")
        target = inside.join(URL(location, encoded=True))
        if target.origin() == inside.origin() and target.raw_path.startswith(inside.raw_path):
            scheme, host = _public(request)
            rest = target.raw_path[len(inside.raw_path) - 1:] + (f"?{target.raw_query_string}" if target.raw_query_string else "")
            headers["Location"] = f"{scheme}://{host}{PREFIX}{rest}"
    return headers


def problem(status: int, detail: str, headers: dict | None = None) -> web.Response:
    return _problem_response(status, problem_details.problem_body(status, detail), headers)


def _problem_response(status: int, body: dict, headers: dict | None) -> web.Response:
    return web.json_response(body, status=status, headers=headers, content_type=problem_details.MEDIA_TYPE)
