"""Where a key may travel to the gateway: in one ``Authorization`` header, never in a URL.

A key in a URL (``?key=hk_...``, ``?access_token=...``) would be written down wherever URLs are:
MLflow's access log, a proxy's, the gateway's own, a browser's history and ``Referer``. Such a
request is refused before anything else reads it (nothing goes on to MLflow), and the access log's
line for it holds no key (``RedactKeys``). Two ``Authorization`` headers are refused too: which one
would count is a guess, and a proxy in front may have believed the other.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, unquote

from aiohttp import web

from webhook_app.gateway.proxy import problem

# Anything shaped like a key (auth.keys.KEY_RE, its id in either case): refused even if malformed.
KEY_SHAPED = re.compile(r"hk_[0-9a-f]{8}_[A-Za-z0-9_-]{43,}", re.IGNORECASE)
# RFC 6750 section 2.3: the query parameter that carries a bearer token, whatever its value.
TOKEN_PARAMETERS = frozenset({"access_token"})
DECODINGS = 3  # a key escaped once, twice or three times is still found


def refusal(request: web.Request) -> web.Response | None:
    """The 400 that refuses a request carrying a key where it must not, or None."""
    url = request.rel_url
    if url.raw_query_string and _carries_key(url.raw_query_string) or _has_key(url.raw_path):
        return problem(400, "The request carries an API key in its URL, where logs and browser history keep it; it was "
                            "not forwarded. Send the key as 'Authorization: Bearer hk_...', never in the URL, and "
                            "consider this key exposed: revoke it and use a new one.")
    if len(request.headers.getall("Authorization", ())) > 1:
        return problem(400, "The request has more than one Authorization header: send exactly one, "
                            "'Authorization: Bearer hk_...'.")
    return None


@web.middleware
async def keys_in_headers_only(request: web.Request, handler):
    refused = refusal(request)
    if refused is not None:
        return refused
    return await handler(request)


def _carries_key(query: str) -> bool:
    if _has_key(query):
        return True
    return any(name.strip().lower() in TOKEN_PARAMETERS for name, _ in parse_qsl(query, keep_blank_values=True))


def _has_key(text: str) -> bool:
    if "%" not in text and "hk_" not in text.lower():
        return False  # the common case, at once: no key, and nothing escaped that could hide one
    for _ in range(DECODINGS + 1):
        if KEY_SHAPED.search(text):
            return True
        decoded = unquote(text.replace("+", " "))
        if decoded == text:
            return False
        text = decoded
    return False


class RedactKeys(logging.Filter):
    """Replaces whatever is shaped like a key in a log record (its message, arguments and the
    access log's extra fields) with ``hk_<id>_***``: the access log writes the request line, query
    string included, of a request refused above."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is logging's to report
            return True
        if _has_key(message):
            record.msg, record.args = redact(message), ()
        for name in vars(record).keys() - _PLAIN_FIELDS:  # the extra fields (aiohttp's access log sets some)
            value = getattr(record, name)
            if isinstance(value, str) and _has_key(value):
                setattr(record, name, redact(value))
            elif isinstance(value, dict) and any(isinstance(v, str) and _has_key(v) for v in value.values()):
                setattr(record, name, {k: redact(v) if isinstance(v, str) else v for k, v in value.items()})
        return True


# A LogRecord's own fields that never hold the request's text (msg and args are judged above).
_PLAIN_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    """``text`` with every key in it (escaped or not) as ``hk_<id>_***``."""
    text = KEY_SHAPED.sub(_masked, text)
    for _ in range(DECODINGS):
        if not _has_key(text):
            break
        text = KEY_SHAPED.sub(_masked, unquote(text))  # an escaped key: decoded, then masked
    return text


def _masked(match: re.Match) -> str:
    return match.group(0)[:len("hk_01234567_")] + "***"


ACCESS_LOGGERS = ("gunicorn.access", "aiohttp.access")


def redact_access_logs() -> None:
    """Put ``RedactKeys`` on the loggers that write the request line (once per process)."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKeys) for f in logger.filters):
            logger.addFilter(RedactKeys())
