"""The gateway's Prometheus metrics: every answer counted by its route class and status (a
middleware), MLflow's time to answer (a trace of the client session to MLflow), and ``/metrics``.

The counters live in ``hokusai_mlflow_plugin.monitoring`` (names ``hokusai_gateway_*``); under
gunicorn with ``PROMETHEUS_MULTIPROC_DIR`` set, ``/metrics`` adds up every worker's, as the
receiver's does.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from hokusai_mlflow_plugin.auth.keys import READ, REGISTER
from hokusai_mlflow_plugin.monitoring import (
    GATEWAY_REQUESTS,
    GATEWAY_UPSTREAM_RESPONSES,
    GATEWAY_UPSTREAM_SECONDS,
    exposition,
)
from webhook_app.gateway.scopes import REFUSED, Access

# Set by the proxy once it has classified the request (scopes.access_of); None: not classified.
ACCESS = web.RequestKey("hokusai_access", object)
PROBES = frozenset({"/health", "/metrics"})  # the platform's, not the clients': not counted
UNCLASSIFIED = "unclassified"


def route_class(access: Access | None) -> str:
    """public, read, write, admin, refused, or unclassified (no route of MLflow's the gateway knows)."""
    if access is None:
        return UNCLASSIFIED
    if access.need == REFUSED:
        return "refused"
    return {None: "public", READ: "read", REGISTER: "write"}.get(access.scope, "admin")


@web.middleware
async def count_requests(request: web.Request, handler):
    if request.path in PROBES:
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as e:  # aiohttp's own answers (an unknown path, a method not allowed)
        count_answer(route_class(request.get(ACCESS)), e.status)
        raise
    except Exception:  # aiohttp answers it with a 500
        count_answer(route_class(request.get(ACCESS)), 500)
        raise
    count_answer(route_class(request.get(ACCESS)), response.status)
    return response


def count_answer(route: str, status: int) -> None:
    # The labelled counters kept by their labels: labels() takes a lock and builds its key each time.
    counter = _REQUESTS.get((route, status))
    if counter is None:
        counter = _REQUESTS.setdefault((route, status), GATEWAY_REQUESTS.labels(route, str(status)))
    counter.inc()


_REQUESTS: dict = {}
_UPSTREAM: dict = {}


def upstream_trace() -> aiohttp.TraceConfig:
    """For the client session to MLflow: each request's time to MLflow's status and headers, and
    its status (or why none came)."""
    trace = aiohttp.TraceConfig()

    async def started(session, context, params) -> None:
        context.started = time.perf_counter()

    async def answered(session, context, params) -> None:
        GATEWAY_UPSTREAM_SECONDS.observe(time.perf_counter() - context.started)
        status = params.response.status
        counter = _UPSTREAM.get(status)
        if counter is None:
            counter = _UPSTREAM.setdefault(status, GATEWAY_UPSTREAM_RESPONSES.labels(str(status)))
        counter.inc()

    async def failed(session, context, params) -> None:
        if isinstance(params.exception, asyncio.CancelledError):
            return  # the client left: MLflow did not fail
        GATEWAY_UPSTREAM_RESPONSES.labels("timeout" if isinstance(params.exception, TimeoutError) else "unreachable").inc()

    trace.on_request_start.append(started)
    trace.on_request_end.append(answered)
    trace.on_request_exception.append(failed)
    return trace


async def serve(request: web.Request) -> web.Response:
    """Prometheus' text format: the counters of every worker (read off the event loop: in
    multiprocess mode they are files)."""
    body = await asyncio.get_running_loop().run_in_executor(None, exposition)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
