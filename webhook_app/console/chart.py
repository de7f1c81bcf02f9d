"""The overview's chart: registrations and rejections per hour as the geometry of an inline SVG
(stacked bars, a line at each UTC midnight). Pure: buckets in, numbers out; the template draws."""

from __future__ import annotations

BAR, GAP, HEIGHT, TOP = 5, 1, 120, 14  # pixels of the viewBox


def hourly(buckets: list[dict]) -> dict:
    """``buckets`` of ``{"hour", "registered", "rejected"}``, oldest first."""
    peak = max((b["registered"] + b["rejected"] for b in buckets), default=0)
    scale = (HEIGHT - TOP) / peak if peak else 0
    bars, days = [], []
    for i, b in enumerate(buckets):
        x = i * (BAR + GAP)
        ok, bad = b["registered"] * scale, b["rejected"] * scale
        label = f"{b['hour']:%a %d %b %H}:00 UTC: {b['registered']} registered, {b['rejected']} rejected"
        bars.append({"x": x, "ok_y": HEIGHT - ok, "ok_h": ok, "bad_y": HEIGHT - ok - bad, "bad_h": bad,
                     "label": label, "empty": not (b["registered"] or b["rejected"])})
        if b["hour"].hour == 0 and x + 40 <= len(buckets) * (BAR + GAP):  # room for its label
            days.append({"x": x, "label": f"{b['hour']:%a %d}"})
    return {
        "bars": bars, "days": days, "width": len(buckets) * (BAR + GAP), "height": HEIGHT, "bar": BAR, "peak": peak,
        "registered": sum(b["registered"] for b in buckets), "rejected": sum(b["rejected"] for b in buckets),
    }
