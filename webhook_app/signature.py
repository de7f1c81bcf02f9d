"""Verify MLflow's webhook signature. A pure function: bytes and headers in, the parsed event or
one ``WebhookVerificationError`` out. No Flask here; the clock and the tolerance are injectable.

MLflow signs ``f"{delivery_id}.{timestamp}.{raw_body}"`` with HMAC-SHA256 and sends
``X-MLflow-Signature: v1,<base64 digest>`` beside ``X-MLflow-Delivery-Id`` and
``X-MLflow-Timestamp`` (unix seconds).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hokusai_mlflow_plugin.core.errors import ConfigError

DEFAULT_TOLERANCE = 300  # seconds, both ways
MAX_BODY = 1024 * 1024

DELIVERY_ID = "x-mlflow-delivery-id"
TIMESTAMP = "x-mlflow-timestamp"
SIGNATURE = "x-mlflow-signature"


class WebhookVerificationError(Exception):
    """The request is not a genuine, fresh MLflow delivery. The message never holds a secret."""


class WebhookConfigurationError(ConfigError):
    """The receiver cannot verify anything (no secret configured)."""


@dataclass(frozen=True)
class Delivery:
    delivery_id: str
    timestamp: int
    body: bytes


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise WebhookVerificationError(f"missing {name} header")


def sign(secret: str, delivery_id: str, timestamp: int | str, body: bytes) -> str:
    message = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    *,
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
) -> Delivery:
    """Check the signature of one delivery against every configured secret (rotation)."""
    if not secrets:
        raise WebhookConfigurationError("no webhook secret is configured")
    delivery_id = _header(headers, DELIVERY_ID).strip()
    raw_timestamp = _header(headers, TIMESTAMP).strip()
    signature_header = _header(headers, SIGNATURE)
    if not delivery_id or len(delivery_id) > 128:
        raise WebhookVerificationError("malformed delivery id")
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise WebhookVerificationError("malformed timestamp") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError("timestamp outside the allowed window")

    offered = []
    for part in signature_header.split():  # several "v1,..." may be sent, space separated
        version, _, value = part.partition(",")
        if version != "v1":
            continue
        try:
            offered.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not offered:
        raise WebhookVerificationError("malformed signature")

    message = f"{delivery_id}.{raw_timestamp}.".encode() + body
    for secret in secrets:
        expected = hmac.new(secret.encode(), message, hashlib.sha256).digest()
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return Delivery(delivery_id, timestamp, body)
    raise WebhookVerificationError("signature mismatch")


def parse_event(body: bytes) -> dict:
    """The JSON object of a verified delivery; ``ValueError`` with a short reason otherwise."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"body is not JSON: {e}") from None
    except RecursionError:
        raise ValueError("body nests too deeply") from None
    if not isinstance(event, dict):
        raise ValueError("body must be a JSON object")
    for key in ("entity", "action"):
        if not isinstance(event.get(key), str):
            raise ValueError(f"'{key}' must be a string")
    if not isinstance(event.get("data"), dict):
        raise ValueError("'data' must be an object")
    return event
