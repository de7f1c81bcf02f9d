"""The first line of an underlying error, for the one-sentence messages users and logs get."""

from __future__ import annotations


def first_line(error: BaseException | str | None, default: str | None = None, limit: int = 300) -> str:
    """The first non-blank line of ``error`` (an exception or its text), cut at ``limit``; when it
    has none, ``default``, else an exception's type name, else ""."""
    lines = str(error if error is not None else "").strip().splitlines()
    if lines:
        return lines[0][:limit]
    if default is not None:
        return default
    return type(error).__name__ if isinstance(error, BaseException) else ""
