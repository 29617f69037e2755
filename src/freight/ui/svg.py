"""The dashboard's two charts, drawn on the server as SVG.

Server-rendered SVG rather than a JavaScript charting library: the charts are two simple shapes (bars on a time
axis, stacked columns), the page then works without scripts and prints, there is no vendored bundle to keep up to
date or licence to ship, and a browser test reads the chart's numbers from the DOM (each mark carries a <title>).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

WIDTH = 900
COLOURS = {
    "succeeded": "#2e8540",
    "ended": "#2e8540",
    "errored": "#d83933",
    "failed": "#d83933",
    "expired": "#a86437",
    "canceled": "#8a8a8a",
    "canceling": "#b0b0b0",
    "in_progress": "#2378c3",
    "submitted": "#73b3e7",
    "finalizing": "#4a77b4",
    "preparing": "#cccccc",
}


def _x(t: datetime, t0: datetime, span: float, left: int, width: int) -> float:
    return left + width * ((t - t0).total_seconds() / span if span else 0.0)


def batch_timeline(rows: list[dict[str, Any]], now: datetime) -> Markup:
    """One bar per batch from submitted (or created) to ended (or now), coloured by its state."""
    if not rows:
        return Markup('<p class="muted">No batch submitted yet.</p>')
    starts = [r["submitted_at"] or r["created_at"] for r in rows]
    ends = [r["ended_at"] or now for r in rows]
    t0, t1 = min(starts), max(ends)
    span = max((t1 - t0).total_seconds(), 0.001)
    left, width, row_h = 120, WIDTH - 140, 18
    height = row_h * len(rows) + 30
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="batches timeline">']
    for i, (r, s, e) in enumerate(zip(rows, starts, ends, strict=True)):
        y = 5 + i * row_h
        x0 = _x(s, t0, span, left, width)
        w = max(_x(e, t0, span, left, width) - x0, 2.0)
        title = escape(
            f"batch {r['id']} {r['provider_batch_id'] or ''}: {r['state']}, {r['n_requests']} requests, "
            f"{s:%H:%M:%S} → {'running' if r['ended_at'] is None else f'{e:%H:%M:%S}'}"
        )
        parts.append(f'<text x="0" y="{y + 12}" class="lbl">batch {r["id"]}</text>')
        parts.append(
            f'<rect class="batch" data-state="{escape(r["state"])}" x="{x0:.1f}" y="{y}" width="{w:.1f}" '
            f'height="{row_h - 4}" fill="{COLOURS.get(r["state"], "#888")}"><title>{title}</title></rect>'
        )
    parts.append(_axis(t0, t1, left, width, height - 8))
    parts.append("</svg>")
    return Markup("".join(parts))


def _axis(t0: datetime, t1: datetime, left: int, width: int, y: int) -> str:
    fmt = "%H:%M:%S" if (t1 - t0) < timedelta(days=1) else "%m-%d %H:%M"
    return (
        f'<text x="{left}" y="{y}" class="lbl">{t0:{fmt}}</text>'
        f'<text x="{left + width}" y="{y}" class="lbl" text-anchor="end">{t1:{fmt}} UTC</text>'
    )


def results_chart(data: dict[str, Any]) -> Markup:
    """Stacked columns: outcomes recorded per time bucket, by status."""
    series: dict[str, list[int]] = data["series"]
    if not series:
        return Markup('<p class="muted">No results yet.</p>')
    n = data["buckets"]
    totals = [sum(s[i] for s in series.values()) for i in range(n)]
    top = max(totals) or 1
    left, width, height, base = 50, WIDTH - 60, 200, 170
    col = width / n
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="results over time">']
    parts.append(f'<text x="0" y="14" class="lbl">{top}</text><text x="0" y="{base}" class="lbl">0</text>')
    order: list[str] = [k for k in ("succeeded", "errored", "expired", "canceled") if k in series]
    order += [k for k in series if k not in order]
    start: datetime = data["start"]
    for i in range(n):
        y = float(base)
        at = start + timedelta(seconds=data["width"] * i)
        for status in order:
            v = series[status][i]
            if not v:
                continue
            h = (base - 10) * v / top
            y -= h
            parts.append(
                f'<rect class="bucket" data-status="{escape(status)}" data-count="{v}" x="{left + i * col:.1f}" '
                f'y="{y:.1f}" width="{max(col - 1, 1):.1f}" height="{h:.1f}" fill="{COLOURS.get(status, "#888")}">'
                f"<title>{v} {escape(status)} from {at:%H:%M:%S}</title></rect>"
            )
    end = start + timedelta(seconds=data["width"] * n)
    parts.append(_axis(start, end, left, width, height - 4))
    for k, status in enumerate(order):  # the legend, top right
        x = WIDTH - 110 * (len(order) - k)
        parts.append(f'<rect x="{x}" y="4" width="10" height="10" fill="{COLOURS.get(status, "#888")}"/>'
                     f'<text x="{x + 14}" y="13" class="lbl">{escape(status)}</text>')  # fmt: skip
    parts.append("</svg>")
    return Markup("".join(parts))
