"""Step Functions operations: export, status, recover (locally, `--in-aws` or `--redrive`), start.

Recovering never asks the operator which steps finished: the execution's history (settled by Glue where
the history is silent) is imported into the journal, and the same planner that resumes local runs
decides what is reused and what runs. The plan can then run

- locally (the default), with the environment's executor, so a Glue run an aborted branch left running
  is re-attached instead of started twice;
- `--in-aws`, as a new execution of the same state machine whose input skips what finished, named after
  the failed execution so that recovering the same failure twice is refused (`ExecutionAlreadyExists`);
- `--redrive`, when Step Functions' own conditions hold (Standard workflow, within 14 days, the
  definition it ran is the one deployed and the one flywheel exports) and the states a redrive restarts
  include the failed task (`flywheel.aws.redrive`); otherwise the reasons are given.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.aws.asl import SKIP_INPUT, export_asl, recover_command, state_machine_name, to_json
from flywheel.aws.sfn import (
    RECOVERS_INPUT,
    ExecutionRecord,
    ExecutionStatus,
    Imported,
    execution_state,
    import_execution,
    read_execution,
    read_history,
)
from flywheel.errors import NotFound, UsageError
from flywheel.planner import Action, Mode, PlanRequest
from flywheel.spec import StepKey
from flywheel.state import RunState

if TYPE_CHECKING:
    from flywheel.api import PlannedRun, RunOptions, RunResult, Session

REDRIVE_DAYS = 14
EXECUTION_NAME_MAX = 80


@dataclass(frozen=True)
class SfnClients:
    """The clients and the state machine of one environment."""

    sfn: Any
    glue: Any
    state_machine_arn: str


def connect(session: Session, *, check_account: bool = True) -> SfnClients:
    """Clients on the environment's profile, after the account guard (wrong profile or account: error)."""
    from flywheel.aws.session import aws_settings, boto_session, caller_identity, make_client
    from flywheel.aws.session import check_account as guard

    env = session.project.config.environment(session.env_name)
    aws = aws_settings(env, session.env_name)
    boto = boto_session(aws)
    identity = (
        guard(aws, session.env_name, session=boto)
        if check_account
        else caller_identity(aws, session.env_name, session=boto)
    )
    partition = identity.arn.split(":")[1] if identity.arn.count(":") >= 1 else "aws"
    name = state_machine_name(session.spec, session.env_name, env)
    arn = f"arn:{partition}:states:{aws.region}:{identity.account}:stateMachine:{name}"
    return SfnClients(
        sfn=make_client(aws, "stepfunctions", session=boto),
        glue=make_client(aws, "glue", session=boto),
        state_machine_arn=arn,
    )


def export(session: Session, output: Path | None = None) -> str:
    """The definition as text; written to `output` when given (the file Terraform deploys)."""
    env = session.project.config.environment(session.env_name)
    text = to_json(export_asl(session.spec, session.env_name, env))
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    return text


# ---------------------------------------------------------------------------------------------
# finding executions


def _executions(clients: SfnClients, limit: int = 20) -> list[Mapping[str, Any]]:
    from botocore.exceptions import ClientError

    try:
        page = clients.sfn.list_executions(stateMachineArn=clients.state_machine_arn, maxResults=limit)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "StateMachineDoesNotExist":
            raise NotFound(
                f"no state machine {clients.state_machine_arn}",
                fix="deploy it (infra/stacks/<env>-orchestration, see docs/aws.md) or check --env",
            ) from None
        raise
    executions: list[Mapping[str, Any]] = page.get("executions", [])
    return sorted(executions, key=lambda e: e["startDate"], reverse=True)


def latest_execution(clients: SfnClients) -> str:
    """The newest execution of the environment's state machine."""
    executions = _executions(clients, limit=1)
    if not executions:
        raise NotFound(
            f"{clients.state_machine_arn.rsplit(':', 1)[-1]} has no executions yet",
            fix="start one with `flywheel sfn start --input FILE`",
        )
    return str(executions[0]["executionArn"])


