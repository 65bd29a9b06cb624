"""A test seam for crash safety, inert unless one of its environment variables is set.

The journal consults it around every append, so the reliability tests (`tests/reliability/`) can
SIGKILL the runner at exact, reproducible points of a run and check that `flywheel resume` finishes it.
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Sequence

from flywheel.events import Event, EventKind


class KillSwitch:
    """A test seam, inert unless one of its variables is set: SIGKILL this process at an exact point.

    `FLYWHEEL_TEST_KILL_AFTER_EVENT=N`: right after this journal's Nth append is committed.
    `FLYWHEEL_TEST_KILL_BEFORE_SUCCESS=N`: right before the Nth append holding a step success, i.e.
    after the step committed its outputs and before its success is journaled. The reliability tests
    (`tests/reliability/`) crash the runner this way and check that a resume finishes the run.
    """

    def __init__(self, after_event: int, before_success: int) -> None:
        self.after_event = after_event
        self.before_success = before_success
        self._appends = itertools.count(1)
        self._successes = itertools.count(1)

    @classmethod
    def from_environment(cls) -> KillSwitch | None:
        after = int(os.environ.get("FLYWHEEL_TEST_KILL_AFTER_EVENT") or 0)
        before = int(os.environ.get("FLYWHEEL_TEST_KILL_BEFORE_SUCCESS") or 0)
        return cls(after, before) if after or before else None

    def before(self, events: Sequence[Event]) -> None:
        holds_success = any(e.kind is EventKind.STEP_SUCCEEDED for e in events)
        if self.before_success and holds_success and next(self._successes) == self.before_success:
            os.kill(os.getpid(), signal.SIGKILL)

    def after(self) -> None:
        if self.after_event and next(self._appends) == self.after_event:
            os.kill(os.getpid(), signal.SIGKILL)
