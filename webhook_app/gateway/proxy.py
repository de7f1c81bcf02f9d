"""One request through the gateway: the key and its scope, the rate limit, then MLflow.

The request goes on without the key, cookies and hop-by-hop headers (RFC 9110 section 7.6.1),
with ``X-Forwarded-*``; bodies stream both ways in constant memory (aiohttp's flow control: a
slow side pauses the other), Content-Length kept as it came. A run created through the gateway
is made by the key's name (``mlflow.user``), and who made each run and logged model is recorded
before MLflow's answer goes back (``makers``). The tags that are the system's word (a version's
``hokusai_status`` and ``hokusai_reason``, a run's ``mlflow.user``) are written by no key: the few
small bodies that may carry them are read whole and judged (``scopes.route_of``).
"""

from __future__ import annotations

import json
import logging
from urllib.parse import quote, unquote, urlencode

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, MultiDict
from yarl import URL

from hokusai_mlflow_plugin.auth import keys, mlflow_objects
from hokusai_mlflow_plugin.auth.key_check import KeyCheck
from hokusai_mlflow_plugin.config import redact_url
from hokusai_mlflow_plugin.core.errors import UNAUTHORIZED, HokusaiError
from hokusai_mlflow_plugin.db.models import EXPERIMENT as OWNED_EXPERIMENT
from hokusai_mlflow_plugin.db.models import MADE_RUN
from hokusai_mlflow_plugin.db.models import REGISTERED_MODEL as OWNED_MODEL
from webhook_app import problem_details
import webhook_app.gateway.graphql as graphql
from webhook_app.gateway.judge import Request, judge, read_whole, stamp_owner
from webhook_app.gateway.makers import MakerRecord, made_experiment, made_id
from webhook_app.gateway.metrics import ACCESS, upstream_trace
from webhook_app.gateway.owners import Owners
from webhook_app.gateway.rate_limit import RateLimit
from webhook_app.gateway.scopes import (
    ARTIFACT,
    EXPERIMENT,
    GET_BY_NAME,
    GRAPHQL,
    MODEL_OWNER_TAGS,
    READS,
    REFUSED,
    REGISTERED_MODEL,
    RUN_MAKER_TAGS,
    VERSION_OUTCOME_TAGS,
    WRITES,
    Route,
    access_of,
    as_mlflow_reads,
    refused_tag,
    route_of,
)
from webhook_app.gateway.signin import SignIn, forwarded_headers

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
WHOLE = 16 * 1024 * 1024  # the most of a judged body read whole (a full log-batch is about 1 MiB)


class Gateway:
    """What every request shares: the pool of kept-alive connections to MLflow, the key check,
    the rate limit, the record of makers and the settings."""

    def __init__(self, internal_uri: str, key_check: KeyCheck, rate_limit: RateLimit, connect_timeout: float,
                 read_timeout: float, makers: MakerRecord, owners: Owners):
        self.internal = internal_uri.rstrip("/")
        self.key_check = key_check
        self.rate_limit = rate_limit
        self.makers = makers
        self.owners = owners
        self.ownership = False  # whether MLflow's objects are judged by their owners (create_app)
        self.signin: SignIn | None = None  # people's session cookies, for the MLflow UI (create_app)
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
            timeout=self.timeout, auto_decompress=False, read_bufsize=CHUNK, trace_configs=[upstream_trace()],
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
    found = access_of(request.method, path)
    access, params = found if found is not None else (None, {})
    request[ACCESS] = access
    caller = None
    scope = access.scope if access is not None else keys.READ
    if scope is not None:
        caller = await _authorize(request, gateway, scope)
        if isinstance(caller, web.Response):
            return caller
    if access is None:
        # Default deny: a route the gateway has not classified is not served (scopes.access_of).
        return problem(404, f"{request.method} /{path} is not an MLflow route that the gateway serves.")
    if access.need == REFUSED:
        return problem(403, f"{request.method} /{path} is not served through the gateway, to any key.")
    headers = _headers_out(request)
    forwarded_headers(request, headers)
    route = route_of(path) if caller is not None else None
    judged = gateway.ownership and caller is not None and access.need in (READS, WRITES) and not mlflow_objects.is_admin(caller)
    renames = path.rstrip("/").endswith("registered-models/rename")
    records = gateway.ownership and caller is not None and (access.creates is not None or renames)
    in_body = request.method not in ("GET", "HEAD")
    query = request.rel_url.raw_query_string
    if judged and access.search == GRAPHQL:  # each field judged as its REST route
        try:
            return await graphql.answer(gateway, caller, request, headers,
                                        URL(gateway.internal + raw_tail + (f"?{query}" if query else ""), encoded=True))
        except TimeoutError:
            return _timed_out()
        except aiohttp.ClientError as e:
            return _unreachable(request, gateway, e)
    payload = None
    if in_body and (route is not None or records or (judged and _body_names(access, params))):
        data = await _judged_body(request, route, caller, headers)
        if isinstance(data, web.Response):
            return data
        payload = as_mlflow_reads(data or b"")
    else:
        data = _stream(request, headers)
    if judged:
        req = Request(payload, MultiDict(request.rel_url.query), params, in_body)
        refusal = await judge(gateway, caller, access, req)
        if isinstance(refusal, HokusaiError):
            return _refused(refusal)
        if refusal is not None:
            return refusal
        if req.changed_body:
            payload = req.payload
            data = json.dumps(payload).encode()
            headers["Content-Length"] = str(len(data))
        if req.changed_query:
            query = urlencode(list(req.query.items()), quote_via=quote)
    by_name = judged and access.search == GET_BY_NAME
    if records or by_name:
        headers["Accept-Encoding"] = "identity"  # the answer is read
    url = URL(gateway.internal + raw_tail + (f"?{query}" if query else ""), encoded=True)
    try:
        upstream = await gateway.session.request(request.method, url, data=data, headers=headers, allow_redirects=False)
    except TimeoutError:
        return _timed_out()
    except aiohttp.ClientError as e:
        return _unreachable(request, gateway, e)
    try:
        if route is not None and route.makes and request.method == "POST" and upstream.status == 200:
            return await _recorded(request, upstream, gateway, route, caller)
        if (records or by_name) and upstream.status == 200:
            return await _owned(request, upstream, gateway, access, caller, payload, renames)
        return await _answer(request, upstream, gateway.internal)
    except TimeoutError:
        return _timed_out()
    except aiohttp.ClientError as e:
        return _unreachable(request, gateway, e)
    finally:
        upstream.release()


