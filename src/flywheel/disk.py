"""A full disk, as flywheel names it: the write errors that mean "no room", and what causes them here.

A disk with no free space (ENOSPC), a quota (EDQUOT) and a file-size limit on the process (EFBIG:
`ulimit -f`, RLIMIT_FSIZE) all stop a write the same way for the operator: free space or lift the
limit, then resume. SQLite reports all three as "database or disk is full" or "disk I/O error", so
the journal asks here which one applies.
"""

from __future__ import annotations

import errno
import resource
import shutil
from pathlib import Path
from typing import TypeGuard

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})

DISK_FULL = "DiskFull"
"""The error type of a step whose writes were refused for want of room; a resume after the fix retries it."""

DISK_FULL_EXIT = 75
"""The exit code of a step process that could not write even its result file (sysexits' EX_TEMPFAIL)."""

FIX = "free space on that disk (or lift the file-size limit: `ulimit -f unlimited`)"


def is_disk_full(exc: BaseException) -> TypeGuard[OSError]:
    """True for a write refused for want of room: a full disk, a quota or a file-size limit."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def why_writes_fail(folder: Path) -> str:
    """What keeps files in `folder` from growing, as far as this process can tell: the free space on
    its disk, and a file-size limit on this process if there is one."""
    facts = []
    for place in (folder, *folder.parents):
        try:
            facts.append(f"{shutil.disk_usage(place).free // 1024} KiB free on the disk of {place}")
            break
        except OSError:
            continue
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        facts.append(f"this process may not write files over {soft} bytes (a file-size limit, `ulimit -f`)")
    return "; ".join(facts) or "the disk refused the write"
