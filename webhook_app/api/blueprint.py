"""The API's blueprint, its security scheme, and the ``next`` link of a page (shared by the views)."""

from __future__ import annotations

from flask import request, url_for
from flask_openapi3 import APIBlueprint
from werkzeug.routing import BaseConverter

from webhook_app.api.schemas import EVENT_ID

SECURITY_SCHEMES = {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key, hk_<key id>_<secret>."}}

bp = APIBlueprint("api", __name__, url_prefix="/api/v1", abp_security=[{"bearer": []}])


class EventId(BaseConverter):
    """``<event_id:...>``: a path segment that is an event id (a uuid4, as the document states),
    so that ``/events/redeliver`` is not also ``GET /events/<event_id>`` (whose method an ``Allow``
    header would then advertise there)."""

    regex = EVENT_ID.removeprefix("^").removesuffix("$")


CONVERTERS = {"event_id": EventId}


def next_link(cursor: str | None) -> str | None:
    """The URL of the next page: this request's, with ``cursor``."""
    if cursor is None:
        return None
    args = {**request.args.to_dict(), "cursor": cursor}
    return url_for(request.endpoint, **(request.view_args or {}), **args)


def page(items: list, cursor: str | None):
    """A page's answer: its items, the ``next`` URL (null at the end), and the same URL in a
    ``Link: <url>; rel="next"`` header, as GitHub's API gives it."""
    url = next_link(cursor)
    return {"items": items, "next": url}, 200, ({"Link": f'<{url}>; rel="next"'} if url else {})
