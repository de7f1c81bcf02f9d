"""Which peers are the proxies in front of Hokusai (``HOKUSAI_TRUSTED_PROXIES``), for both HTTP
processes: only their forwarding headers (``X-Forwarded-*``, ``Forwarded``) are believed. The Flask
app applies werkzeug's ``ProxyFix`` to their requests alone; the gateway has its own middleware
(``gateway.forwarded``)."""

from __future__ import annotations

import ipaddress

from werkzeug.middleware.proxy_fix import ProxyFix

# Every header a proxy (or MLflow's server) may read as the client's address, scheme, host or prefix.
FORWARDING = frozenset({"forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
                        "x-forwarded-prefix", "x-forwarded-server", "x-forwarded-ssl", "x-real-ip"})
_ENVIRON = tuple("HTTP_" + name.upper().replace("-", "_") for name in FORWARDING)


def trusts(networks, remote: str | None) -> bool:
    """Whether the peer at ``remote`` is one of ``networks`` (``config.trusted_proxies``)."""
    if not networks or not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])  # an IPv6 zone is not part of the address
    except ValueError:
        return False  # a Unix socket's peer: no address to trust
    return any(address in network for network in networks)


class TrustedProxyFix:
    """WSGI: ``ProxyFix`` (one proxy: the last hop of each header) for a request from a trusted
    proxy; for anyone else's, the forwarding headers removed before the app reads them."""

    def __init__(self, app, networks):
        self.app = app
        self.networks = tuple(networks)
        self.fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=1, x_port=1, x_prefix=1)

    def __call__(self, environ, start_response):
        if trusts(self.networks, environ.get("REMOTE_ADDR")):
            return self.fixed(environ, start_response)
        for key in _ENVIRON:
            environ.pop(key, None)
        return self.app(environ, start_response)
