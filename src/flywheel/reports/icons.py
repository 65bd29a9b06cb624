"""Status icons as inline SVG: they draw the same on a server with no colour-emoji font (where ✅ ❌ ⏸️
render as empty boxes), and each carries its label for screen readers and a hover title, so colour is
never the only signal."""

from __future__ import annotations

from html import escape

from flywheel.reports import STATE_COLOURS

_SHAPES = {
    "succeeded": '<path d="M4 8.5l2.5 2.5L12 5.5" fill="none" stroke-width="2"/>',
    "failed": '<path d="M5 5l6 6M11 5l-6 6" fill="none" stroke-width="2"/>',
    "running": '<path d="M8 3a5 5 0 1 1-4.6 3" fill="none" stroke-width="2"/>',
    "interrupted": '<path d="M8 4v5" stroke-width="2"/><circle cx="8" cy="11.5" r="1"/>',
    "not_started": '<path d="M6 5v6M10 5v6" stroke-width="2"/>',
    "skipped": '<path d="M4 5l4 3-4 3M8 5l4 3-4 3" fill="none" stroke-width="1.6"/>',
    "reused": '<path d="M4 5l4 3-4 3M8 5l4 3-4 3" fill="none" stroke-width="1.6"/>',
    "marked": '<path d="M4 8.5l2.5 2.5L12 5.5" fill="none" stroke-width="2"/><rect x="2" y="2" width="12" height="12" '
    'rx="2" fill="none" stroke-width="1"/>',
    "partial": '<path d="M4 8h8" stroke-width="2"/>',
    "run": '<path d="M5 4l7 4-7 4z"/>',
    "hint": '<path d="M8 7v5" stroke-width="2"/><circle cx="8" cy="4.5" r="1.1"/>',
}
LABELS = {"not_started": "not executed", "run": "runs"}


def icon(state: str) -> str:
    """An inline SVG icon for a step, run or plan state (`succeeded`, `failed`, `run`, ...)."""
    fill, stroke = STATE_COLOURS.get(state, ("#eee", "#999"))
    label = escape(LABELS.get(state, state).replace("_", " "))
    shape = _SHAPES.get(state, '<circle cx="8" cy="8" r="3"/>')
    return (
        f'<svg class="icon icon-{escape(state)}" viewBox="0 0 16 16" width="16" height="16" role="img" '
        f'aria-label="{label}" stroke="{stroke}" fill="{stroke}"><title>{label}</title>'
        f'<rect x="0.5" y="0.5" width="15" height="15" rx="4" fill="{fill}" stroke="none"/>{shape}</svg>'
    )
