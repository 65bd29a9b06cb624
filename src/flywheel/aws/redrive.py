"""Which states a `RedriveExecution` would restart, worked out from a definition and an execution history.

A redrive is only worth calling when it reruns the task that failed. "Redriving executions in Step
Functions" (https://docs.aws.amazon.com/step-functions/latest/dg/redrive-executions.html) and the
RedriveExecution API reference say what it restarts: the same definition, from the unsuccessful states,
the ones without a `...StateExited` event; in an inline `Map` or a `Parallel` only the iterations and
branches that failed or aborted; the states that succeeded are not run again. So:

- a task with no `Catch` that failed (or timed out, or was running when the execution was aborted or
  timed out) has no `TaskStateExited`: a redrive reruns it;
- a task whose `Catch` handled its error has exited: a redrive restarts from where the `Catch` led, often
  a `Fail` state, which fails again at once without rerunning the task;
- a `Parallel` branch that caught its own failure and ended succeeded: a redrive does not rerun it.

Pure: a definition (dict or JSON text) and history events (as `GetExecutionHistory` returns them) in, a
`RedriveScope` out. It reads any state machine, the exported one and those written by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CONTAINERS = frozenset({"Parallel", "Map"})
"""States that hold others: a redrive restarts them, and inside them only what did not finish."""
TASK_FAILURES = frozenset({"TaskFailed", "TaskTimedOut", "TaskStartFailed", "TaskSubmitFailed"})
_GLUE_START = re.compile(r"^arn:[^:]+:states:::(aws-sdk:)?glue:startJobRun", re.IGNORECASE)


@dataclass(frozen=True)
class RestartedState:
    """A state a redrive would enter again (a leaf: not a `Parallel` or `Map` holding other restarts)."""

    name: str
    type: str  # the ASL `Type`; "?" when the definition does not hold the state
    glue: bool = False  # a Glue `startJobRun` task

    def describe(self) -> str:
        kind = "Glue task" if self.glue else ("state" if self.type == "?" else f"{self.type} state")
        return f"{kind} {self.name}"


@dataclass(frozen=True)
class FailedTask:
    """A task whose last attempt failed (error, timeout, refused start)."""

    name: str
    error: str
    glue: bool
    exited: bool  # a `Catch` handled the error and the state exited: a redrive does not rerun it

    def describe(self) -> str:
        return f"{'Glue task' if self.glue else 'task'} {self.name} ({self.error})"


@dataclass(frozen=True)
class RedriveScope:
    """What a redrive would restart and whether that reruns the failed task; `refusal` says why not."""

    restarts: tuple[RestartedState, ...]
    failed: tuple[FailedTask, ...]

    @property
    def reruns_failed_task(self) -> bool:
        return self.refusal is None

    @property
    def refusal(self) -> str | None:
        """Why a redrive would not rerun the failed task, in words for the operator; None when it would."""
        restarts = ", ".join(r.describe() for r in self.restarts)
        caught = [f for f in self.failed if f.exited]
        what = " and ".join(f.describe() for f in caught) if caught else "the failed task"
        fail = next((r for r in self.restarts if r.type == "Fail"), None)
        if not self.restarts:
            return (
                "every state the execution entered has exited, so a redrive would find nothing to restart "
                "(Step Functions restarts only states without an Exited event)"
            )
        if fail is not None:
            led = f", where the Catch of {what} led after it failed," if caught else ""
            return (
                f"a redrive restarts from the Fail state {fail.name}{led} and fails again at once without "
                f"rerunning {what} (a redrive restarts the states without an Exited event; a task whose "
                "Catch handled its error has exited)"
            )
        if caught:
            return (
                f"{what} failed and exited through its Catch; a redrive restarts from {restarts} instead and "
                "would not rerun it"
            )
        if not any(r.type == "Task" for r in self.restarts):
            return f"a redrive restarts from {restarts}, where no task runs: it would fail the same way"
        return None


def _states(definition: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every state of a definition, those of `Parallel` branches and `Map` iterations included (state
    names are unique in a whole state machine)."""
    for name, state in (definition.get("States") or {}).items():
        yield str(name), state
        for branch in state.get("Branches") or ():
            yield from _states(branch)
        for field in ("Iterator", "ItemProcessor"):
            inner = state.get(field)
            if isinstance(inner, Mapping):
                yield from _states(inner)


