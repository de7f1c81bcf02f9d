"""The console's read pages: overview, tokens, a token, events, an event. Each runs a few bounded
queries (aggregates, LIMITs, keyset pages) in one session. What a page shows is what the signed-in
key may read (``auth.ownership`` decides, in each query): an admin sees everything and the
operator's panels; anyone else their own tokens, and a token or event of someone else's is a 404."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import quote

from flask import current_app, g, render_template, request

from hokusai_mlflow_plugin.auth import ownership
from hokusai_mlflow_plugin.auth.keys import READ
from hokusai_mlflow_plugin.core.metrics import get_metric
from hokusai_mlflow_plugin.db.models import DELIVERY_STATES, TOKEN_STATUSES, Principal, utcnow
from hokusai_mlflow_plugin.events import heartbeat, outbox
from hokusai_mlflow_plugin.operations import overview as ops
from hokusai_mlflow_plugin.registration import lifecycle, reconcile, tokens
from hokusai_mlflow_plugin.registration.records import MODEL_REGISTERED, TOKEN_READY
from webhook_app.console.chart import hourly
from webhook_app.access import FILTERED, OBJECT
from webhook_app.console.blueprint import bp
from webhook_app.console.signin import needs

EVENT_TYPES = (TOKEN_READY, MODEL_REGISTERED, lifecycle.TOKEN_DEPLOYED, lifecycle.TOKEN_UNDEPLOYED, lifecycle.TOKEN_ARCHIVED)
PAGE = 50
SLOW_PENDING_SECONDS = 300  # the oldest undelivered event has waited this long: something is wrong


def sessions():
    return current_app.extensions["hokusai"].sessions


def arg(name: str) -> str | None:
    return (request.args.get(name) or "").strip() or None


@bp.get("/")
@needs(READ, FILTERED)
def overview():
    now, admin = utcnow(), ownership.is_admin(g.caller)
    operator, user = {}, None
    with sessions()() as s:
        counts = ops.tokens_by_status(s, caller=g.caller)
        decided = ops.decisions(s, recent=timedelta(hours=24), now=now, caller=g.caller)
        if admin:  # the outbox, the relays and the sweep are everyone's: an operator's panels
            health = outbox.outbox_health(s)
            beats = heartbeat.heartbeats(s, now)
            operator = dict(
                health=health, beats=beats, sweep=reconcile.last_sweep(s), relay_alive=any(b["alive"] for b in beats),
                slow=(health["oldest_pending_seconds"] or 0) > SLOW_PENDING_SECONDS, stale=int(heartbeat.STALE.total_seconds()),
                unowned=ops.unowned_tokens(s))
        elif g.caller.user_id is not None:
            found = s.get(Principal, g.caller.user_id)
            user = found.name if found is not None else None
    return render_template("console/overview.html", admin=admin, user=user, counts=counts, decided=decided["recent"],
                           chart=hourly(decided["hours"]), **operator)


@bp.get("/tokens")
@needs(READ, FILTERED)
def token_list():
    status, q, cursor, unowned = arg("status"), arg("q"), arg("cursor"), arg("unowned")
    with sessions()() as s:
        found, next_cursor = tokens.page_tokens(s, status, q, PAGE, cursor, caller=g.caller, unowned=bool(unowned))
        rows = [t.to_dict() for t in found]
    return render_template("console/tokens.html", tokens=rows, status=status, q=q, unowned=unowned, cursor=cursor,
                           next_cursor=next_cursor, statuses=TOKEN_STATUSES, sign=_sign)


@bp.get("/tokens/<token_id>")
@needs(READ, OBJECT)
def token_detail(token_id: str):
    with sessions()() as s:
        token = ownership.token_for(s, g.caller, token_id).to_dict()  # someone else's reads as unknown: 404
        found, next_cursor = tokens.page_registrations(s, token_id=token["token_id"], limit=PAGE, cursor=arg("cursor"),
                                                       caller=g.caller)
        registrations = [r.to_dict() for r in found]
        events, more_events = outbox.page_events(s, token_id=token["token_id"], limit=20, caller=g.caller)
        shared = tokens.grants(s, token["token_id"])
        history = lifecycle.history(s, g.caller, token["token_id"])  # oldest first: read as a story
    return render_template(
        "console/token.html", token=token, sign=_sign(token["metric_name"]), registrations=registrations,
        next_cursor=next_cursor, events=events, more_events=more_events, grants=shared, history=history,
        version_url=_version_url,
    )


@bp.get("/events")
@needs(READ, FILTERED)
def event_list():
    status, event_type, token, cursor = arg("status"), arg("type"), arg("token"), arg("cursor")
    with sessions()() as s:
        items, next_cursor = outbox.page_events(s, status, event_type, token, PAGE, cursor, caller=g.caller)
        health = outbox.outbox_health(s) if ownership.is_admin(g.caller) else None  # every sink's: an operator's
    return render_template("console/events.html", events=items, status=status, event_type=event_type, token=token,
                           cursor=cursor, next_cursor=next_cursor, health=health, statuses=DELIVERY_STATES, types=EVENT_TYPES)


@bp.get("/events/<event_id>")
@needs(READ, OBJECT)
def event_detail(event_id: str):
    with sessions()() as s:
        event = outbox.event_detail(s, event_id, caller=g.caller)  # someone else's reads as unknown: 404
    return render_template("console/event.html", event=event,
                           payload=json.dumps(event["payload"], indent=2, sort_keys=True, ensure_ascii=False))


def _sign(metric_name: str | None) -> str:
    metric = get_metric(metric_name) if metric_name else None
    return metric.sign if metric else "?"


def _version_url(name: str, version: str) -> str:
    """The version's page in the MLflow UI."""
    return f"{current_app.config['MLFLOW_TRACKING_URI'].rstrip('/')}/#/models/{quote(name, safe='')}/versions/{quote(str(version), safe='')}"
