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
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    masked,
)
from flywheel.journal import Journal
from flywheel.planner import Provenance
from flywheel.spec import PipelineSpec, StepKey
from flywheel.state import RunState, StepStatus, fold

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
    integration: str = "sync"  # how the task started the job (`Integration`)
    task_outcome: str | None = None  # what the task itself said, when that differs from the job run
    evidence: str = "history (the job run)"  # how the status is known: the job run, Glue, or history only


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
    not_in_pipeline: tuple[str, ...] = ()  # state names of tasks that run none of the pipeline's steps
    glue_asked: bool = True  # False: read offline, every fact is the history's

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
    """Seconds since the epoch from what boto3 returns (datetime), what the AWS CLI saves (an ISO 8601
    string) or epoch numbers (seconds or milliseconds)."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value) / 1000 if value > 1e11 else float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0
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


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _glue_outcome(run: Mapping[str, Any]) -> tuple[AttemptStatus, str | None, str | None, float | None]:
    """Status, error type and message of a Glue run: the Glue executor's own mapping and its notion of
    an active run (`ACTIVE_STATES`: a run that is STOPPING is ending, not running)."""
    from flywheel.executors.glue import ACTIVE_STATES, outcome_of

    if str(run.get("JobRunState") or "") in ACTIVE_STATES:
        return AttemptStatus.RUNNING, None, None, None
    outcome = outcome_of(run)
    if outcome.succeeded:
        return AttemptStatus.SUCCEEDED, None, None, outcome.dpu_hours
    return AttemptStatus.FAILED, outcome.error_type, outcome.error_message, outcome.dpu_hours


class Integration(StrEnum):
    """How a task started its Glue job, which decides what the task's success means.

    See "Integrating services with Step Functions" (Service integration patterns) in the AWS docs:
    request-response returns as soon as the job started; `.sync` waits for the job run to end and
    returns it; `.waitForTaskToken` waits for a callback, whatever the job did.
    """

    SYNC = "sync"
    REQUEST_RESPONSE = "request-response"
    CALLBACK = "callback"
    OTHER = "other"  # not a Glue start (Lambda, ECS, ...) whose parameters name a pipeline job


def _glue_start(details: Mapping[str, Any]) -> Integration | None:
    """A Glue `StartJobRun`, through the optimized or the AWS SDK integration (`resourceType` `glue` or
    `aws-sdk:glue`; `resource` `startJobRun`, `.sync`, `.sync:2` or `.waitForTaskToken`), or None."""
    kind = str(details.get("resourceType") or "")
    action, _, suffix = str(details.get("resource") or "").partition(".")
    if kind.rpartition(":")[2] != "glue" or action.lower() != "startjobrun":
        return None
    if suffix.startswith("sync"):
        return Integration.SYNC
    if suffix.lower() == "waitfortasktoken":
        return Integration.CALLBACK
    return Integration.REQUEST_RESPONSE


def _glue_poll(details: Mapping[str, Any]) -> bool:
    """A Glue `GetJobRun` a polling loop makes (`aws-sdk:glue` `getJobRun`): it runs no step, and its
    answer is the run's state when the machine last looked."""
    kind = str(details.get("resourceType") or "")
    return kind.rpartition(":")[2] == "glue" and str(details.get("resource") or "").lower() == "getjobrun"


@dataclass
class _Open:
    """An attempt being read from the history."""

    key: StepKey
    job: str
    state_name: str
    started_at: float
    integration: Integration = Integration.SYNC
    job_run_id: str | None = None
    status: AttemptStatus | None = None
    ended_at: float | None = None
    glue_state: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    dpu_hours: float | None = None
    task_outcome: str | None = None  # what the task itself said: succeeded, failed: Error, timed out