def _is_glue_start(state: Mapping[str, Any]) -> bool:
    return state.get("Type") == "Task" and bool(_GLUE_START.match(str(state.get("Resource") or "")))


def _details(event: Mapping[str, Any]) -> Mapping[str, Any]:
    for name, value in event.items():
        if name.endswith("EventDetails") and isinstance(value, Mapping):
            return value
    return {}


def redrive_scope(definition: Mapping[str, Any] | str, history: Sequence[Mapping[str, Any]]) -> RedriveScope:
    """The states a redrive of this execution would restart, and the tasks whose last attempt failed.

    Each entry of a state (`...StateEntered`) stays open until its `...StateExited`; events are tied to
    their entry through the `previousEventId` chain, so the iterations of a `Map` and the branches of a
    `Parallel` do not mix. After an `ExecutionRedriven` event the states still open are entered again; an
    entry that a later redrive re-entered is replaced by the new one.
    """
    parsed: Mapping[str, Any] = json.loads(definition) if isinstance(definition, str) else definition
    by_name = dict(_states(parsed))
    entry_of: dict[int, int] = {}  # event id -> id of the StateEntered event of the state it belongs to
    name_of: dict[int, str] = {}  # StateEntered id -> state name
    open_entries: dict[int, str] = {}
    carried: dict[int, str] = {}  # entries left open before the last redrive, until entered again
    outcome: dict[int, str | None] = {}  # task entry -> error of its last failed attempt, None after a success
    exited: set[int] = set()
    for event in sorted(history, key=lambda e: int(e["id"])):
        event_id, previous = int(event["id"]), int(event.get("previousEventId") or 0)
        kind, details = str(event["type"]), _details(event)
        if kind.endswith("StateEntered"):
            name = str(details.get("name"))
            entry_of[event_id], name_of[event_id] = event_id, name
            again = next((e for e, n in carried.items() if n == name), None)
            if again is not None:  # the redrive re-entered it: the new entry replaces the old one
                del carried[again]
                open_entries.pop(again, None)
                outcome.pop(again, None)
            open_entries[event_id] = name
            continue
        entry = entry_of.get(previous)
        if entry is not None:
            entry_of[event_id] = entry
        if kind == "ExecutionRedriven":
            carried = dict(open_entries)
        elif kind.endswith("StateExited"):
            name = str(details.get("name"))
            if entry is None or name_of.get(entry) != name:  # the chain left the state: the latest entry
                entry = max((e for e, n in open_entries.items() if n == name), default=None)
            if entry is not None:
                open_entries.pop(entry, None)
                carried.pop(entry, None)
                exited.add(entry)
        elif entry is not None and kind in TASK_FAILURES:
            outcome[entry] = str(details.get("error") or kind)
        elif entry is not None and kind == "TaskSucceeded":
            outcome[entry] = None

    def state_of(name: str) -> Mapping[str, Any]:
        return by_name.get(name) or {}

    unfinished = list(dict.fromkeys(open_entries.values()))
    leaves = [n for n in unfinished if state_of(n).get("Type") not in CONTAINERS] or unfinished
    restarts = tuple(
        RestartedState(name, str(state_of(name).get("Type") or "?"), _is_glue_start(state_of(name))) for name in leaves
    )
    failed: dict[str, FailedTask] = {}
    for entry, error in outcome.items():
        if error is None:
            continue
        name = name_of[entry]
        failed[name] = FailedTask(name, error, _is_glue_start(state_of(name)), exited=entry in exited)
    return RedriveScope(restarts=restarts, failed=tuple(failed.values()))
