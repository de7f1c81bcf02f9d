"""Whose ``X-Forwarded-*`` headers the gateway believes: the configured proxies' only
(``HOKUSAI_TRUSTED_PROXIES``, empty by default).

From a trusted proxy, the request takes the scheme and host the client used (``request.scheme``,
``request.host``, ``request.secure``), which the redirects the gateway rewrites point to. From
anyone else, the forwarding headers are dropped before anything reads them: a client that makes up
``X-Forwarded-Host: evil.example`` cannot steer a redirect there, nor pass the header on to MLflow
(which believes the gateway's).
"""

from __future__ import annotations

import re

from aiohttp import web
from multidict import CIMultiDict

from webhook_app.proxies import FORWARDING, trusts

TRUSTED_PROXIES = web.AppKey("hokusai_trusted_proxies", tuple)
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


@web.middleware
async def believe_trusted_proxies(request: web.Request, handler):
    headers = request.headers
    if not any(name.lower() in FORWARDING for name in headers):
        return await handler(request)
    if not trusts(request.app[TRUSTED_PROXIES], request.remote):
        kept = CIMultiDict((name, value) for name, value in headers.items() if name.lower() not in FORWARDING)
        return await handler(request.clone(headers=kept))
    scheme, host = public(headers)
    return await handler(request.clone(scheme=scheme or request.scheme, host=host or request.host))


def public(headers) -> tuple[str | None, str | None]:
    """The scheme and host that a trusted proxy says the client used (the first proxy's, which met
    the client, where several are chained), each None when absent or not one."""
    scheme = headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower() or None
    host = headers.get("X-Forwarded-Host", "").split(",")[0].strip() or None
    return (scheme if scheme in ("http", "https") else None), (host if host and _HOST.fullmatch(host) else None)