class _Matcher:
    """Which `step[context]` a task ran: by the flywheel arguments, the Glue JobName, the step id, and for
    contexts the context's name or one of its aliases in the arguments, the Map item or the state name.
    A missing or ambiguous match is a warning naming the task, never a guess."""

    def __init__(self, spec: PipelineSpec, env_name: str) -> None:
        self.spec = spec
        self.env_name = env_name
        self.by_job: dict[str, list[str]] = {}
        for step in spec.steps:
            self.by_job.setdefault(glue_job_name(spec, step, env_name), []).append(step.id)

    def step_of(self, job: str, arguments: Mapping[str, Any], text: str) -> str | None:
        step_id = arguments.get(contract.arg(contract.STEP))
        if step_id in self.spec.by_id:
            return str(step_id)
        candidates = self.by_job.get(job, [])
        if len(candidates) == 1:
            return candidates[0]
        return None

    def step_named_in(self, parameters: Any) -> str | None:
        """A Lambda, ECS or Batch task that starts a pipeline job for the state machine: a field named
        like a job (`JobName`, `job_name`, `glueJob`, `step`) holds a Glue job name or a step id. Text
        elsewhere (an alert message naming the failed job) does not count."""
        found: set[str] = set()
        stack = [parameters]
        while stack:
            item = stack.pop()
            if isinstance(item, Mapping):
                for name, value in item.items():
                    if isinstance(value, str) and re.search(r"(?i)job|step", str(name)):
                        found.update(self.by_job.get(value, ()))
                        if value in self.spec.by_id:
                            found.add(value)
                    else:
                        stack.append(value)
            elif isinstance(item, list):
                stack.extend(item)
        return found.pop() if len(found) == 1 else None

    def context_of(self, step_id: str, arguments: Mapping[str, Any], state_name: str) -> tuple[str | None, str]:
        step = self.spec.by_id[step_id]
        explicit = arguments.get(contract.arg(contract.CONTEXT))
        if explicit in step.contexts:
            return str(explicit), ""
        values = [str(v) for k, v in arguments.items() if not str(k).startswith(contract.arg(contract.PARAMS))]
        names = {c: (c, *step.cloud.context_aliases.get(c, ())) for c in step.contexts}
        found = [c for c, spelled in names.items() if any(_token_in(n, values) for n in spelled)]
        if not found:
            squashed = _squash(state_name)
            found = [c for c, spelled in names.items() if any(_squash(n) in squashed for n in spelled if n)]
        if len(found) == 1:
            return found[0], ""
        if found:
            return None, f"matches contexts {', '.join(found)} of {step_id}"
        return None, f"names none of the contexts of {step_id} ({', '.join(step.contexts)}) or their aliases"


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
    return read_history(history(sfn_client, execution_arn), described, spec=spec, env_name=env_name, glue=glue_client)


def read_history(
    events: Sequence[Mapping[str, Any]],
    described: Mapping[str, Any] | None,
    *,
    spec: PipelineSpec,
    env_name: str,
    glue: Any = None,
) -> ExecutionRecord:
    """Map an execution history (as `GetExecutionHistory` returns it, or as `aws stepfunctions
    get-execution-history --output json` saved it) to `step[context]` records.

    Each event belongs to the task whose `TaskScheduled` its `previousEventId` chain reaches without
    leaving the state (the chain is per branch, so Parallel and Map branches do not mix); events of a
    task that is not a Glue start stay with that task and never land on another. `glue`, when given,
    settles what the history cannot: the run of a request-response or callback task, a task that timed
    out, a branch cut off by its sibling or by an abort.
    """
    ordered = sorted(events, key=lambda e: int(e["id"]))
    described = described or _described_from(ordered)
    matcher = _Matcher(spec, env_name)
    warnings: list[str] = []
    state_of: dict[int, str] = {}
    task_of: dict[int, int | None] = {}
    opened: dict[int, _Open] = {}  # TaskScheduled id -> a Glue attempt of a pipeline key
    others: dict[int, str] = {}  # TaskScheduled id -> state name of a task that is not part of the pipeline
    polls: set[int] = set()  # TaskScheduled ids of the machine's own `GetJobRun` calls (a polling loop)
    polled: dict[str, Mapping[str, Any]] = {}  # JobRunId -> the last run such a call returned
    attempts: dict[StepKey, list[_Open]] = {}
    for event in ordered:
        event_id, previous = int(event["id"]), int(event.get("previousEventId") or 0)
        kind, details, at = str(event["type"]), _details(event), _epoch(event.get("timestamp"))
        state_of[event_id] = str(details.get("name")) if kind.endswith("StateEntered") else state_of.get(previous, "")
        if kind == "TaskScheduled":
            task_of[event_id] = event_id
            if _glue_poll(details):
                polls.add(event_id)
                continue
            attempt = _scheduled(matcher, details, state_of[event_id], at, warnings)
            if attempt is None:
                others[event_id] = state_of[event_id]
            else:
                opened[event_id] = attempt
                attempts.setdefault(attempt.key, []).append(attempt)
            continue
        if kind == "MapRunStarted":
            warnings.append(
                f"Map state {state_of[event_id] or '?'} is distributed: its iterations ran as child executions of "
                f"map run {details.get('mapRunArn') or '?'}, which this history does not hold; the steps they ran "
                "read as not run here (read the child executions with `flywheel sfn status ARN`)"
            )
        task_of[event_id] = task_of.get(previous) if kind.startswith("Task") and kind != "TaskStateEntered" else None
        owner = opened.get(task_of[event_id] or 0)
        if owner is not None:
            _observe(owner, kind, details, at)
        elif kind == "TaskSucceeded" and task_of[event_id] in polls:
            run = (_json(details.get("output")) or {}).get("JobRun")
            if isinstance(run, Mapping) and run.get("Id") and run.get("JobRunState"):
                polled[str(run["Id"])] = run

    tasks = {
        key: TaskRecord(key, tries[-1].job, tries[-1].state_name, tuple(_settle(glue, a, polled) for a in tries))
        for key, tries in attempts.items()
    }
    raw_input = _json(described.get("input")) or {}
    execution_input = raw_input if isinstance(raw_input, Mapping) else {}
    skipped = _skipped_keys(spec, execution_input.get(SKIP_INPUT), warnings)
    stop = described.get("stopDate")
    arn = str(described.get("executionArn", ""))
    return ExecutionRecord(
        arn=arn,
        name=str(described.get("name") or arn.rsplit(":", 1)[-1]),
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
        not_in_pipeline=tuple(dict.fromkeys(n for n in others.values() if n)),
        glue_asked=glue is not None,
    )


