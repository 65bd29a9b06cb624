"""The end of a log file, read the same way everywhere (terminal, dashboard, reports, step errors).

Logs can be gigabytes: only the last `max_bytes` are read, and a line cut by that window is dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class Tail:
    lines: list[str]
    cut: bool  # the file holds more than these lines
    size: int  # the file's size in bytes: where the tail ends (and a follower resumes)


def tail(path: str | Path, lines: int, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Tail:
    """The last `lines` lines of a log; an unreadable or missing file is an empty tail."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            raw = handle.read()
    except OSError:
        return Tail([], False, 0)
    found = raw.decode("utf-8", "replace").splitlines()
    if size > max_bytes and found:
        found = found[1:]  # the window starts inside a line
    return Tail(found[-lines:], len(found) > lines or size > max_bytes, size)
