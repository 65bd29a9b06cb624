"""Self-contained HTML for the db-refresh reports: inline CSS and SVG, no scripts, no network.

Reports are opened from S3 consoles, e-mail attachments and air-gapped laptops, so a page must render
from its single file. Every value that reaches the page goes through `html.escape`; charts are plain
SVG built from numbers, so a hostile attribute value cannot inject markup.

Also holds `write_text_atomic`, the one way the report jobs put a file in place: a reader (or a
resumed run verifying outputs) never sees half a report.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flywheel.pipelines.db_refresh import storage

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1f2933;
background:#fff;max-width:1200px}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d9e2ec}
.meta{color:#52606d;font-size:.9rem}
table{border-collapse:collapse;margin:.8rem 0;font-size:.85rem}
th,td{border:1px solid #d9e2ec;padding:.25rem .6rem;text-align:left;vertical-align:top}
th{background:#f0f4f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;border-radius:.6rem;padding:0 .55rem;font-size:.8rem;font-weight:600}
.ok{background:#e3f9e5;color:#1f6e2b}.warn{background:#fff3c4;color:#8d6200}
.fail{background:#ffe3e3;color:#a61b1b}.none{background:#f0f4f8;color:#52606d}
.note{background:#f0f4f8;border-left:4px solid #829ab1;padding:.5rem .8rem;font-size:.9rem}
svg text{font-family:inherit;font-size:11px;fill:#334e68}
"""

STATUS_CLASSES = ("ok", "warn", "fail", "none")


@dataclass(frozen=True)
class Series:
    """One named line of a line chart: y values aligned with the chart's x labels (None = gap)."""

    name: str
    values: Sequence[float | None]


def esc(value: object) -> str:
    """Text for HTML: escaped, with None shown as an em dash so gaps are visible."""
    return "—" if value is None else html.escape(str(value), quote=True)


def badge(status: str) -> str:
    css = status if status in STATUS_CLASSES else "none"
    return f'<span class="badge {css}">{esc(status)}</span>'


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    numeric: Iterable[int] = (),
    raw: Iterable[int] = (),
) -> str:
    """An HTML table. Columns in `numeric` align right; cells in `raw` columns are trusted HTML
    (only for markup this module produced, such as `badge`)."""
    numeric_cols, raw_cols = set(numeric), set(raw)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body: list[str] = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = str(cell) if i in raw_cols else esc(cell)
            cells.append(f'<td class="num">{text}</td>' if i in numeric_cols else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    width: int = 720,
    bar_height: int = 18,
    value_format: str = "{:,.0f}",
    statuses: Sequence[str] | None = None,
) -> str:
    """A horizontal bar chart as inline SVG; bars take the colour of their status when given."""
    colours = {"ok": "#3f9142", "warn": "#d9a400", "fail": "#cf3030"}
    longest = max((len(label) for label in labels), default=0)
    label_w, value_w, gap = min(max(80, 7 * longest + 12), width // 2), 90, 4
    plot_w = max(width - label_w - value_w, 50)
    top = 22
    height = top + len(values) * (bar_height + gap) + 6
    peak = max((v for v in values), default=0.0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{esc(title)}">',
        f'<text x="0" y="14" font-weight="600">{esc(title)}</text>',
    ]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + i * (bar_height + gap)
        w = max(plot_w * (value / peak), 0.0)
        status = statuses[i] if statuses is not None else "ok"
        colour = colours.get(status, "#627d98")
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_height - 5}" text-anchor="end">{esc(label)}</text>')
        parts.append(
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_height}" fill="{colour}">'
            f"<title>{esc(label)}: {esc(value_format.format(value))}</title></rect>"
        )
        parts.append(
            f'<text x="{label_w + w + 4:.1f}" y="{y + bar_height - 5}">{esc(value_format.format(value))}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    x_labels: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    width: int = 720,
    height: int = 220,
) -> str:
    """A small multi-series line chart as inline SVG (history of a metric across runs)."""
    palette = ("#2680c2", "#cf3030", "#3f9142", "#d9a400", "#8662c7", "#e12d39", "#0e7c86")
    longest = max((len(s.name) for s in series), default=0)
    left, right, top, bottom = 80, min(max(80, 7 * longest + 40), width // 2), 24, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    known = [v for s in series for v in s.values if v is not None]
    low, high = (min(known), max(known)) if known else (0.0, 1.0)
    if high == low:
        low, high = low - 1.0, high + 1.0
    count = max(len(x_labels), 1)

    def x_of(i: int) -> float:
        return left + (plot_w * i / (count - 1) if count > 1 else plot_w / 2)

    def y_of(v: float) -> float:
        return top + plot_h * (1 - (v - low) / (high - low))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{esc(title)}">',
        f'<text x="0" y="14" font-weight="600">{esc(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#9fb3c8"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#9fb3c8"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{esc(_tick(high))}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">{esc(_tick(low))}</text>',
    ]
    for i, label in enumerate(x_labels):
        if len(x_labels) <= 12 or i in (0, len(x_labels) - 1):
            parts.append(f'<text x="{x_of(i):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{esc(label)}</text>')
    for n, line in enumerate(series):
        colour = palette[n % len(palette)]
        points = [(x_of(i), y_of(v)) for i, v in enumerate(line.values) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for x, y in points:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        ly = top + 12 + n * 16
        parts.append(f'<rect x="{left + plot_w + 12}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{left + plot_w + 26}" y="{ly}">{esc(line.name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _tick(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def page(title: str, body: Sequence[str], *, subtitle: str = "") -> str:
    """A complete HTML document around already-rendered sections."""
    meta = f'<p class="meta">{esc(subtitle)}</p>' if subtitle else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>"
        f"<body><h1>{esc(title)}</h1>{meta}{''.join(body)}</body></html>\n"
    )


def write_text_atomic(path: Path, text: str) -> None:
    """Put `text` at `path` so that readers see the old file or the new one, never a torn one."""
    storage.LocalStorage().write_text(str(path), text)