def _scheduled(
    matcher: _Matcher, details: Mapping[str, Any], state_name: str, at: float, warnings: list[str]
) -> _Open | None:
    """The Glue attempt a `TaskScheduled` starts, or None for a task that is not part of the pipeline."""
    parameters = _json(details.get("parameters")) or {}
    if not isinstance(parameters, Mapping):
        parameters = {}
    integration = _glue_start(details)
    if integration is None and str(details.get("resourceType") or "").rpartition(":")[2] == "glue":
        return None  # another Glue call (a GetJobRun poll, a GetTable check): it runs no step
    text = json.dumps(parameters)
    job = str(parameters.get("JobName", "")) if integration is not None else ""
    arguments = parameters.get("Arguments") or {}
    if not isinstance(arguments, Mapping):
        arguments = {}
    step_id = matcher.step_of(job, arguments, text) if integration is not None else matcher.step_named_in(parameters)
    if step_id is None:
        if integration is not None:
            warnings.append(f"Glue task {state_name or '?'} (job {job}) matches no step of {matcher.spec.pipeline}")
        return None
    step = matcher.spec.by_id[step_id]
    key = StepKey(step_id)
    if step.contexts:
        named = {**arguments, "_": text} if integration is None else arguments
        context, why = matcher.context_of(step_id, named, state_name)
        if context is None:
            warnings.append(f"task {state_name or '?'} runs {step_id} but {why}: its context is not guessed")
            return None
        key = StepKey(step_id, context)
    job = job or glue_job_name(matcher.spec, step, matcher.env_name)
    return _Open(key=key, job=job, state_name=state_name, started_at=at, integration=integration or Integration.OTHER)


def _observe(owner: _Open, kind: str, details: Mapping[str, Any], at: float) -> None:
    """What one task event says about its attempt."""
    output = _json(details.get("output"))
    if isinstance(output, Mapping) and isinstance(output.get("Payload"), Mapping):  # a Lambda's answer
        output = output["Payload"]
    if kind == "TaskSubmitted" and isinstance(output, Mapping):
        owner.job_run_id = str(output.get("JobRunId") or output.get("Id") or "") or owner.job_run_id
    elif kind == "TaskSucceeded":
        owner.ended_at, owner.task_outcome = at, "succeeded"
        if isinstance(output, Mapping) and output.get("JobRunState"):  # .sync: the output is the job run
            owner.job_run_id = str(output.get("Id") or owner.job_run_id)
            owner.glue_state = str(output["JobRunState"])
            owner.status, owner.error_type, owner.error_message, owner.dpu_hours = _glue_outcome(output)
        elif isinstance(output, Mapping) and output.get("JobRunId"):  # request-response: the job started
            owner.job_run_id = str(output["JobRunId"])
    elif kind in ("TaskFailed", "TaskTimedOut", "TaskStartFailed", "TaskSubmitFailed"):
        error, cause = str(details.get("error") or kind), str(details.get("cause") or "")
        run = _json(cause)
        owner.ended_at = at
        owner.task_outcome = "timed out" if kind == "TaskTimedOut" else f"failed: {error}"
        if isinstance(run, Mapping) and run.get("JobRunState"):
            owner.job_run_id = str(run.get("Id") or owner.job_run_id)
            owner.status, owner.error_type, owner.error_message, owner.dpu_hours = _glue_outcome(run)
            owner.glue_state = str(run["JobRunState"])
        else:  # the task failed (timeout, throttling, a refused start, ...): the run itself may have gone on
            owner.error_type, owner.error_message = error, cause or error


