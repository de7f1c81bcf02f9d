"""``/api/v1/events``: the outbox, each sink's deliveries and attempts, and redelivery."""

from __future__ import annotations

from datetime import datetime, timezone

from flask import current_app, g

from hokusai_mlflow_plugin.auth.keys import ADMIN, READ
from hokusai_mlflow_plugin.events import outbox
from webhook_app.api.blueprint import bp, page
from webhook_app.api.auth import FILTERED, OBJECT, OPERATOR, needs
from webhook_app.api.schemas import BulkRedeliverQuery, EventDetail, EventPage, EventPath, EventQuery, Problem, Redelivered


def _sessions():
    return current_app.extensions["hokusai"].sessions


def _kick(event_ids=None) -> None:
    """Wake this process's relay, if it runs one; otherwise the relay workers find the rows due."""
    relay = current_app.extensions.get("hokusai_relay")
    if relay is not None:
        relay.ensure_started()
        relay.kick(event_ids)


@bp.get("/events", responses={200: EventPage, 401: Problem, 403: Problem, 422: Problem}, summary="Outbox events, newest first")
@needs(READ, FILTERED)
def list_events(query: EventQuery):
    with _sessions()() as session:
        items, cursor = outbox.page_events(session, query.status, query.type, query.token, query.limit, query.cursor,
                                           caller=g.caller)
    return page(items, cursor)


@bp.get("/events/<event_id:event_id>", responses={200: EventDetail, 401: Problem, 403: Problem, 404: Problem}, summary="An event, each sink's delivery and every attempt")
@needs(READ, OBJECT)
def show_event(path: EventPath):
    with _sessions()() as session:
        return outbox.event_detail(session, path.event_id, caller=g.caller)


@bp.post("/events/<event_id:event_id>/redeliver", responses={202: EventDetail, 401: Problem, 403: Problem, 404: Problem}, summary="Send an event again to every sink")
@needs(ADMIN, OPERATOR)
def redeliver_event(path: EventPath):
    with _sessions().begin() as session:
        outbox.reset_for_redelivery(session, path.event_id)
    _kick([path.event_id])
    with _sessions()() as session:
        return outbox.event_detail(session, path.event_id), 202


@bp.post("/events/redeliver", responses={202: Redelivered, 401: Problem, 403: Problem, 422: Problem}, summary="Send every dead (or failed) delivery again")
@needs(ADMIN, OPERATOR)
def redeliver_all(query: BulkRedeliverQuery):
    since = _since(query.since)
    with _sessions().begin() as session:
        count = outbox.reset_all_for_redelivery(session, query.status, since)
    if count:
        _kick()
    return {"redelivered": count}, 202


def _since(when: datetime | None) -> datetime | None:
    """A time of the query (validated by its model) as UTC: one with no offset is UTC."""
    if when is None:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
