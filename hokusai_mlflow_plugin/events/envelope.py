"""Events as sinks receive them: the original platform's envelope around an outbox row."""

from __future__ import annotations

import json

from hokusai_mlflow_plugin.db.models import OutboxEvent, iso
from hokusai_mlflow_plugin.registration.records import MODEL_REGISTERED, TOKEN_READY

__all__ = ["MODEL_REGISTERED", "SOURCE", "TOKEN_READY", "envelope", "envelope_json"]

SOURCE = "hokusai-ml-platform"


def envelope(event: OutboxEvent) -> dict:
    return {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "source": SOURCE,
        "timestamp": iso(event.created_at.replace(microsecond=0)),
        "payload": event.payload,
    }


def envelope_json(event: OutboxEvent) -> str:
    """The exact body every sink receives, the same on every retry."""
    return json.dumps(envelope(event), separators=(",", ":"), sort_keys=False)