async def _authorize(request: web.Request, gateway: Gateway, scope: str) -> keys.Caller | web.Response:
    """The caller, or the answer that refuses the request. A good key counts against its own
    limit; a refused one against its address's (which never holds up a good key from there, as
    all of a proxy's or a NAT's users share one address): nobody spends another key's limit by
    naming its (public) id. Without an ``Authorization`` header, a person's session cookie
    (``signin``) names the caller, or sends a page load to the sign-in."""
    try:
        caller = None
        if "Authorization" not in request.headers and gateway.signin is not None:
            caller = await gateway.signin.caller(request, unquote(request.rel_url.raw_path[len(PREFIX):]).lstrip("/"), PREFIX)
            if isinstance(caller, web.Response):
                return caller
        caller = caller or await gateway.key_check.caller(keys.bearer(request.headers.get("Authorization")))
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
    except (TimeoutError, aiohttp.ClientError) as e:
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


def _stream(request: web.Request, headers: CIMultiDict):
    """The request body to send on as it comes (constant memory), with its length as it came."""
    if not request.body_exists:
        return None
    if request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    return request.content


async def _judged_body(request: web.Request, route: Route | None, caller: keys.Caller, headers: CIMultiDict):
    """The body of a request that ``route`` judges, read whole: the 403 that refuses a write of
    the system's tags (nothing forwarded), else the bytes to send on, a run's creation with the
    key's name as its user."""
    raw = b""
    if request.body_exists:
        raw = await read_whole(request, WHOLE)
        if raw is None:
            return problem(413, f"The body is larger than {WHOLE // (1024 * 1024)} MiB: send it in smaller batches.")
    payload = as_mlflow_reads(raw)
    if route is None:
        return raw if request.body_exists else None
    tag = refused_tag(route, payload, request.rel_url.query.getall("key", []))
    if tag is not None:
        return problem(403, _TAG_REFUSALS[route.protected].format(tag=tag, of=route.of))
    if route.stamps_user and isinstance(payload, dict) and isinstance(payload.get("tags") or [], list):
        user = caller.name
        payload["user_id"] = user
        run_tags = [t for t in payload.get("tags") or [] if isinstance(t, dict) and not _is_run_maker(t.get("key"))]
        payload["tags"] = [*run_tags, {"key": "mlflow.user", "value": user}]
        raw = json.dumps(payload).encode()
    if route.makes:
        headers["Accept-Encoding"] = "identity"  # the answer is read for the new object's id
    if not request.body_exists:
        return None
    headers["Content-Length"] = str(len(raw))
    return raw


def _is_run_maker(key) -> bool:
    return isinstance(key, str) and key.strip().lower() in RUN_MAKER_TAGS


_TAG_REFUSALS = {
    VERSION_OUTCOME_TAGS: "The tag '{tag}' of {of} is the outcome of its registration, written by Hokusai alone: "
                          "no key may set or delete it. Leave it out of the request.",
    RUN_MAKER_TAGS: "The tag '{tag}' of {of} names who made it, set by the gateway from the key that created the run: "
                    "no key may change or delete it. Leave it out of the request.",
    MODEL_OWNER_TAGS: "The tag '{tag}' of {of} names its owner, set by the gateway when the model is made: no key may "
                      "set or delete it. Leave it out of the request (hokusai mlflow share gives others access).",
}


