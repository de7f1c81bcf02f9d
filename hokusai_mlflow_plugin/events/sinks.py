"""Where events go: signed webhooks (Standard Webhooks), a Redis stream, the console.

A sink sends one event's envelope and says how it went; the relay decides what happens next.
Every sink has a stable ``name`` (the delivery rows' key) that holds no secret.
"""

from __future__ import annotations

import email.utils
import logging
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit

import requests
import urllib3

from hokusai_mlflow_plugin.core.errors import ConfigError, first_line

_logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT = 10.0


@dataclass(frozen=True)
class Result:
    ok: bool
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None
    gone: bool = False  # the consumer says never again (410 Gone)


class Sink:
    name: str
    timeout: float = 10.0  # the longest one send() may take, in seconds (the relay's lease keeps ahead)

    def send(self, event_id: str, event_type: str, body: str) -> Result:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        pass


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _safe_url(url: str) -> str:
    """scheme://host[:port]/path: no credentials, no query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class WebhookSink(Sink):
    """POST the envelope with ``webhook-id`` (the event id), ``webhook-timestamp`` and a ``v1``
    signature made by the ``standardwebhooks`` library with the endpoint's ``whsec_`` secret."""

    def __init__(self, url: str, secret: str, timeout: float = WEBHOOK_TIMEOUT):
        from standardwebhooks import Webhook

        self.url = url
        self.name = "webhook:" + _safe_url(url)
        self._signer = Webhook(secret)
        self.timeout = timeout
        # One deadline for connecting and reading together (requests' own timeout applies to each
        # read anew), so that a send never outlasts what the relay's lease allows for it.
        self._deadline = urllib3.Timeout(total=timeout)
        self._session = requests.Session()
        # Read the environment's proxy and CA-bundle settings once here, not on every POST (requests
        # otherwise merges os.environ into each request; a measurable share of a loopback send).
        settings = self._session.merge_environment_settings(url, {}, None, None, None)
        self._session.proxies.update(settings["proxies"])
        self._session.verify = settings["verify"]
        self._session.trust_env = False

    def headers(self, event_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
        now = now or datetime.now(timezone.utc)
        return {
            "content-type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(event_id, now, body),
            "user-agent": "hokusai-events/1",
        }

    def send(self, event_id: str, event_type: str, body: str) -> Result:
        try:
            response = self._session.post(
                self.url, data=body.encode(), headers=self.headers(event_id, body), timeout=self._deadline
            )
        except requests.RequestException as e:
            return Result(False, error=f"{type(e).__name__}: {self._redact(first_line(e, default=''))}")
        code = response.status_code
        response.close()
        if 200 <= code < 300:
            return Result(True, code)
        return Result(
            False, code, error=f"HTTP {code}", retry_after=parse_retry_after(response.headers.get("Retry-After")), gone=code == 410
        )

    def _redact(self, text: str) -> str:
        """Error texts quote the URL; its query string or credentials may hold a token."""
        parts = urlsplit(self.url)
        for secret in (parts.query, parts.password, parts.username):
            if secret:
                text = text.replace(secret, "***")
        return text

    def close(self) -> None:
        self._session.close()


class RedisStreamSink(Sink):
    """``XADD`` to a stream: fields ``event_id``, ``event_type`` and ``data`` (the envelope)."""

    def __init__(self, url: str, stream: str):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.stream = stream
        self.name = f"redis:{stream}"
        self.timeout = 15.0  # connect (5 s) and then the command (10 s)
        # No retries of redis-py's own, said outright: its defaults differ between versions and
        # between constructors (8.1: none through from_url, 10 through Redis(host=...)). A retry would
        # send the XADD again, unseen, after a reply lost on a cut connection, and a send could then
        # outlast ``timeout`` and so the relay's lease. The relay retries, after its backoff, recorded.
        self._client = redis.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, retry=Retry(NoBackoff(), 0)
        )

    def send(self, event_id: str, event_type: str, body: str) -> Result:
        import redis

        try:
            self._client.xadd(self.stream, {"event_id": event_id, "event_type": event_type, "data": body})
        except redis.RedisError as e:
            return Result(False, error=f"{type(e).__name__}: {first_line(e, default='')}")
        return Result(True)

    def close(self) -> None:
        self._client.close()


class ConsoleSink(Sink):
    """One JSON line per event on standard output, for development."""

    name = "console"

    def send(self, event_id: str, event_type: str, body: str) -> Result:
        print(body, file=sys.stdout, flush=True)
        return Result(True)


def from_settings(settings) -> list[Sink]:
    """The sinks the settings configure; none is fine (the outbox alone keeps the events)."""
    sinks: list[Sink] = []
    urls = settings.event_webhook_urls
    secrets = settings.event_webhook_secrets
    if urls:
        if not secrets:
            raise ConfigError(
                "HOKUSAI_EVENT_WEBHOOK_URL is set but HOKUSAI_EVENT_WEBHOOK_SECRET is not: give the "
                "endpoint's whsec_... secret so that consumers can verify the events."
            )
        if len(secrets) not in (1, len(urls)):
            raise ConfigError(
                "HOKUSAI_EVENT_WEBHOOK_SECRET must hold one secret for all endpoints, or one per "
                f"endpoint in the same order ({len(urls)} URLs, {len(secrets)} secrets)."
            )
        for i, url in enumerate(urls):
            try:
                sinks.append(WebhookSink(url, secrets[i if len(secrets) > 1 else 0]))
            except ValueError:  # the library's own message may quote the secret: say which one is wrong
                raise ConfigError(
                    f"HOKUSAI_EVENT_WEBHOOK_SECRET for {_safe_url(url)} is not a Standard Webhooks secret: give "
                    "the endpoint's whsec_<base64> secret."
                ) from None
    if settings.redis_url:
        try:
            sinks.append(RedisStreamSink(settings.redis_url, settings.redis_stream))
        except ValueError as e:
            raise ConfigError(
                f"HOKUSAI_REDIS_URL is not a Redis URL ({first_line(e)}): use a form such as redis://host:6379/0."
            ) from None
    if settings.event_console:
        sinks.append(ConsoleSink())
    return sinks
