"""Durations as people read them, shared by the terminal, notifications and reports (no Rich here)."""

from __future__ import annotations


def duration(seconds: float | None, *, unknown: str = "") -> str:
    """`250 ms`, `42.0 s`, `3 min 05 s`, `1 h 40 min`; `unknown` when unknown (notifications say `?`)."""
    if seconds is None:
        return unknown
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
