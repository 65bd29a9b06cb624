"""The executor seam: how one attempt of one step is carried out (subprocess, thread, Glue job).

Executors are small plug-ins; the runner owns retries, timeouts' bookkeeping and the journal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flywheel.invocation import StepInvocation


@dataclass(frozen=True)
class Attempt:
    """Everything an executor needs to run one attempt."""

    invocation: StepInvocation
    log_path: Path
    timeout: float | None = None
    command: str | None = None
    resources: Mapping[str, Any] = field(default_factory=dict)
    on_attached: Callable[[str], None] | None = None  # called with a backend run id before waiting
    pythonpath: tuple[str, ...] = ()  # the pipeline's folder, so jobs can live beside pipeline.yaml
    journaled_runs: tuple[str, ...] = ()
    """Backend run ids an earlier run journaled for this key in an attempt that never ended (its runner
    died while they ran), newest first: a backend that outlives its runner asks about them before
    starting anything, since such a run may have finished, or may still be running, unwatched."""


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    error_type: str | None = None
    error_message: str | None = None
    exit_code: int | None = None
    outputs: tuple[Mapping[str, Any], ...] = ()
    external_id: str | None = None
    cancelled: bool = False
    timed_out: bool = False
    dpu_hours: float | None = None


class Executor(Protocol):
    """Where attempts run. Its lifecycle is part of the contract: `start` before the first attempt (a
    backend may warm up while the run is planned), `close` once the run is over (nothing it started
    may outlive the run)."""

    name: str

    def start(self) -> None: ...

    def execute(self, attempt: Attempt, cancel: threading.Event) -> Outcome:
        """Run the attempt to its end, or until `cancel` is set (then stop it and return cancelled)."""
        ...

    def close(self) -> None: ...


class StatelessExecutor:
    """The lifecycle of an executor that holds nothing between attempts (a cloud API client)."""

    def start(self) -> None:
        """Nothing to warm up."""

    def close(self) -> None:
        """Nothing outlives an attempt."""
