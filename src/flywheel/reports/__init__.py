"""Self-contained HTML reports: one file each, inline CSS and SVG, no script and no network.

A report is mailed, attached to a ticket or opened from a bucket months later, so it must not depend on
anything that can move. Plain f-strings with `html.escape` keep it dependency-free; every value that
comes from a run (step names, errors, logs, notes) goes through `esc`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from flywheel.durations import duration
from flywheel.durations import when as when

STATE_COLOURS: Mapping[str, tuple[str, str]] = {
    # state: (fill, stroke)
    "succeeded": ("#d8f0dc", "#2e7d32"),
    "failed": ("#fbd5d5", "#c62828"),
    "running": ("#d6eefa", "#0277bd"),
    "interrupted": ("#fdecc8", "#ef6c00"),
    "partial": ("#fff4cc", "#b08800"),
    "reused": ("#e3e7f6", "#3949ab"),
    "marked": ("#e8e1f5", "#6a1b9a"),
    "skipped": ("#eeeeee", "#9e9e9e"),
    "not_started": ("#f7f7f7", "#bdbdbd"),
    # incidents
    "open": ("#fbd5d5", "#c62828"),
    "resolved": ("#d8f0dc", "#2e7d32"),
    "superseded": ("#eeeeee", "#616161"),
}

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1180px;
       padding: 0 16px; color: #1f2328; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
.muted { color: #666; } .mono, pre, code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
table { border-collapse: collapse; margin: 6px 0; } th, td { text-align: left; padding: 4px 10px 4px 0;
       vertical-align: top; border-bottom: 1px solid #eee; } th { font-weight: 600; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
       border: 1px solid; }
.kpis { display: flex; gap: 14px; flex-wrap: wrap; } .kpi { border: 1px solid #ddd; border-radius: 8px;
       padding: 8px 14px; min-width: 130px; } .kpi b { display: block; font-size: 20px; }
pre { background: #f6f8fa; padding: 8px 10px; overflow-x: auto; font-size: 12px; margin: 4px 0;
       white-space: pre-wrap; word-break: break-word; }
pre .err { background: #fbd5d5; display: block; }
details { margin: 4px 0; } summary { cursor: pointer; }
.scroll { overflow-x: auto; } .nowrap { white-space: nowrap; }
.hint { margin: 2px 0; } .cmd { background: #f6f8fa; padding: 2px 6px; border-radius: 4px; }
svg text { font: 12px system-ui, sans-serif; } svg .sub { font-size: 11px; fill: #555; }
.node rect { stroke-width: 1.6; } .edge { fill: none; stroke: #9aa4b2; stroke-width: 1.3; }
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def badge(state: str) -> str:
    fill, stroke = STATE_COLOURS.get(state, ("#eee", "#999"))
    return f'<span class="badge state-{esc(state)}" style="background:{fill};border-color:{stroke}">{esc(state)}</span>'


dur = duration
"""Durations in reports: `flywheel.durations.duration` (empty when unknown)."""


def page(title: str, body: str) -> str:
    """A complete HTML document around `body`."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def bar_chart(rows: Sequence[tuple[str, float]], *, label: str, unit: str = "", width: int = 520) -> str:
    """A horizontal bar chart as inline SVG (labels left, values right)."""
    if not rows:
        return '<p class="muted">none</p>'
    top = max(v for _, v in rows) or 1.0
    bar_h, gap, left, right = 18, 6, 230, 60
    height = len(rows) * (bar_h + gap) + gap
    parts = [f'<svg role="img" aria-label="{esc(label)}" width="{width}" height="{height}" class="chart">']
    for i, (name, value) in enumerate(rows):
        y = gap + i * (bar_h + gap)
        w = max(2.0, (width - left - right) * value / top)
        shown = f"{value:g}{unit}"
        parts.append(
            f'<g class="bar" data-label="{esc(name)}" data-value="{value:g}">'
            f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{esc(name[:34])}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#5c7cfa" rx="3"/>'
            f'<text x="{left + w + 6:.1f}" y="{y + 13}">{esc(shown)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)
