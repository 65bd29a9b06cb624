"""Fold a run's events into its state: what succeeded, failed, was interrupted or never started.

This is the only place that interprets a history. Step status is derived, never stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from flywheel.events import (
    ContextsResolved,
    Event,
    RunFinished,
    RunInterrupted,
    RunOutcome,
    RunStarted,
    StepAttached,
    StepFailed,
    StepMarked,
    StepReused,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)
from flywheel.spec import StepKey


class StepStatus(StrEnum):
    NOT_STARTED = "not_started"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"
    REUSED = "reused"
    MARKED = "marked"

    @property
    def done(self) -> bool:
        """Outputs exist and can be built upon."""
        return self in (StepStatus.SUCCEEDED, StepStatus.REUSED, StepStatus.MARKED)


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    PARTIAL = "partial"  # ended without a failure, but declared keys were left not executed
    UNFINISHED = "unfinished"  # no end event: still running, or the runner died (the lock tells which)

    @property
    def resumable(self) -> bool:
        """Work is left that a resume would do. Whether a later run already did it is `api.recovered_by`."""
        return self in (RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.PARTIAL)


@dataclass(frozen=True)
class StepState:
    key: StepKey
    status: StepStatus = StepStatus.NOT_STARTED
    attempts: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    duration: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    exit_code: int | None = None
    outputs: tuple[Mapping[str, Any], ...] = ()
    fingerprint: str | None = None
    produced_by: int | None = None  # the run whose execution produced the outputs
    reason: str | None = None
    note: str | None = None
    log_path: str | None = None
    external_id: str | None = None
    dpu_hours: float | None = None
    stale_kept: bool = False


@dataclass(frozen=True)
class RunState:
    run_id: int
    started: RunStarted | None
    status: RunStatus
    steps: Mapping[StepKey, StepState] = field(default_factory=dict)
    contexts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    finished_at: float | None = None
    last_event_at: float | None = None

    def step(self, key: StepKey) -> StepState:
        return self.steps.get(key) or StepState(key)

    @property
    def failed_keys(self) -> tuple[StepKey, ...]:
        return tuple(k for k, s in self.steps.items() if s.status is StepStatus.FAILED)

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        end = self.finished_at or self.last_event_at
        return None if end is None else end - self.started.at


_FINISHED_AS = {
    RunOutcome.SUCCEEDED: RunStatus.SUCCEEDED,
    RunOutcome.FAILED: RunStatus.FAILED,
    RunOutcome.PARTIAL: RunStatus.PARTIAL,
}


def fold(run_id: int, events: Iterable[Event]) -> RunState:
    """The state of one run from its events, in order."""
    started: RunStarted | None = None
    steps: dict[StepKey, StepState] = {}
    contexts: dict[str, tuple[str, ...]] = {}
    status = RunStatus.UNFINISHED
    finished_at: float | None = None
    last_at: float | None = None

    for event in events:
        last_at = event.at
        match event:
            case RunStarted():
                started = event
            case ContextsResolved():
                contexts[event.step] = event.contexts
            case StepStarted():
                prev = steps.get(event.key) or StepState(event.key)
                steps[event.key] = replace(
                    prev,
                    status=StepStatus.RUNNING,
                    attempts=max(prev.attempts, event.attempt),
                    started_at=event.at if prev.started_at is None or event.attempt == 1 else prev.started_at,
                    ended_at=None,
                    log_path=event.log_path,
                    fingerprint=event.fingerprint,
                )
            case StepAttached():
                steps[event.key] = replace(steps.get(event.key) or StepState(event.key), external_id=event.external_id)
            case StepSucceeded():
                prev = steps.get(event.key) or StepState(event.key)
                steps[event.key] = replace(
                    prev,
                    status=StepStatus.SUCCEEDED,
                    attempts=max(prev.attempts, event.attempt),
                    ended_at=event.at,
                    duration=event.duration,
                    outputs=event.outputs,
                    fingerprint=event.fingerprint or prev.fingerprint,
                    produced_by=run_id,
                    error_type=None,
                    error_message=None,
                    dpu_hours=event.dpu_hours,
                )
            case StepFailed():
                prev = steps.get(event.key) or StepState(event.key)
                steps[event.key] = replace(
                    prev,
                    status=StepStatus.RUNNING if event.will_retry else StepStatus.FAILED,
                    attempts=max(prev.attempts, event.attempt),
                    ended_at=event.at,
                    duration=event.duration,
                    error_type=event.error_type,
                    error_message=event.error_message,
                    exit_code=event.exit_code,
                )
            case StepSkipped():
                steps[event.key] = StepState(event.key, status=StepStatus.SKIPPED, reason=event.reason)
            case StepReused():
                steps[event.key] = StepState(
                    event.key,
                    status=StepStatus.REUSED,
                    duration=event.duration,
                    outputs=event.outputs,
                    fingerprint=event.fingerprint,
                    produced_by=event.source_run,
                    reason=event.reason,
                    dpu_hours=event.dpu_hours,
                    stale_kept=event.stale_kept,
                )
            case StepMarked():
                prev = steps.get(event.key) or StepState(event.key)
                steps[event.key] = replace(
                    prev,
                    status=StepStatus.MARKED,
                    note=event.note,
                    outputs=event.outputs or prev.outputs,
                    produced_by=run_id,
                    reason=f"marked succeeded by {event.user or 'an operator'}: {event.note}",
                )
            case RunFinished():
                status = _FINISHED_AS[event.outcome]
                finished_at = event.at
            case RunInterrupted():
                status = RunStatus.INTERRUPTED
                finished_at = event.at

    if status in (RunStatus.INTERRUPTED, RunStatus.FAILED):
        # A step still "running" when the run ended was cut off: it is interrupted, not done.
        steps = {
            k: replace(s, status=StepStatus.INTERRUPTED) if s.status is StepStatus.RUNNING else s
            for k, s in steps.items()
        }
    return RunState(
        run_id=run_id,
        started=started,
        status=status,
        steps=steps,
        contexts=contexts,
        finished_at=finished_at,
        last_event_at=last_at,
    )


def as_crashed(state: RunState) -> RunState:
    """The state of an unfinished run whose runner is gone: running steps become interrupted."""
    if state.status is not RunStatus.UNFINISHED:
        return state
    steps = {
        k: replace(s, status=StepStatus.INTERRUPTED) if s.status is StepStatus.RUNNING else s
        for k, s in state.steps.items()
    }
    return replace(state, status=RunStatus.INTERRUPTED, steps=steps)


def as_running(state: RunState) -> RunState:
    return replace(state, status=RunStatus.RUNNING) if state.status is RunStatus.UNFINISHED else state
