"""Opaque cursors for keyset pagination: the sort key of the last row a page showed, so that the
next page starts after it with one indexed query, however deep the list. Standard library only."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

from hokusai_mlflow_plugin.core.errors import BadOption

MAX_LIMIT = 100
_FOREIGN = "The cursor is not one this API gave: follow the 'next' link of the previous page."


def encode(*key) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode().rstrip("=")


def decode(cursor: str | None, arity: int) -> list | None:
    """The key a cursor holds, or None for the first page; ``BadOption("cursor")`` for one that
    this API did not give."""
    if not cursor:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, list) or len(key) != arity:
        raise BadOption("cursor", _FOREIGN)
    return key


def time_of(value) -> datetime:
    """A time a cursor holds (as ``iso()`` wrote it), aware in UTC."""
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadOption("cursor", _FOREIGN) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def take(rows: list, limit: int) -> tuple[list, bool]:
    """A page's rows from a query of ``limit + 1``, and whether a next page exists."""
    return rows[:limit], len(rows) > limit


def limit_of(limit: int | None, default: int = 50) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= MAX_LIMIT:
        raise BadOption("limit", f"limit must be 1 to {MAX_LIMIT}, not {limit}.")
    return limit