def recoverable_execution(clients: SfnClients) -> str:
    """The latest FAILED, TIMED_OUT or ABORTED execution; refused while a newer one runs or succeeded."""
    for execution in _executions(clients):
        status = ExecutionStatus(str(execution["status"]))
        if status is ExecutionStatus.RUNNING:
            raise UsageError(
                f"execution {execution['name']} is still running",
                fix="watch it with `flywheel sfn status`; recover it if it fails",
            )
        if status.recoverable:
            return str(execution["executionArn"])
        if status is ExecutionStatus.SUCCEEDED:
            raise UsageError(
                f"nothing to recover: the latest execution ({execution['name']}) succeeded",
                fix="name an older execution ARN to recover it anyway, or `flywheel sfn start` a new one",
            )
    raise NotFound("no failed, timed-out or aborted execution to recover", fix="name an execution ARN")


# ---------------------------------------------------------------------------------------------
# status


@dataclass(frozen=True)
class ExecutionView:
    """An execution folded like a local run, for the ✅ ❌ ⏸️ view."""

    record: ExecutionRecord
    state: RunState
    lock_holder: str | None = None  # who runs or recovers this pipeline and environment right now

    @property
    def recover_command(self) -> str | None:
        return None if not self.record.status.recoverable else recover_command(self.env_name, self.record.arn)

    @property
    def env_name(self) -> str:
        started = self.state.started
        return started.env if started else "?"


def status(session: Session, clients: SfnClients, execution_arn: str | None = None) -> ExecutionView:
    """Read an execution (default: the latest) without writing anything."""
    from flywheel.api import latest_successes

    arn = execution_arn or latest_execution(clients)
    record = read_execution(clients.sfn, clients.glue, arn, spec=session.spec, env_name=session.env_name)
    reused = {}
    if record.skipped:  # where the keys its input skipped were produced, when the journal knows
        with session.journal() as journal:
            found = latest_successes(journal, session.pipeline, session.env_name)
        reused = {k: v for k, v in found.items() if k in record.skipped}
    state = execution_state(session.spec, session.env_name, record, reused=reused)
    return ExecutionView(record, state, lock_holder=_lock_holder(session))


def _lock_holder(session: Session) -> str | None:
    """The cross-machine lock's holder, described; None when free or unreadable (status never fails on it)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from flywheel.aws.lock import lock_for
    from flywheel.errors import FlywheelError

    env = session.project.config.environment(session.env_name)
    try:
        lock = lock_for(env.aws, session.pipeline, session.env_name, check_account=False)
        holder = lock.holder() if lock is not None else None
    except (ClientError, BotoCoreError, FlywheelError):
        return None
    if holder is None:
        return None
    return f"{holder.command or 'a run'} by {holder.describe()}"


# ---------------------------------------------------------------------------------------------
# recover


@dataclass(frozen=True)
class Recovery:
    """A failed execution imported into the journal and the plan that continues it."""

    record: ExecutionRecord
    imported: Imported
    planned: PlannedRun
    request: PlanRequest

    @property
    def skip_input(self) -> list[str]:
        """What a new execution must skip: every key the plan reuses."""
        return [str(k) for k in self.planned.plan.keys(Action.REUSE)]

    @property
    def reattach(self) -> dict[StepKey, str]:
        """Keys whose Glue run is still going: a local recovery re-attaches to these runs."""
        return {t.key: str(t.job_run_id) for t in self.record.still_running}


def plan_recovery(
    session: Session, clients: SfnClients, execution_arn: str | None = None, *, note: str | None = None
) -> Recovery:
    """Import the execution (idempotently) and plan the rest with the pure planner."""
    from flywheel import api

    arn = execution_arn or recoverable_execution(clients)
    record = read_execution(clients.sfn, clients.glue, arn, spec=session.spec, env_name=session.env_name)
    if record.status is ExecutionStatus.RUNNING:
        raise UsageError(
            f"execution {record.name} is still running",
            fix="watch it with `flywheel sfn status`; recover it once it has failed",
        )
    if record.status is ExecutionStatus.SUCCEEDED:
        raise UsageError(
            f"execution {record.name} succeeded: nothing to recover", fix="`flywheel sfn start` runs again"
        )
    redact = api.session_redactor(session)  # Glue error messages are journaled as written, but masked
    if record.recovers:  # a recovery of a recovery: its source must be known to reuse what it skipped
        with session.journal() as journal:
            known = journal.find_run_by_external_id(record.recovers)
        if known is None:
            earlier = read_execution(
                clients.sfn, clients.glue, record.recovers, spec=session.spec, env_name=session.env_name
            )
            if earlier.status is not ExecutionStatus.RUNNING:
                with session.journal() as journal:
                    import_execution(journal, session.spec, session.env_name, earlier, redact=redact)
    with session.journal() as journal:
        imported = import_execution(journal, session.spec, session.env_name, record, redact=redact)
    request = PlanRequest(mode=Mode.RESUME, source_run=imported.run_id, note=note)
    planned = api.dry_run(session, request)
    return Recovery(record=record, imported=imported, planned=planned, request=request)


def recover_locally(session: Session, recovery: Recovery, options: RunOptions | None = None) -> RunResult:
    """Run the plan here with the environment's executor (Glue in dev and prod)."""
    from flywheel import api

    return api.execute(session, recovery.request, options)


