"""How the console writes times and durations: UTC to the second, and ages a person reads."""

from __future__ import annotations

from datetime import datetime, timezone

from hokusai_mlflow_plugin.db.models import utcnow
from webhook_app.console.blueprint import bp


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@bp.app_template_filter("when")
def when(text: str | None) -> str:
    """``2026-01-15T10:30:00.123Z`` -> ``2026-01-15 10:30:00 UTC``."""
    if not text:
        return "—"
    return f"{parse_time(text):%Y-%m-%d %H:%M:%S} UTC"


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    """``75`` -> ``1 min 15 s``; ``None`` -> ``—``."""
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


@bp.app_template_filter("ago")
def ago(text: str | None) -> str:
    """How long ago an ISO time was: ``3 min 2 s ago``."""
    if not text:
        return "never"
    return duration(max(0.0, (utcnow() - parse_time(text)).total_seconds())) + " ago"
