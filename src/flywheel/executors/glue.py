"""Run one attempt of a step as an AWS Glue job run: start (or find again), journal the id, poll, map.

The order of operations is what makes a crash harmless:

1. Before starting, ask Glue about the runs the journal holds for this key from attempts that never
   ended (`Attempt.journaled_runs`): one that SUCCEEDED while no runner watched is this attempt's result,
   one still active is re-attached. Then look for an *orphan*: a run of the step's Glue job that is
   still active and carries this pipeline, environment and `step[context]` in its arguments. Only one runner holds the
   pipeline's lock, so such a run was started by a runner that died between `StartJobRun` and
   journaling the id. Re-attach to it (when it was started with the same parameters) instead of
   starting a duplicate that would write the same outputs.
2. Start the run with the whole `StepInvocation` and labels (attempt id, key, a parameter digest, a
   one-off start token) in its arguments. `StartJobRun` has no idempotency token, so it goes through a
   client without automatic retries: after a throttle or a lost response we first look for our start
   token, and only start again when no run carries it.
3. `attempt.on_attached(JobRunId)`: the runner journals `StepAttached` before any polling.
4. Poll `GetJobRun` with backoff until a final state; Glue's ErrorMessage, the JobRunId and DPU-hours
   go into the `Outcome`. A cancel stops the run with `BatchStopJobRun` and waits for it to stop.

boto3 is imported only when an executor is built (`create_executor("glue", ...)`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flywheel.aws import glue_entry as contract
from flywheel.errors import DefinitionError, UsageError
from flywheel.executors.base import Attempt, Outcome, StatelessExecutor
from flywheel.invocation import StepInvocation
from flywheel.params import expand
from flywheel.spec import AwsSettings, EnvironmentSpec, PipelineSpec

log = logging.getLogger(__name__)

ACTIVE_STATES = frozenset({"STARTING", "RUNNING", "WAITING"})
"""A run doing work. STOPPING is ending: it never succeeds, so it is neither waited for nor re-attached
(the executor and `sfn status` agree on this; it is stopped, not running)."""
FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "TIMEOUT", "STOPPED", "ERROR", "EXPIRED"})
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "InternalServiceException",
        "InternalFailure",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "OperationTimeoutException",
    }
)
DPU_PER_WORKER: Mapping[str, float] = {
    "Standard": 1.0,
    "G.025X": 0.25,
    "G.1X": 1.0,
    "G.2X": 2.0,
    "G.4X": 4.0,
    "G.8X": 8.0,
    "G.12X": 12.0,
    "G.16X": 16.0,
    "R.1X": 1.0,
    "R.2X": 2.0,
    "R.4X": 4.0,
    "R.8X": 8.0,
    "Z.2X": 2.0,
}
"""DPUs of one worker, by `WorkerType` ("Job API: WorkerType", AWS Glue developer guide, and "Defining job
properties for Spark jobs": G.12X and G.16X are 12 and 16 DPU, the memory-optimized R.1X-R.8X 1-8 DPU)."""
DEFAULT_WORKER_TYPE = "G.1X"
DEFAULT_WORKERS = 2
VOLATILE_PARAMS = frozenset({"home", "memory_limit", "threads"})
"""Parameters that differ between operators' machines or are capacity only: not part of the digest."""

ORPHAN_SCAN_PAGES = 5


def attempt_id(invocation: StepInvocation) -> str:
    """`{run_id}:{step[context]}:{attempt}`: names the attempt in Glue, logs and alarms."""
    return f"{invocation.run_id}:{invocation.key}:{invocation.attempt}"


def params_digest(params: Mapping[str, Any]) -> str:
    """A short digest of what the job computes from; a re-attach needs the same one."""
    body = {k: v for k, v in params.items() if k not in VOLATILE_PARAMS}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def job_arguments(invocation: StepInvocation, *, start_token: str) -> dict[str, str]:
    """The Glue job arguments of an attempt: the invocation itself and the labels that find it again."""
    args = {
        contract.arg(contract.INVOCATION): invocation.to_json(),
        contract.arg(contract.ATTEMPT_ID): attempt_id(invocation),
        contract.arg(contract.PIPELINE): invocation.pipeline,
        contract.arg(contract.ENV): invocation.env,
        contract.arg(contract.STEP): invocation.step,
        contract.arg(contract.KEY): invocation.key,
        contract.arg(contract.PARAMS_SHA): params_digest(invocation.params),
        contract.arg(contract.START_TOKEN): start_token,
    }
    if invocation.context:
        args[contract.arg(contract.CONTEXT)] = invocation.context
    return args


def capacity_arguments(resources: Mapping[str, Any], timeout: float | None) -> dict[str, Any]:
    """`WorkerType`, `NumberOfWorkers` and `Timeout` (whole minutes, rounded up) for `StartJobRun`."""
    out: dict[str, Any] = {}
    worker_type = resources.get("worker_type")
    workers = resources.get("workers")
    if worker_type or workers:  # Glue wants both or neither
        out["WorkerType"] = str(worker_type or DEFAULT_WORKER_TYPE)
        out["NumberOfWorkers"] = int(workers or DEFAULT_WORKERS)
    if timeout is not None:
        out["Timeout"] = max(1, math.ceil(timeout / 60))
    return out


def dpu_hours(run: Mapping[str, Any]) -> float | None:
    """DPU-hours a run cost: `DPUSeconds` when Glue reports it (auto scaling, Flex), else time × DPUs."""
    if run.get("DPUSeconds"):
        return float(run["DPUSeconds"]) / 3600
    seconds = run.get("ExecutionTime")
    if not seconds:
        return None
    workers, worker_type = run.get("NumberOfWorkers"), run.get("WorkerType")
    if workers and worker_type in DPU_PER_WORKER:
        dpus = float(workers) * DPU_PER_WORKER[str(worker_type)]
    elif run.get("MaxCapacity"):
        dpus = float(run["MaxCapacity"])
    else:
        return None
    return float(seconds) * dpus / 3600


_TAGGED_ERROR = re.compile(r"\[([A-Za-z0-9_.-]+)\] (.*)", re.DOTALL)


def outcome_of(run: Mapping[str, Any], result: Mapping[str, Any] | None = None) -> Outcome:
    """Map a finished Glue job run (and the result body the job wrote, when there is one) to an Outcome."""
    state = str(run.get("JobRunState"))
    run_id = str(run.get("Id"))
    glue_message = str(run.get("ErrorMessage") or "").strip()
    cost = dpu_hours(run)
    if state == "SUCCEEDED":
        outputs = tuple(result.get("outputs") or ()) if result and result.get("ok") else ()
        return Outcome(succeeded=True, exit_code=0, outputs=outputs, external_id=run_id, dpu_hours=cost)
    if result and result.get("ok") is False:
        error_type, message = str(result.get("error_type") or "Error"), str(result.get("error_message") or "")
    else:
        tagged = _TAGGED_ERROR.search(glue_message)
        error_type, message = (tagged.group(1), tagged.group(2).strip()) if tagged else ("", glue_message)
    if state == "TIMEOUT":
        limit = f" after {run['Timeout']} min" if run.get("Timeout") else ""
        return Outcome(
            succeeded=False,
            timed_out=True,
            error_type="Timeout",
            error_message=f"Glue run {run_id} timed out{limit} (raise it with --set STEP.timeout=...)"
            + (f": {glue_message}" if glue_message else ""),
            external_id=run_id,
            dpu_hours=cost,
        )
    default_type = {
        "FAILED": "GlueJobFailed",
        "STOPPED": "Stopped",
        "STOPPING": "Stopped",
        "ERROR": "GlueError",
        "EXPIRED": "GlueExpired",
    }.get(state, "GlueJobFailed")
    if state == "STOPPED" and not message:
        message = f"Glue run {run_id} was stopped outside flywheel"
    return Outcome(
        succeeded=False,
        error_type=error_type or default_type,
        error_message=message or f"Glue run {run_id} ended {state}",
        external_id=run_id,
        dpu_hours=cost,
    )


@dataclass(frozen=True)
class GlueClients:
    """The AWS clients of the executor, built once per executor.

    `start` has botocore retries off (a retried StartJobRun can start a duplicate; the executor retries
    itself, after looking for its start token). `stop` is separate from `poll` so that a cancel never
    waits behind the polling client's adaptive rate limiter.
    """

    start: Any
    poll: Any
    stop: Any
    s3: Any

    @classmethod
    def create(cls, aws: AwsSettings, *, session: Any = None) -> GlueClients:
        from flywheel.aws.session import boto_session, make_client

        session = session or boto_session(aws)
        return cls(
            start=make_client(aws, "glue", session=session, max_attempts=1, mode="standard"),
            poll=make_client(aws, "glue", session=session),
            stop=make_client(aws, "glue", session=session, max_attempts=5, mode="standard"),
            s3=make_client(aws, "s3", session=session),
        )


DEFAULT_POLL_SECONDS = 5.0
POLL_ENV = "FLYWHEEL_GLUE_POLL_SECONDS"


def _default_poll_seconds() -> float:
    """The first polling interval: `$FLYWHEEL_GLUE_POLL_SECONDS`, else 5 s (it grows to `max_poll_seconds`)."""
    text = os.environ.get(POLL_ENV)
    if not text:
        return DEFAULT_POLL_SECONDS
    try:
        return max(0.01, float(text))
    except ValueError:
        raise UsageError(
            f"{POLL_ENV}={text!r} is not a number of seconds", fix=f"unset {POLL_ENV} or set e.g. 2"
        ) from None


class _AttemptLog:
    """The local log of a Glue attempt: what flywheel did and saw (the job's own output is in CloudWatch)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(f"{stamp} {message}\n")
        log.info("%s", message)


class _Refused(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.error_message)
        self.outcome = outcome


class GlueExecutor(StatelessExecutor):
    """The `Executor` for environments whose steps run as Glue jobs (dev, prod)."""

    name = "glue"

    def __init__(
        self,
        *,
        spec: PipelineSpec,
        env_name: str,
        env: EnvironmentSpec,
        clients: GlueClients | None = None,
        poll_seconds: float | None = None,
        max_poll_seconds: float = 60.0,
        stop_wait_seconds: float = 300.0,
        concurrency_wait_seconds: float = 3300.0,
        check_account: bool = True,
    ) -> None:
        """Validate the spec's Glue placement and check the account before anything runs."""
        from flywheel.aws.session import aws_settings, boto_session
        from flywheel.aws.session import check_account as guard

        self.spec = spec
        self.env_name = env_name
        self.aws = aws_settings(env, env_name)
        self.job_names = self._job_names(spec, env_name)
        self.poll_seconds = poll_seconds if poll_seconds is not None else _default_poll_seconds()
        self.max_poll_seconds = max_poll_seconds
        self.stop_wait_seconds = stop_wait_seconds
        self.concurrency_wait_seconds = concurrency_wait_seconds
        if clients is None:
            session = boto_session(self.aws)
            if check_account:
                guard(self.aws, env_name, session=session)
            clients = GlueClients.create(self.aws, session=session)
        elif check_account:
            guard(self.aws, env_name)
        self.clients = clients

    @staticmethod
    def _job_names(spec: PipelineSpec, env_name: str) -> dict[str, str]:
        names: dict[str, str] = {}
        problems: list[str] = []
        for step in spec.steps:
            if step.command is not None:
                problems.append(f"step {step.id}: a shell `command` cannot run as a Glue job (give it a `job`)")
            elif not step.cloud.glue_job:
                problems.append(f"step {step.id}: no `cloud.glue_job` (the Glue job that runs it)")
            else:
                names[step.id] = str(expand(step.cloud.glue_job, {"env": env_name, "pipeline": spec.pipeline}))
        if problems:
            raise DefinitionError(
                f"{spec.pipeline} cannot run on Glue in {env_name}",
                details=tuple(problems),
                fix="add `cloud: {glue_job: ...}` to each step, or run it in a local environment",
            )
        return names

    # -- the Executor protocol ---------------------------------------------------------------

    def execute(self, attempt: Attempt, cancel: threading.Event) -> Outcome:
        """Start or re-attach, report the JobRunId, poll to the end (or stop on cancel)."""
        from botocore.exceptions import BotoCoreError, ClientError

        from flywheel.aws.session import error_code, error_message

        invocation = self._with_result_path(attempt.invocation)
        job_name = self.job_names[invocation.step]
        note = _AttemptLog(attempt.log_path)
        try:
            run_id = self._find_or_start(job_name, invocation, attempt, cancel, note)
        except _Refused as refused:
            note(f"not started: {refused.outcome.error_message}")
            return refused.outcome
        except ClientError as exc:
            note(f"StartJobRun for {job_name} failed: {error_code(exc)}: {error_message(exc)}")
            return Outcome(
                succeeded=False,
                error_type=f"Glue{error_code(exc)}" if not error_code(exc).startswith("Glue") else error_code(exc),
                error_message=f"cannot start Glue job {job_name}: {error_message(exc)}",
            )
        except BotoCoreError as exc:
            note(f"StartJobRun for {job_name} failed: {exc}")
            return Outcome(succeeded=False, error_type="GlueApiError", error_message=f"cannot reach Glue: {exc}")
        if run_id is None:
            return Outcome(succeeded=False, cancelled=True, error_type="Interrupted", error_message="stopped")
        if attempt.on_attached is not None:
            attempt.on_attached(run_id)
        return self._wait(job_name, run_id, cancel, note)

    # -- starting ------------------------------------------------------------------------------

    def _with_result_path(self, invocation: StepInvocation) -> StepInvocation:
        if not self.aws.s3_root:
            return invocation
        token = uuid.uuid4().hex[:12]
        root = self.aws.s3_root.rstrip("/")
        path = (
            f"{root}/_flywheel/results/{invocation.pipeline}/{invocation.env}/run-{invocation.run_id}/"
            f"{invocation.key}.attempt-{invocation.attempt}.{token}.json"
        )
        return replace(invocation, result_path=path)

    def _runs(self, job_name: str) -> Iterator[Mapping[str, Any]]:
        """Recent runs of a job, newest first, a few pages deep (an orphan is recent by nature)."""
        token: str | None = None
        for _ in range(ORPHAN_SCAN_PAGES):
            request: dict[str, Any] = {"JobName": job_name, "MaxResults": 200}
            if token:
                request["NextToken"] = token
            page = self.clients.poll.get_job_runs(**request)
            yield from page.get("JobRuns", ())
            token = page.get("NextToken")
            if not token:
                return

    def find_orphan(self, job_name: str, invocation: StepInvocation) -> Mapping[str, Any] | None:
        """An active run of this pipeline, environment and step key (left by a runner that died)."""
        for run in self._runs(job_name):
            if run.get("JobRunState") not in ACTIVE_STATES:
                continue
            args = run.get("Arguments") or {}
            if (
                args.get(contract.arg(contract.PIPELINE)) == invocation.pipeline
                and args.get(contract.arg(contract.ENV)) == invocation.env
                and args.get(contract.arg(contract.KEY)) == invocation.key
            ):
                return run
        return None

    def find_journaled(
        self, job_name: str, invocation: StepInvocation, run_ids: Iterable[str]
    ) -> Mapping[str, Any] | None:
        """The first of `run_ids` (journaled by an attempt whose runner died) that SUCCEEDED or is still
        active, for this pipeline, environment, step key and parameters: its result is this attempt's.

        The orphan scan finds only active runs, and only among recent pages; a run that ended while no
        runner watched is asked for by id, so it is not started a second time.
        """
        from botocore.exceptions import ClientError

        for run_id in run_ids:
            try:
                run = self.clients.poll.get_job_run(JobName=job_name, RunId=run_id, PredecessorsIncluded=False)[
                    "JobRun"
                ]
            except ClientError as exc:
                log.info("journaled Glue run %s of %s is not known to Glue: %s", run_id, job_name, exc)
                continue
            args = run.get("Arguments") or {}
            ours = (
                args.get(contract.arg(contract.PIPELINE)) == invocation.pipeline
                and args.get(contract.arg(contract.ENV)) == invocation.env
                and args.get(contract.arg(contract.KEY)) == invocation.key
                and args.get(contract.arg(contract.PARAMS_SHA)) == params_digest(invocation.params)
            )
            state = run.get("JobRunState")
            if ours and (state == "SUCCEEDED" or state in ACTIVE_STATES):
                return dict(run)
        return None

    def find_started(self, job_name: str, start_token: str) -> str | None:
        """The run this executor started with `start_token`, if the start went through after all."""
        for run in self._runs(job_name):
            if (run.get("Arguments") or {}).get(contract.arg(contract.START_TOKEN)) == start_token:
                return str(run["Id"])
        return None

    def _find_or_start(
        self,
        job_name: str,
        invocation: StepInvocation,
        attempt: Attempt,
        cancel: threading.Event,
        note: _AttemptLog,
    ) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        from flywheel.aws.session import error_code

        journaled = self.find_journaled(job_name, invocation, attempt.journaled_runs)
        if journaled is not None:
            note(
                f"Glue run {journaled['Id']} of {job_name}, journaled by an attempt whose runner stopped, is "
                f"{journaled['JobRunState']}: using it instead of starting the step again"
            )
            return str(journaled["Id"])
        orphan = self.find_orphan(job_name, invocation)
        if orphan is not None:
            args = orphan.get("Arguments") or {}
            theirs = args.get(contract.arg(contract.PARAMS_SHA))
            if theirs != params_digest(invocation.params):
                raise _Refused(
                    Outcome(
                        succeeded=False,
                        error_type="GlueRunConflict",
                        error_message=(
                            f"Glue run {orphan['Id']} of {invocation.key} (attempt "
                            f"{args.get(contract.arg(contract.ATTEMPT_ID), '?')}) is still {orphan['JobRunState']} "
                            "with other parameters; wait for it to end, or stop it: aws glue batch-stop-job-run "
                            f"--job-name {job_name} --job-run-ids {orphan['Id']}"
                        ),
                        external_id=str(orphan["Id"]),
                    )
                )
            note(
                f"re-attaching to Glue run {orphan['Id']} of {job_name} (started by attempt "
                f"{args.get(contract.arg(contract.ATTEMPT_ID), '?')}, still {orphan['JobRunState']}) "
                "instead of starting a duplicate"
            )
            return str(orphan["Id"])

        token = uuid.uuid4().hex
        request: dict[str, Any] = {
            "JobName": job_name,
            "Arguments": job_arguments(invocation, start_token=token),
            **capacity_arguments(attempt.resources, attempt.timeout),
        }
        concurrency_deadline = time.monotonic() + self.concurrency_wait_seconds
        transient_left = 8
        delay = max(self.poll_seconds, 0.05)
        while True:
            if cancel.is_set():
                return self.find_started(job_name, token)  # a start that went through must be stopped
            try:
                run_id = str(self.clients.start.start_job_run(**request)["JobRunId"])
                note(
                    f"started Glue run {run_id} of {job_name} for attempt {attempt_id(invocation)} "
                    f"({request.get('WorkerType', 'job default')} x {request.get('NumberOfWorkers', '-')}, "
                    f"timeout {request.get('Timeout', 'job default')} min)"
                )
                return run_id
            except ClientError as exc:
                code = error_code(exc)
                if code == "ConcurrentRunsExceededException" and time.monotonic() < concurrency_deadline:
                    note(f"{job_name} is at its concurrent-run limit; waiting {delay:.0f}s before starting")
                elif code in TRANSIENT_CODES and transient_left > 0:
                    found = self.find_started(job_name, token)
                    if found:
                        note(f"StartJobRun answered {code}, but run {found} had started: using it")
                        return found
                    transient_left -= 1
                    note(f"StartJobRun answered {code}; retrying in {delay:.0f}s")
                else:
                    raise
            except BotoCoreError as exc:  # connection reset, read timeout: the start may have gone through
                found = self.find_started(job_name, token)
                if found:
                    note(f"StartJobRun lost its answer ({exc}), but run {found} had started: using it")
                    return found
                if transient_left <= 0:
                    raise
                transient_left -= 1
                note(f"StartJobRun failed ({exc}); retrying in {delay:.0f}s")
            if cancel.wait(delay):
                return self.find_started(job_name, token)
            delay = min(delay * 2, self.max_poll_seconds)

    # -- waiting -------------------------------------------------------------------------------

    def _wait(self, job_name: str, run_id: str, cancel: threading.Event, note: _AttemptLog) -> Outcome:
        from botocore.exceptions import BotoCoreError, ClientError

        from flywheel.aws.session import error_code

        delay = self.poll_seconds
        last_state: str | None = None
        failures = 0
        while True:
            if cancel.is_set():
                return self._stop(job_name, run_id, note)
            try:
                run = self.clients.poll.get_job_run(JobName=job_name, RunId=run_id, PredecessorsIncluded=False)[
                    "JobRun"
                ]
                failures = 0
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                failures += 1
                transient = code in TRANSIENT_CODES or isinstance(exc, BotoCoreError)
                if not transient or failures > 10:
                    note(f"lost track of Glue run {run_id}: {code}")
                    return Outcome(
                        succeeded=False,
                        error_type="GlueApiError",
                        error_message=f"lost track of Glue run {run_id} ({code}); it may still be running: "
                        "`flywheel resume` re-attaches to it",
                        external_id=run_id,
                    )
                cancel.wait(delay)
                continue
            state = str(run.get("JobRunState"))
            if state != last_state:
                note(f"Glue run {run_id}: {state}")
                last_state = state
            if state in FINAL_STATES:
                outcome = outcome_of(run, self._result(run))
                if not outcome.succeeded:
                    note(f"{outcome.error_type}: {outcome.error_message}")
                return outcome
            if cancel.wait(delay):
                continue
            delay = min(delay * 1.5, self.max_poll_seconds)

    def _result(self, run: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The result body the job wrote (its outputs, or its error), when it wrote one."""
        from botocore.exceptions import BotoCoreError, ClientError

        from flywheel.aws.s3 import read_json

        text = (run.get("Arguments") or {}).get(contract.arg(contract.INVOCATION))
        if not text:
            return None
        try:
            path = StepInvocation.from_json(text).result_path
        except (ValueError, TypeError):
            return None
        if not path or not path.startswith("s3://"):
            return None
        try:
            return read_json(path, client=self.clients.s3)
        except (ClientError, BotoCoreError) as exc:
            log.warning("cannot read the result of Glue run %s at %s: %s", run.get("Id"), path, exc)
            return None

    def _stop(self, job_name: str, run_id: str, note: _AttemptLog) -> Outcome:
        """Stop the run (BatchStopJobRun) and wait a bounded time for it to stop."""
        from botocore.exceptions import BotoCoreError, ClientError

        state = "STOPPING"
        try:
            answer = self.clients.stop.batch_stop_job_run(JobName=job_name, JobRunIds=[run_id])
            for error in answer.get("Errors") or ():
                detail = error.get("ErrorDetail") or {}
                note(f"BatchStopJobRun {run_id}: {detail.get('ErrorCode')}: {detail.get('ErrorMessage')}")
            note(f"asked Glue to stop run {run_id}")
        except (ClientError, BotoCoreError) as exc:
            note(f"BatchStopJobRun {run_id} failed: {exc}")
        deadline = time.monotonic() + self.stop_wait_seconds
        delay = min(self.poll_seconds, 5.0)
        while time.monotonic() < deadline:
            try:
                run = self.clients.poll.get_job_run(JobName=job_name, RunId=run_id)["JobRun"]
                state = str(run.get("JobRunState"))
            except (ClientError, BotoCoreError):
                pass
            if state in FINAL_STATES:
                break
            time.sleep(delay)
        note(f"Glue run {run_id}: {state} after a stop request")
        return Outcome(
            succeeded=False,
            cancelled=True,
            error_type="Interrupted",
            error_message=f"stopped by the operator (Glue run {run_id} {state})",
            external_id=run_id,
        )
