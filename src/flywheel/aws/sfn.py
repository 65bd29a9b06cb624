"""A Step Functions execution history is just another source of events.

`read_execution` turns `GetExecutionHistory` into an `ExecutionRecord`: one `TaskRecord` per
`step[context]`, found by the Glue **JobName** and the **context argument** of each task (never by state
names, so a hand-built state machine reads too), with each attempt's JobRunId and Glue error.

What the history does not settle, Glue does. In a `Parallel`, a branch cancelled because its sibling
failed ended nowhere in the history, yet its Glue run goes on; a task can time out while its run later
succeeds; an aborted execution leaves runs behind. For every such attempt the record asks Glue
(`GetJobRun`) for the run's real state: SUCCEEDED counts as done, RUNNING means a local recovery
re-attaches to it (the Glue executor finds the run by its labels), anything else failed.

`execution_events` is the pure translation of a record into journal events (source `sfn`, external id the
execution ARN); `import_execution` appends them, so the existing pure planner plans the rest exactly as
for a local run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from flywheel.aws import glue_entry as contract
from flywheel.aws.asl import SKIP_INPUT, glue_job_name
from flywheel.errors import BackendError, NotFound, UsageError
from flywheel.events import (
    ContextsResolved,
    Event,
    RunFinished,
    RunInterrupted,
    RunOutcome,
    RunStarted,
    StepAttached,
    StepFailed,
    StepReused,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)
from flywheel.journal import Journal
from flywheel.planner import Provenance
from flywheel.spec import PipelineSpec, StepKey
from flywheel.state import RunState, StepStatus, fold

GLUE_ACTIVE = frozenset({"STARTING", "RUNNING", "WAITING", "STOPPING"})
RECOVERS_INPUT = "recovers"
"""Execution-input field naming the execution a recovery continues (`flywheel sfn recover --in-aws`)."""


class ExecutionStatus(StrEnum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    ABORTED = "ABORTED"
    PENDING_REDRIVE = "PENDING_REDRIVE"

    @property
    def recoverable(self) -> bool:
        return self in (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT, ExecutionStatus.ABORTED)


class AttemptStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RUNNING = "running"  # the Glue run is still going: re-attach
    UNKNOWN = "unknown"  # ended without a word in the history and no Glue run to ask


@dataclass(frozen=True)
class AttemptRecord:
    """One `StartJobRun` of a task (a `Retry` makes several)."""

    job_run_id: str | None
    status: AttemptStatus
    started_at: float
    ended_at: float | None = None
    glue_state: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    from_glue: bool = False  # the status came from GetJobRun, not from the history
    dpu_hours: float | None = None


@dataclass(frozen=True)
class TaskRecord:
    key: StepKey
    glue_job: str
    state_name: str
    attempts: tuple[AttemptRecord, ...]

    @property
    def last(self) -> AttemptRecord:
        return self.attempts[-1]

    @property
    def job_run_id(self) -> str | None:
        return self.last.job_run_id


@dataclass(frozen=True)
class ExecutionRecord:
    """What happened in one execution, per `step[context]`."""

    arn: str
    name: str
    state_machine_arn: str
    status: ExecutionStatus
    started_at: float
    stopped_at: float | None
    input: Mapping[str, Any]
    error: str | None
    cause: str | None
    tasks: Mapping[StepKey, TaskRecord]
    skipped: tuple[StepKey, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def recovers(self) -> str | None:
        value = self.input.get(RECOVERS_INPUT)
        return str(value) if value else None

    @property
    def still_running(self) -> tuple[TaskRecord, ...]:
        """Tasks whose Glue run is still going although the execution stopped."""
        return tuple(t for t in self.tasks.values() if t.last.status is AttemptStatus.RUNNING)


# ---------------------------------------------------------------------------------------------
# reading


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value) / 1000 if value > 1e11 else float(value)
    return 0.0


def history(sfn_client: Any, execution_arn: str) -> list[dict[str, Any]]:
    """Every event of an execution, oldest first (all pages)."""
    events: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        request: dict[str, Any] = {"executionArn": execution_arn, "maxResults": 1000}
        if token:
            request["nextToken"] = token
        page = sfn_client.get_execution_history(**request)
        events.extend(page.get("events", ()))
        token = page.get("nextToken")
        if not token:
            return sorted(events, key=lambda e: int(e["id"]))


def _details(event: Mapping[str, Any]) -> Mapping[str, Any]:
    for name, value in event.items():
        if name.endswith("EventDetails") and isinstance(value, Mapping):
            return value
    return {}


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _token_in(name: str, values: Sequence[str]) -> bool:
    pattern = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])")
    return any(pattern.search(v) for v in values)


def _key_of(
    spec: PipelineSpec, by_job: Mapping[str, list[str]], job: str, arguments: Mapping[str, Any]
) -> StepKey | None:
    """The `step[context]` a Glue task ran: by `--flywheel_step` or JobName, then by `--flywheel_context`
    or, for hand-built machines, the one context name that appears in the arguments."""
    step_id = arguments.get(contract.arg(contract.STEP))
    if step_id not in spec.by_id:
        candidates = by_job.get(job, [])
        if len(candidates) != 1:
            return None
        step_id = candidates[0]
    step = spec.by_id[str(step_id)]
    if not step.contexts:
        return StepKey(step.id)
    context = arguments.get(contract.arg(contract.CONTEXT))
    if context in step.contexts:
        return StepKey(step.id, str(context))
    values = [str(v) for k, v in arguments.items() if not str(k).startswith(contract.arg(contract.PARAMS))]
    found = [name for name in step.contexts if _token_in(name, values)]
    return StepKey(step.id, found[0]) if len(found) == 1 else None


def _glue_outcome(run: Mapping[str, Any]) -> tuple[AttemptStatus, str | None, str | None, float | None]:
    """Status, error type and message of a Glue run (the Glue executor's own mapping)."""
    from flywheel.executors.glue import outcome_of

    state = str(run.get("JobRunState") or "")
    if state in GLUE_ACTIVE:
        return AttemptStatus.RUNNING, None, None, None
    outcome = outcome_of(run)
    if outcome.succeeded:
        return AttemptStatus.SUCCEEDED, None, None, outcome.dpu_hours
    return AttemptStatus.FAILED, outcome.error_type, outcome.error_message, outcome.dpu_hours


@dataclass
class _Open:
    """An attempt being read from the history."""

    key: StepKey
    job: str
    state_name: str
    started_at: float
    job_run_id: str | None = None
    status: AttemptStatus | None = None
    ended_at: float | None = None
    glue_state: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    dpu_hours: float | None = None


def _ask_glue(glue_client: Any, attempt: _Open) -> AttemptRecord:
    """Settle an attempt the history left open with the run's real state in Glue."""
    from botocore.exceptions import BotoCoreError, ClientError

    base = AttemptRecord(
        job_run_id=attempt.job_run_id,
        status=attempt.status or AttemptStatus.UNKNOWN,
        started_at=attempt.started_at,
        ended_at=attempt.ended_at,
        error_type=attempt.error_type,
        error_message=attempt.error_message,
    )
    if attempt.job_run_id is None:
        return base
    try:
        run = glue_client.get_job_run(JobName=attempt.job, RunId=attempt.job_run_id)["JobRun"]
    except (ClientError, BotoCoreError):
        return base
    status, error_type, message, cost = _glue_outcome(run)
    ended = run.get("CompletedOn")
    return AttemptRecord(
        job_run_id=attempt.job_run_id,
        status=status,
        started_at=attempt.started_at,
        ended_at=_epoch(ended) if ended is not None and status is not AttemptStatus.RUNNING else attempt.ended_at,
        glue_state=str(run.get("JobRunState")),
        error_type=error_type,
        error_message=message,
        from_glue=True,
        dpu_hours=cost,
    )


def read_execution(
    sfn_client: Any, glue_client: Any, execution_arn: str, *, spec: PipelineSpec, env_name: str
) -> ExecutionRecord:
    """Describe an execution and map its history to the pipeline's `step[context]` keys."""
    from botocore.exceptions import ClientError

    try:
        described = sfn_client.describe_execution(executionArn=execution_arn)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("ExecutionDoesNotExist", "InvalidArn"):
            raise NotFound(
                f"no Step Functions execution {execution_arn}",
                fix="list recent ones with `flywheel sfn status` or in the console",
            ) from None
        raise BackendError(f"cannot describe execution {execution_arn}: {exc}") from None
    by_job: dict[str, list[str]] = {}
    for step in spec.steps:
        by_job.setdefault(glue_job_name(spec, step, env_name), []).append(step.id)

    scheduled: dict[int, _Open] = {}  # TaskScheduled event id -> attempt
    parents: dict[int, int] = {}
    warnings: list[str] = []
    entered: dict[int, str] = {}  # event id -> name of the state it belongs to
    attempts: dict[StepKey, list[_Open]] = {}
    for event in history(sfn_client, execution_arn):
        event_id, previous = int(event["id"]), int(event.get("previousEventId") or 0)
        parents[event_id] = previous
        kind = str(event["type"])
        details = _details(event)
        at = _epoch(event.get("timestamp"))
        if kind.endswith("StateEntered"):
            entered[event_id] = str(details.get("name", ""))
            continue
        entered[event_id] = entered.get(previous, "")
        owner = _owning_task(event_id, parents, scheduled)
        if kind == "TaskScheduled":
            if details.get("resourceType") != "glue" or not str(details.get("resource", "")).startswith("startJobRun"):
                continue
            parameters = _json(details.get("parameters")) or {}
            job = str(parameters.get("JobName", ""))
            arguments = parameters.get("Arguments") or {}
            key = _key_of(spec, by_job, job, arguments)
            if key is None:
                warnings.append(f"Glue task {entered[event_id] or '?'} (job {job}) matches no step of {spec.pipeline}")
                continue
            attempt = _Open(key=key, job=job, state_name=entered[event_id], started_at=at)
            scheduled[event_id] = attempt
            attempts.setdefault(key, []).append(attempt)
        elif owner is None:
            continue
        elif kind == "TaskSubmitted":
            output = _json(details.get("output")) or {}
            owner.job_run_id = output.get("JobRunId") or owner.job_run_id
        elif kind == "TaskSucceeded":
            run = _json(details.get("output"))
            if isinstance(run, Mapping) and run.get("JobRunState") == "SUCCEEDED":
                owner.job_run_id = str(run.get("Id") or owner.job_run_id)
                owner.status, owner.ended_at, owner.glue_state = AttemptStatus.SUCCEEDED, at, "SUCCEEDED"
                owner.dpu_hours = _glue_outcome(run)[3]
            # anything else (moto reports an aborted task as succeeded with no output): ask Glue
        elif kind in ("TaskFailed", "TaskTimedOut", "TaskStartFailed", "TaskSubmitFailed"):
            error, cause = str(details.get("error") or kind), str(details.get("cause") or "")
            run = _json(cause)
            owner.ended_at = at
            if isinstance(run, Mapping) and run.get("JobRunState"):
                owner.job_run_id = str(run.get("Id") or owner.job_run_id)
                owner.status, owner.error_type, owner.error_message, owner.dpu_hours = _glue_outcome(run)
                owner.glue_state = str(run["JobRunState"])
            else:  # the task failed (timeout, throttling, ...): the run itself may have gone on
                owner.error_type, owner.error_message = error, cause or error

    tasks: dict[StepKey, TaskRecord] = {}
    for key, opened in attempts.items():
        settled = []
        for attempt in opened:
            if attempt.status in (AttemptStatus.SUCCEEDED,) or (
                attempt.status is AttemptStatus.FAILED and attempt.glue_state is not None
            ):
                settled.append(
                    AttemptRecord(
                        job_run_id=attempt.job_run_id,
                        status=attempt.status,
                        started_at=attempt.started_at,
                        ended_at=attempt.ended_at,
                        glue_state=attempt.glue_state,
                        error_type=attempt.error_type,
                        error_message=attempt.error_message,
                        dpu_hours=attempt.dpu_hours,
                    )
                )
            else:
                settled.append(_ask_glue(glue_client, attempt))
        tasks[key] = TaskRecord(key, opened[-1].job, opened[-1].state_name, tuple(settled))

    raw_input = _json(described.get("input")) or {}
    execution_input = raw_input if isinstance(raw_input, Mapping) else {}
    skipped = _skipped_keys(spec, execution_input.get(SKIP_INPUT), warnings)
    stop = described.get("stopDate")
    return ExecutionRecord(
        arn=execution_arn,
        name=str(described.get("name", execution_arn.rsplit(":", 1)[-1])),
        state_machine_arn=str(described.get("stateMachineArn", "")),
        status=ExecutionStatus(str(described["status"])),
        started_at=_epoch(described.get("startDate")),
        stopped_at=_epoch(stop) if stop is not None else None,
        input=execution_input,
        error=described.get("error"),
        cause=described.get("cause"),
        tasks=tasks,
        skipped=tuple(k for k in skipped if k not in tasks),
        warnings=tuple(warnings),
    )


def _owning_task(event_id: int, parents: Mapping[int, int], scheduled: Mapping[int, _Open]) -> _Open | None:
    """The Glue attempt an event belongs to: walk `previousEventId` back to its `TaskScheduled`."""
    probe = parents.get(event_id, 0)
    for _ in range(50):
        if probe in scheduled:
            return scheduled[probe]
        if probe == 0:
            return None
        probe = parents.get(probe, 0)
    return None


def _skipped_keys(spec: PipelineSpec, value: Any, warnings: list[str]) -> list[StepKey]:
    if not isinstance(value, list):
        return []
    out: list[StepKey] = []
    for item in value:
        key = StepKey.parse(str(item))
        if key.step not in spec.by_id:
            warnings.append(f"the input skips {item!r}, which is not a step of {spec.pipeline}")
            continue
        out.extend(k for k in spec.by_id[key.step].keys if key.context in (None, k.context))
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------------------------------------
# events


def execution_events(
    spec: PipelineSpec,
    env_name: str,
    record: ExecutionRecord,
    run_id: int,
    *,
    reused: Mapping[StepKey, Provenance] | None = None,
    parent_run: int | None = None,
    root_run: int | None = None,
) -> list[Event]:
    """The journal events an execution amounts to (pure). Keys the input skipped are reused from
    `reused` (the runs that really produced them) or recorded as skipped."""
    reused = reused or {}
    events: list[Event] = [
        RunStarted(
            run_id=run_id,
            at=record.started_at,
            pipeline=spec.pipeline,
            env=env_name,
            parameters=dict(spec.params),
            parent_run=parent_run,
            root_run=root_run,
            request={
                "mode": "sfn",
                "execution": record.arn,
                "skip": [str(k) for k in record.skipped],
                **({RECOVERS_INPUT: record.recovers} if record.recovers else {}),
            },
            user="stepfunctions",
            host=record.state_machine_arn.split(":")[3] if record.state_machine_arn.count(":") >= 3 else "aws",
            source="sfn",
            external_id=record.arn,
            definition=spec.source_path,
        )
    ]
    events += [
        ContextsResolved(run_id=run_id, at=record.started_at, step=s.id, contexts=tuple(s.contexts))
        for s in spec.steps
        if s.contexts
    ]
    for key in record.skipped:
        source = reused.get(key)
        if source is not None:
            events.append(
                StepReused(
                    run_id=run_id,
                    at=record.started_at,
                    step=key.step,
                    context=key.context,
                    source_run=source.produced_by,
                    reason=f"skipped by the execution input; produced by run {source.produced_by}",
                    duration=source.duration,
                    outputs=source.outputs,
                    fingerprint=source.fingerprint,
                    dpu_hours=source.dpu_hours,
                )
            )
        else:
            events.append(
                StepSkipped(
                    run_id=run_id, at=record.started_at, step=key.step, context=key.context, reason="skipped by input"
                )
            )
    for key in spec.keys:
        task = record.tasks.get(key)
        if task is not None:
            events += _task_events(run_id, task)
    end = record.stopped_at or max((e.at for e in events), default=record.started_at)
    if record.status is ExecutionStatus.SUCCEEDED:
        events.append(RunFinished(run_id=run_id, at=end, outcome=RunOutcome.SUCCEEDED))
    elif record.status is ExecutionStatus.ABORTED:
        events.append(RunInterrupted(run_id=run_id, at=end, reason="execution aborted in Step Functions"))
    elif record.status is not ExecutionStatus.RUNNING:
        events.append(RunFinished(run_id=run_id, at=end, outcome=RunOutcome.FAILED))
    return events


def _task_events(run_id: int, task: TaskRecord) -> Iterator[Event]:
    key = task.key
    for number, attempt in enumerate(task.attempts, start=1):
        yield StepStarted(run_id=run_id, at=attempt.started_at, step=key.step, context=key.context, attempt=number)
        if attempt.job_run_id:
            yield StepAttached(
                run_id=run_id,
                at=attempt.started_at,
                step=key.step,
                context=key.context,
                attempt=number,
                external_id=attempt.job_run_id,
            )
        ended = attempt.ended_at if attempt.ended_at is not None else attempt.started_at
        took = max(0.0, ended - attempt.started_at)
        if attempt.status is AttemptStatus.SUCCEEDED:
            yield StepSucceeded(
                run_id=run_id,
                at=ended,
                step=key.step,
                context=key.context,
                attempt=number,
                started_at=attempt.started_at,
                duration=took,
                dpu_hours=attempt.dpu_hours,
            )
        elif attempt.status is AttemptStatus.FAILED or (
            attempt.status is AttemptStatus.UNKNOWN and attempt.error_type is not None
        ):
            yield StepFailed(
                run_id=run_id,
                at=ended,
                step=key.step,
                context=key.context,
                attempt=number,
                started_at=attempt.started_at,
                duration=took,
                error_type=attempt.error_type or "Error",
                error_message=attempt.error_message or "",
                will_retry=number < len(task.attempts),
            )
        # RUNNING / UNKNOWN: no end event; the folded run calls the step interrupted


def execution_state(
    spec: PipelineSpec,
    env_name: str,
    record: ExecutionRecord,
    *,
    reused: Mapping[StepKey, Provenance] | None = None,
) -> RunState:
    """The folded state of an execution without writing to the journal (for `sfn status`)."""
    return fold(0, execution_events(spec, env_name, record, 0, reused=reused))


@dataclass(frozen=True)
class Imported:
    run_id: int
    created: bool
    appended: int
    state: RunState = field(repr=False)


def import_execution(journal: Journal, spec: PipelineSpec, env_name: str, record: ExecutionRecord) -> Imported:
    """Append an execution to the journal as a run (source `sfn`), or bring an earlier import up to date.

    Imports are idempotent: a second import of the same execution appends only what changed since (a
    Glue run of an aborted branch that has finished meanwhile), so recovering twice plans from the same
    facts.
    """
    from flywheel.api import latest_successes

    if record.status is ExecutionStatus.RUNNING:
        raise UsageError(
            f"execution {record.name} is still running",
            fix="watch it with `flywheel sfn status`; recover it once it has failed",
        )
    existing = journal.find_run_by_external_id(record.arn)
    parent = journal.find_run_by_external_id(record.recovers) if record.recovers else None
    root: int | None = None
    if parent is not None:
        parent_started = journal.run_started(parent)
        root = (parent_started.root_run if parent_started else None) or parent
    reused = {
        key: source
        for key, source in latest_successes(journal, spec.pipeline, env_name).items()
        if key in record.skipped and (existing is None or source.recorded_in != existing)
    }
    if existing is None:
        run_id = journal.new_run(spec.pipeline, env_name)
        events = execution_events(spec, env_name, record, run_id, reused=reused, parent_run=parent, root_run=root)
        journal.append(*events)
        return Imported(run_id, True, len(events), fold(run_id, journal.events(run_id)))
    before = fold(existing, journal.events(existing))
    desired = execution_events(spec, env_name, record, existing, reused=reused, parent_run=parent, root_run=root)
    wanted = fold(existing, desired)
    changed: list[Event] = []
    for key in spec.keys:
        old, new = before.step(key), wanted.step(key)
        if (old.status, old.external_id, old.attempts) == (new.status, new.external_id, new.attempts):
            continue
        if new.status is StepStatus.NOT_STARTED:
            continue
        tail = [e for e in desired if e.key == key and not isinstance(e, StepStarted | StepAttached)]
        if old.external_id != new.external_id or old.attempts != new.attempts or not tail:
            tail = [e for e in desired if e.key == key]
        changed.extend(tail)
    if changed:
        journal.append(*changed)
    return Imported(existing, False, len(changed), fold(existing, journal.events(existing)))
