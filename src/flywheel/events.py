"""The typed events a run is made of. Everything else (status, plans, time saved) is a projection.

One frozen dataclass per kind; `to_body`/`from_body` convert to the JSON stored in the journal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from flywheel.spec import StepKey


class EventKind(StrEnum):
    RUN_STARTED = "run_started"
    CONTEXTS_RESOLVED = "contexts_resolved"
    STEP_STARTED = "step_started"
    STEP_SUCCEEDED = "step_succeeded"
    STEP_FAILED = "step_failed"
    STEP_SKIPPED = "step_skipped"
    STEP_REUSED = "step_reused"
    STEP_MARKED = "step_marked"
    STEP_ATTACHED = "step_attached"
    RUN_FINISHED = "run_finished"
    RUN_INTERRUPTED = "run_interrupted"
    NOTIFIER_FAILED = "notifier_failed"
    INCIDENT_NOTED = "incident_noted"


class RunOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIAL = "partial"  # nothing failed, but the plan left declared keys not executed (`--only`)


@dataclass(frozen=True, kw_only=True)
class Event:
    kind: ClassVar[EventKind]
    run_id: int
    at: float

    @property
    def key(self) -> StepKey | None:
        return None

    def to_body(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body.pop("run_id")
        body.pop("at")
        return body


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    """A run began. `request` is the planning request that made it (so a run explains itself)."""

    kind: ClassVar[EventKind] = EventKind.RUN_STARTED
    pipeline: str
    env: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    parent_run: int | None = None
    root_run: int | None = None
    request: Mapping[str, Any] = field(default_factory=dict)
    user: str = ""
    host: str = ""
    flywheel_version: str = ""
    code_version: str = ""
    source: str = "local"
    external_id: str | None = None
    definition: str | None = None


@dataclass(frozen=True, kw_only=True)
class ContextsResolved(Event):
    kind: ClassVar[EventKind] = EventKind.CONTEXTS_RESOLVED
    step: str
    contexts: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class _StepEvent(Event):
    step: str
    context: str | None = None

    @property
    def key(self) -> StepKey:
        return StepKey(self.step, self.context)


@dataclass(frozen=True, kw_only=True)
class StepStarted(_StepEvent):
    kind: ClassVar[EventKind] = EventKind.STEP_STARTED
    attempt: int = 1
    log_path: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True, kw_only=True)
class StepAttached(_StepEvent):
    """A backend accepted the attempt and gave it an id (a Glue JobRunId), written before polling."""

    kind: ClassVar[EventKind] = EventKind.STEP_ATTACHED
    attempt: int = 1
    external_id: str = ""


@dataclass(frozen=True, kw_only=True)
class StepSucceeded(_StepEvent):
    kind: ClassVar[EventKind] = EventKind.STEP_SUCCEEDED
    attempt: int = 1
    started_at: float = 0.0
    duration: float = 0.0
    outputs: tuple[Mapping[str, Any], ...] = ()
    fingerprint: str | None = None
    dpu_hours: float | None = None


@dataclass(frozen=True, kw_only=True)
class StepFailed(_StepEvent):
    kind: ClassVar[EventKind] = EventKind.STEP_FAILED
    attempt: int = 1
    started_at: float = 0.0
    duration: float = 0.0
    error_type: str = "Error"
    error_message: str = ""
    exit_code: int | None = None
    will_retry: bool = False


@dataclass(frozen=True, kw_only=True)
class StepSkipped(_StepEvent):
    """Not executed in this run, and nothing to reuse (forced skip, or not selected)."""

    kind: ClassVar[EventKind] = EventKind.STEP_SKIPPED
    reason: str = ""
    forced: bool = False


@dataclass(frozen=True, kw_only=True)
class StepReused(_StepEvent):
    """Counted as done because an earlier run produced its outputs; `source_run` really produced them."""

    kind: ClassVar[EventKind] = EventKind.STEP_REUSED
    source_run: int
    reason: str = ""
    duration: float = 0.0
    outputs: tuple[Mapping[str, Any], ...] = ()
    fingerprint: str | None = None
    stale_kept: bool = False
    dpu_hours: float | None = None


@dataclass(frozen=True, kw_only=True)
class StepMarked(_StepEvent):
    """An operator recorded a fix made outside flywheel: the step counts as succeeded from now on."""

    kind: ClassVar[EventKind] = EventKind.STEP_MARKED
    note: str = ""
    user: str = ""
    outputs: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, kw_only=True)
class RunFinished(Event):
    kind: ClassVar[EventKind] = EventKind.RUN_FINISHED
    outcome: RunOutcome


@dataclass(frozen=True, kw_only=True)
class RunInterrupted(Event):
    kind: ClassVar[EventKind] = EventKind.RUN_INTERRUPTED
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class NotifierFailed(Event):
    kind: ClassVar[EventKind] = EventKind.NOTIFIER_FAILED
    notifier: str = ""
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class IncidentNoted(Event):
    """An operator's finding on the incident opened by this run: the root cause and the fix applied.

    Appended to the incident's own (failed) run, so the failure and what was learnt from it stay one
    history; `category` (one of the `CauseRule` causes) overrides the classified cause when given.
    """

    kind: ClassVar[EventKind] = EventKind.INCIDENT_NOTED
    cause: str = ""
    fix: str = ""
    category: str | None = None
    user: str = ""


EVENT_TYPES: Mapping[EventKind, type[Event]] = {
    cls.kind: cls
    for cls in (
        RunStarted,
        ContextsResolved,
        StepStarted,
        StepAttached,
        StepSucceeded,
        StepFailed,
        StepSkipped,
        StepReused,
        StepMarked,
        RunFinished,
        RunInterrupted,
        NotifierFailed,
        IncidentNoted,
    )
}

_TUPLE_FIELDS = {"contexts", "outputs"}

FREE_TEXT_FIELDS = frozenset({"error_message", "reason", "note", "error", "cause", "fix"})
"""Fields holding text a job, a backend or an operator wrote, where a secret value could appear."""


def masked(event: Event, mask: Callable[[str], str]) -> Event:
    """The event with `mask` applied to its free text (an error message, a reason, a note)."""
    changed: dict[str, Any] = {}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if f.name in FREE_TEXT_FIELDS and isinstance(value, str) and (shown := mask(value)) != value:
            changed[f.name] = shown
    return dataclasses.replace(event, **changed) if changed else event


def event_from_body(kind: str, run_id: int, at: float, body: Mapping[str, Any]) -> Event:
    """Rebuild an event from its stored JSON body; unknown fields (from newer versions) are ignored."""
    cls = EVENT_TYPES[EventKind(kind)]
    names = {f.name for f in dataclasses.fields(cls)}
    args = {k: (tuple(v) if k in _TUPLE_FIELDS and v is not None else v) for k, v in body.items() if k in names}
    if cls is RunFinished:
        args["outcome"] = RunOutcome(str(body["outcome"]))
    return cls(run_id=run_id, at=at, **args)
