"""Durations and times as people read them, shared by the terminal, notifications, reports and the
dashboard (no Rich here)."""

from __future__ import annotations

import time


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


def when(at: float | None, *, seconds: bool = True) -> str:
    """A moment in local time with its zone (`2026-12-03 04:12:09 UTC`), so a page or a message read
    in another zone is not misread; empty when unknown."""
    if at is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z", time.localtime(at))