async def _recorded(request: web.Request, upstream: aiohttp.ClientResponse, gateway: Gateway, route: Route,
                    caller: keys.Caller) -> web.Response:
    """MLflow's 200 answer to a run's or a logged model's creation, once its maker is recorded."""
    answer = await upstream.read()
    object_id = made_id(route, answer)
    what = "run" if route.makes == MADE_RUN else "logged model"
    if object_id is None:
        # An answer without the id is one no client can use either (MLflow's reads the id from it):
        # there is nothing to attribute, so it goes on as it came.
        _logger.warning("gateway: MLflow's answer to %s %s named no %s id; no maker recorded",
                        request.method, request.rel_url.path, what)
    else:
        try:
            experiment = made_experiment(route, answer)
            await gateway.makers.record(route.makes, object_id, caller, experiment)
            if experiment is not None:
                gateway.owners.learn(route.makes, object_id, experiment)
        except Exception as e:  # noqa: BLE001 - every failure to record is the one answer below
            # The object exists in MLflow, but nobody is credited with it. Passing MLflow's answer on
            # would leave the client training on an object that counts for no token where provenance
            # is required (found out only at registration, far from the cause) and, where it is open,
            # for any token at all. So the client hears it now: MLflow's client retries a 503 by
            # itself, and the retry makes a new object, recorded once the database is back. What is
            # left behind is an orphan that nobody is credited with.
            _logger.error("gateway: the maker of %s %s could not be recorded (%s)", what, object_id, type(e).__name__)
            return problem(503, f"The {what} {object_id} was created in MLflow, but who made it could not be recorded "
                                "(the token database is unavailable): it is unattributed, and counts for no token where "
                                "provenance is required. Try again in a moment: a new one will be made.",
                           {"Retry-After": problem_details.RETRY_AFTER})
    return web.Response(status=upstream.status, reason=upstream.reason,
                        headers=_headers_back(request, upstream, gateway.internal), body=answer)


async def _owned(request: web.Request, upstream: aiohttp.ClientResponse, gateway: Gateway, access, caller: keys.Caller,
                 payload, renames: bool) -> web.Response:
    """MLflow's 200 answer to what makes or renames an owned object (its owner recorded first), or
    to an experiment's read by name (a 404 for one the caller may not see, as for a missing one)."""
    answer = await upstream.read()
    body = as_mlflow_reads(answer)
    body = body if isinstance(body, dict) else {}
    payload = payload if isinstance(payload, dict) else {}
    try:
        if access.creates == EXPERIMENT and body.get("experiment_id"):
            await gateway.owners.record_owner(OWNED_EXPERIMENT, str(body["experiment_id"]), caller)
        elif access.creates == REGISTERED_MODEL and isinstance(payload.get("name"), str):
            await stamp_owner(gateway, payload["name"], await gateway.owners.record_owner(OWNED_MODEL, payload["name"], caller))
        elif renames and isinstance(payload.get("name"), str) and isinstance(payload.get("new_name"), str):
            await gateway.owners.rename(OWNED_MODEL, payload["name"], payload["new_name"])
        elif access.search == GET_BY_NAME:
            found = (body.get("experiment") or {}).get("experiment_id") if isinstance(body.get("experiment"), dict) else None
            have = await gateway.owners.right(caller, OWNED_EXPERIMENT, str(found)) if found is not None else mlflow_objects.NONE
            if have == mlflow_objects.NONE:
                return refused(mlflow_objects.hidden(OWNED_EXPERIMENT, str(request.rel_url.query.get("experiment_name", ""))))
    except HokusaiError as e:
        return refused(e)
    except Exception as e:  # noqa: BLE001 - the owner could not be written: the client hears it now
        _logger.error("gateway: the owner of what %s %s made could not be recorded (%s)", request.method,
                      request.rel_url.path, type(e).__name__)
        return problem(503, "The object was made in MLflow, but its owner could not be recorded (the token database is "
                            "unavailable): only an operator can reach it. Try again in a moment with another name.",
                       {"Retry-After": problem_details.RETRY_AFTER})
    return web.Response(status=upstream.status, reason=upstream.reason,
                        headers=_headers_back(request, upstream, gateway.internal), body=answer)


def _body_names(access, params: dict) -> bool:
    """Whether the request's body names what it is judged by (not its path alone)."""
    if access.search or access.creates or access.default or access.judges_source or access.links:
        return True
    return any(kind != ARTIFACT and not all(f in params for f in fields) for kind, fields in access.subjects)


def refused(error: HokusaiError) -> web.Response:
    return _refused(error)


def _end_to_end(headers, dropped: frozenset) -> CIMultiDict:
    """``headers`` without ``dropped`` and without those their ``Connection`` header names."""
    named = {h.strip().lower() for h in headers.get("Connection", "").split(",")}
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in dropped and k.lower() not in named)


def _public(request: web.Request) -> tuple[str, str]:
    """The scheme and host the client used: a trusted proxy in front of the gateway says them
    (``forwarded``; anyone else's ``X-Forwarded-*`` is dropped before this)."""
    return request.scheme, request.host


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
    body = problem_details.with_mlflow_error(status, body)  # what MLflow's UI and clients show
    return web.json_response(body, status=status, headers=headers, content_type=problem_details.MEDIA_TYPE)