def recovery_execution_name(failed: ExecutionRecord) -> str:
    """Deterministic: the same failure always gets the same recovery name (so a second one is refused)."""
    digest = hashlib.sha256(failed.arn.encode()).hexdigest()[:8]
    return f"{failed.name[: EXECUTION_NAME_MAX - 18]}-recover-{digest}"


@dataclass(frozen=True)
class StartedExecution:
    arn: str
    name: str
    input: Mapping[str, Any]


def _execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"


def _start(clients: SfnClients, name: str, body: Mapping[str, Any]) -> StartedExecution:
    from botocore.exceptions import ClientError

    target = _execution_arn(clients.state_machine_arn, name)
    try:
        described = clients.sfn.describe_execution(executionArn=target)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("ExecutionDoesNotExist",):
            raise
        described = None
    if described is not None:  # StartExecution would return a running twin instead of refusing
        raise UsageError(
            f"execution {name} already exists ({described['status']}): this failure was already recovered in AWS",
            fix=f"follow it with `flywheel sfn status {target}`",
        )
    try:
        started = clients.sfn.start_execution(
            stateMachineArn=clients.state_machine_arn, name=name, input=json.dumps(body, sort_keys=True)
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
            raise UsageError(
                f"execution {name} already exists: this failure was already recovered in AWS",
                fix=f"follow it with `flywheel sfn status {target}`",
            ) from None
        raise
    return StartedExecution(arn=str(started["executionArn"]), name=name, input=body)


def recover_in_aws(session: Session, clients: SfnClients, recovery: Recovery) -> StartedExecution:
    """Continue the failed execution as a new execution that skips what the plan reuses."""
    from flywheel.lock import current_identity

    running = recovery.record.still_running
    if running:
        listing = ", ".join(f"{t.key} ({t.job_run_id})" for t in running)
        raise UsageError(
            f"Glue runs of the failed execution are still running: {listing}; a new execution would start "
            "them a second time",
            fix="recover locally (it re-attaches to them), or wait for them to end and recover again",
        )
    user, host = current_identity()
    body: dict[str, Any] = {
        SKIP_INPUT: recovery.skip_input,
        RECOVERS_INPUT: recovery.record.arn,
        "requested_by": f"{user}@{host}",
    }
    if recovery.request.note:
        body["note"] = recovery.request.note
    return _start(clients, recovery_execution_name(recovery.record), body)


# ---------------------------------------------------------------------------------------------
# redrive


@dataclass(frozen=True)
class RedriveCheck:
    """Whether Step Functions can redrive an execution, and in plain words why not."""

    execution_arn: str
    problems: tuple[str, ...]
    restarts: tuple[str, ...] = ()  # what a redrive would enter again, described ("Glue task Step3_...")

    @property
    def possible(self) -> bool:
        return not self.problems


def check_redrive(
    session: Session, clients: SfnClients, record: ExecutionRecord, *, now: float | None = None
) -> RedriveCheck:
    """Standard workflow, failed within 14 days, redrivable per Step Functions, the definition it ran is
    both the one deployed now and the one `flywheel sfn export` produces, and a redrive would rerun the
    failed task (`flywheel.aws.redrive`: not a `Fail` state a `Catch` led to)."""
    from flywheel.aws.redrive import redrive_scope
    from flywheel.aws.sfn import history

    problems: list[str] = []
    if not record.status.recoverable:
        problems.append(f"it is {record.status.value}; only FAILED, TIMED_OUT or ABORTED executions can be redriven")
    machine = clients.sfn.describe_state_machine(stateMachineArn=record.state_machine_arn)
    if str(machine.get("type", "STANDARD")) != "STANDARD":
        problems.append(f"{machine.get('name')} is an {machine.get('type')} workflow; only Standard ones redrive")
    moment = time.time() if now is None else now
    if record.stopped_at is not None and moment - record.stopped_at > REDRIVE_DAYS * 86400:
        days = (moment - record.stopped_at) / 86400
        problems.append(f"it stopped {days:.0f} days ago; Step Functions redrives only within {REDRIVE_DAYS} days")
    described = clients.sfn.describe_execution(executionArn=record.arn)
    if described.get("redriveStatus") == "NOT_REDRIVABLE":
        problems.append(f"Step Functions says: {described.get('redriveStatusReason') or 'not redrivable'}")
    ran = clients.sfn.describe_state_machine_for_execution(executionArn=record.arn).get("definition")
    if ran is not None and _canonical(ran) != _canonical(machine.get("definition")):
        problems.append("the state machine was updated since this execution; a redrive would rerun the old definition")
    env = session.project.config.environment(session.env_name)
    exported = to_json(export_asl(session.spec, session.env_name, env))
    if ran is not None and _canonical(ran) != _canonical(exported):
        problems.append(
            "the definition it ran differs from what `flywheel sfn export` produces for this pipeline; a redrive "
            "cannot change it (deploy the export, then recover --in-aws)"
        )
    if record.still_running:
        problems.append("some of its Glue runs are still running; a redrive would start them again")
    restarts: tuple[str, ...] = ()
    definition = _canonical(ran if ran is not None else machine.get("definition"))
    if isinstance(definition, dict):
        scope = redrive_scope(definition, history(clients.sfn, record.arn))
        restarts = tuple(r.describe() for r in scope.restarts)
        if scope.refusal is not None:
            problems.append(
                f"{scope.refusal}; `flywheel sfn recover {record.arn} --env {session.env_name}` reruns exactly "
                "what is left"
            )
    else:
        problems.append("its definition cannot be read, so what a redrive would restart is unknown")
    return RedriveCheck(record.arn, tuple(problems), restarts)


def _canonical(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return text


def redrive(sfn_client: Any, execution_arn: str) -> str:
    """Call RedriveExecution with a token derived from the execution and how often it was redriven: a
    repeated call is one redrive, and the next redrive (after this one failed too) is a new one (a reused
    token within its validity would return the first redrive instead of starting another)."""
    count = int(sfn_client.describe_execution(executionArn=execution_arn).get("redriveCount") or 0)
    token = hashlib.sha256(f"redrive:{execution_arn}:{count}".encode()).hexdigest()[:64]
    answer = sfn_client.redrive_execution(executionArn=execution_arn, clientToken=token)
    return str(answer.get("redriveDate", ""))


# ---------------------------------------------------------------------------------------------
# start


def start(
    session: Session,
    clients: SfnClients,
    *,
    input_text: str | None = None,
    from_execution: str | None = None,
    name: str | None = None,
) -> StartedExecution:
    """A full restart: the given input, else the failed execution's own input without its skips."""
    if input_text is not None:
        try:
            body = json.loads(input_text)
        except ValueError as exc:
            raise UsageError(f"the input is not JSON: {exc}", fix="pass a JSON object file with --input") from None
        if not isinstance(body, dict):
            raise UsageError("the input must be a JSON object", fix='e.g. {"refresh_date": "2025-01-31"}')
    else:
        arn = from_execution or recoverable_execution(clients)
        described = clients.sfn.describe_execution(executionArn=arn)
        body = json.loads(described.get("input") or "{}")
        for field in (SKIP_INPUT, RECOVERS_INPUT, "requested_by", "note", "flywheel_skip"):
            body.pop(field, None)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    chosen = name or f"flywheel-start-{stamp}-{hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:6]}"
    return _start(clients, chosen, body)


def plan_json(recovery: Recovery) -> dict[str, Any]:
    """A JSON-ready description of a recovery (for `--json`)."""
    from flywheel.api import planned_summary

    return {
        "execution": recovery.record.arn,
        "status": recovery.record.status.value,
        "imported_run": recovery.imported.run_id,
        "skip_input": recovery.skip_input,
        "reattach": {str(k): v for k, v in recovery.reattach.items()},
        "plan": planned_summary(recovery.planned),
    }


# ---------------------------------------------------------------------------------------------
# offline: a history saved with the AWS CLI


def _saved_json(path: Path, what: str, command: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}", fix=f"save it with `{command}`") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path} is not {what} saved as JSON ({exc})", fix=f"save it with `{command}`") from None


def _glue_if_credentials(session: Session) -> Any:
    """A Glue client when AWS credentials are configured here; None (read offline) otherwise."""
    import boto3

    if boto3.Session().get_credentials() is None:
        return None
    return connect(session).glue


def read_saved(session: Session, history_file: Path, describe_file: Path | None = None) -> ExecutionRecord:
    """An execution from what an on-call engineer saved: `aws stepfunctions get-execution-history
    --execution-arn ARN --output json > history.json` (and, optionally, `describe-execution`). Glue is
    asked about the runs only when credentials are there; otherwise every fact is the history's, and
    the view says so."""
    history_command = "aws stepfunctions get-execution-history --execution-arn ARN --output json > history.json"
    body = _saved_json(history_file, "an execution history", history_command)
    events = body.get("events") if isinstance(body, dict) else body
    if not isinstance(events, list) or not all(isinstance(e, dict) and "type" in e and "id" in e for e in events):
        raise UsageError(f"{history_file} holds no execution history events", fix=f"save it with `{history_command}`")
    described = None
    if describe_file is not None:
        described = _saved_json(
            describe_file,
            "an execution description",
            "aws stepfunctions describe-execution --execution-arn ARN --output json > describe.json",
        )
    glue = _glue_if_credentials(session)
    return read_history(events, described, spec=session.spec, env_name=session.env_name, glue=glue)


def view_saved(session: Session, record: ExecutionRecord) -> ExecutionView:
    return ExecutionView(record, execution_state(session.spec, session.env_name, record))


def plan_saved(session: Session, record: ExecutionRecord) -> PlannedRun:
    """The recovery plan of a saved execution, without importing it (nothing is written)."""
    from flywheel.api import PlannedRun
    from flywheel.planner import PlanInputs, plan

    state = execution_state(session.spec, session.env_name, record)
    request = PlanRequest(mode=Mode.RESUME, source_run=0)
    decided = plan(session.spec, request, PlanInputs(source=state))
    return PlannedRun(session=session, plan=decided, source=state, time_saved=decided.time_saved(session.spec))
