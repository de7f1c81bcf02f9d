"""Cursors for keyset pagination: the sort key of the last row a page showed, so that the next page
starts after it with one indexed query, however deep the list. Standard library only.

A cursor is the key's parts joined by ``.``: a row id (``1234``), or a time in microseconds since
the epoch and a token id (``1764720000000000.XRAY``). Clients follow the ``next`` link and need
not read it; the API's document states each form as a pattern (``ROW_CURSOR``, ``TOKEN_CURSOR``),
and every string of that form is a cursor the API accepts (a key past the end is an empty page)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from hokusai_mlflow_plugin.core.errors import BadOption

MAX_LIMIT = 100
_FOREIGN = "The cursor is not one this API gave: follow the 'next' link of the previous page."
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: the forms of cursors (JSON Schema patterns, as the API's document states them): a row id; a
#: time (microseconds since the epoch, up to the year 2286) and a token id, as stored (upper case)
ROW_CURSOR = r"^[0-9]{1,15}$"
TOKEN_CURSOR = r"^[0-9]{1,16}\.[A-Z0-9_-]{1,64}$"
_FORMS = {1: re.compile(ROW_CURSOR), 2: re.compile(TOKEN_CURSOR)}
#: the largest id of an INTEGER column (PostgreSQL's is 32 bits): a row cursor may name more
INT_MAX = 2**31 - 1


def encode(*key) -> str:
    return ".".join(str(part) for part in key)


def decode(cursor: str | None, arity: int) -> list | None:
    """The key a cursor holds (its parts, as strings), or None for the first page;
    ``BadOption("cursor")`` for one that is not of the form this API gives."""
    if not cursor:
        return None
    if not _FORMS[arity].match(cursor):
        raise BadOption("cursor", _FOREIGN)
    return cursor.split(".", arity - 1)


def micros(value: datetime) -> int:
    """A time as a cursor holds it: microseconds since the epoch (a naive time is UTC)."""
    if value.tzinfo is None:  # SQLite hands back naive datetimes; we only ever store UTC
        value = value.replace(tzinfo=timezone.utc)
    return (value - _EPOCH) // timedelta(microseconds=1)


def time_of(value: str) -> datetime:
    """A time a cursor holds (as ``micros()`` wrote it), aware in UTC."""
    return _EPOCH + timedelta(microseconds=int(value))


def take(rows: list, limit: int) -> tuple[list, bool]:
    """A page's rows from a query of ``limit + 1``, and whether a next page exists."""
    return rows[:limit], len(rows) > limit


def limit_of(limit: int | None, default: int = 50) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= MAX_LIMIT:
        raise BadOption("limit", f"limit must be 1 to {MAX_LIMIT}, not {limit}.")
    return limit
