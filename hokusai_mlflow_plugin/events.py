"""Events: the original platform's envelope, and the outbox rows a registration writes."""

from __future__ import annotations

import json
import uuid

from hokusai_mlflow_plugin.db.models import OutboxEvent, Registration, _iso, utcnow

SOURCE = "hokusai-ml-platform"
TOKEN_READY = "token_ready_for_deploy"
MODEL_REGISTERED = "model_registered"


def registration_events(reg: Registration) -> list[OutboxEvent]:
    """``model_registered`` then ``token_ready_for_deploy`` for a registered version."""
    payload = {
        "token_id": reg.token_id,
        "mlflow_run_id": reg.mlflow_run_id,
        "model_name": reg.model_name,
        "model_version": reg.model_version,
        "metadata": {
            "metric_name": reg.metric_name,
            "metric_value": reg.metric_value,
            "baseline_value": reg.baseline_value,
        },
    }
    detail = {
        **payload,
        "registration": {"reason": reg.reason, "delivery_id": reg.delivery_id, "registered_at": _iso(reg.created_at)},
    }
    now = utcnow()
    return [
        OutboxEvent(event_id=str(uuid.uuid4()), event_type=MODEL_REGISTERED, payload=detail, created_at=now),
        OutboxEvent(event_id=str(uuid.uuid4()), event_type=TOKEN_READY, payload=payload, created_at=now),
    ]


def envelope(event: OutboxEvent) -> dict:
    return {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "source": SOURCE,
        "timestamp": _iso(event.created_at.replace(microsecond=0)),
        "payload": event.payload,
    }


def envelope_json(event: OutboxEvent) -> str:
    """The exact body every sink receives, the same on every retry."""
    return json.dumps(envelope(event), separators=(",", ":"), sort_keys=False)


NOTIFY_CHANNEL = "hokusai_events"