def _settle(glue: Any, attempt: _Open, polled: Mapping[str, Mapping[str, Any]]) -> AttemptRecord:
    """The attempt's truth: a `.sync` job run the history holds, else Glue's answer for the run, else the
    last answer of the machine's own `GetJobRun` poll in the history, else the history's own word,
    marked as such."""
    if attempt.glue_state is not None:
        return _record(attempt, attempt.status or AttemptStatus.UNKNOWN, evidence="history (the job run)")
    if glue is not None and attempt.job_run_id is not None:
        asked = _ask_glue(glue, attempt)
        if asked is not None:
            return asked
        note = f"history only: Glue no longer knows run {attempt.job_run_id}"
    else:
        note = "history only" + ("" if glue is not None else ": Glue was not asked")
    run = polled.get(attempt.job_run_id or "")
    if run is not None:
        attempt.glue_state = str(run["JobRunState"])
        attempt.status, attempt.error_type, attempt.error_message, attempt.dpu_hours = _glue_outcome(run)
        return _record(attempt, attempt.status, evidence=f"history (the machine's GetJobRun said {attempt.glue_state})")
    return _record(attempt, _history_says(attempt), evidence=note)


def _history_says(attempt: _Open) -> AttemptStatus:
    """What the history alone supports. A request-response task (or a Lambda that starts the job) only
    started its job, so its success proves nothing (unknown: a recovery reruns it); a callback came
    from whoever sent it. A task that timed out (`TimeoutSeconds`, `HeartbeatSeconds`) stopped
    waiting, not its run. A `.sync` success proves the run only with the run in its output (AWS always
    puts it there; a success without it, as moto writes when the execution times out mid-task, does
    not)."""
    if attempt.task_outcome == "succeeded" and attempt.integration is Integration.CALLBACK:
        return AttemptStatus.SUCCEEDED
    if attempt.task_outcome == "timed out":  # the task gave up waiting; the run may have gone on
        return AttemptStatus.UNKNOWN
    if attempt.task_outcome is not None and attempt.task_outcome != "succeeded":
        return AttemptStatus.FAILED
    return AttemptStatus.UNKNOWN


def _record(attempt: _Open, status: AttemptStatus, *, evidence: str) -> AttemptRecord:
    return AttemptRecord(
        job_run_id=attempt.job_run_id,
        status=status,
        started_at=attempt.started_at,
        ended_at=attempt.ended_at,
        glue_state=attempt.glue_state,
        error_type=attempt.error_type,
        error_message=attempt.error_message,
        dpu_hours=attempt.dpu_hours,
        integration=attempt.integration.value,
        task_outcome=attempt.task_outcome,
        evidence=evidence,
    )


def _ask_glue(glue_client: Any, attempt: _Open) -> AttemptRecord | None:
    """The run's real state in Glue, or None when Glue does not know the run (past its retention)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        run = glue_client.get_job_run(JobName=attempt.job, RunId=attempt.job_run_id)["JobRun"]
    except (ClientError, BotoCoreError):
        return None
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
        integration=attempt.integration.value,
        task_outcome=attempt.task_outcome,
        evidence="glue",
    )


def _described_from(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What `DescribeExecution` would say, from the history alone (for a saved history without it)."""
    ends = {
        "ExecutionSucceeded": "SUCCEEDED",
        "ExecutionFailed": "FAILED",
        "ExecutionTimedOut": "TIMED_OUT",
        "ExecutionAborted": "ABORTED",
    }
    status, stop = "RUNNING", None
    for event in events:
        if str(event["type"]) in ends:
            status, stop = ends[str(event["type"])], event.get("timestamp")
    first = events[0] if events else {}
    started = _details(first) if first.get("type") == "ExecutionStarted" else {}
    last = _details(events[-1]) if events and status in ("FAILED", "TIMED_OUT", "ABORTED") else {}
    return {
        "status": status,
        "startDate": first.get("timestamp"),
        "stopDate": stop,
        "input": started.get("input"),
        "stateMachineArn": started.get("stateMachineArn", ""),
        "error": last.get("error"),
        "cause": last.get("cause"),
    }


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


def import_execution(
    journal: Journal,
    spec: PipelineSpec,
    env_name: str,
    record: ExecutionRecord,
    *,
    redact: Callable[[str], str] | None = None,
) -> Imported:
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
        journal.append(*(events if redact is None else [masked(e, redact) for e in events]))
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
        journal.append(*(changed if redact is None else [masked(e, redact) for e in changed]))
    return Imported(existing, False, len(changed), fold(existing, journal.events(existing)))
