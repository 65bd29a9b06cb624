"""`flywheel sfn`: export the definition, read an execution, recover or restart it. Parsing and
rendering only; the work is in `flywheel.aws.recover` and `flywheel.aws.sfn`.

Exit codes: 0 success · 1 a step failed · 2 usage error · 3 AWS or environment error · 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from flywheel.errors import BackendError, ExitCode, UsageError

if TYPE_CHECKING:
    from flywheel.api import Session
    from flywheel.aws.recover import ExecutionView, Recovery

app = typer.Typer(
    help="Step Functions: export the definition, show an execution, recover or restart it.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(highlight=False, soft_wrap=True)
if not console.is_terminal:
    console.width = 160  # pipes and logs: whole rows rather than wrapping at 80 columns, as `flywheel`

PipelineOpt = Annotated[str | None, typer.Option("--pipeline", "-p", help="Pipeline name or path.")]
EnvOpt = Annotated[str | None, typer.Option("--env", "-e", help="Environment (dev, prod).", envvar="FLYWHEEL_ENV")]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="Journal and logs.", envvar="FLYWHEEL_HOME")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
ArnArg = Annotated[str | None, typer.Argument(help="Execution ARN (default: see the command).")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
HistoryOpt = Annotated[
    Path | None,
    typer.Option("--history", help="A saved `aws stepfunctions get-execution-history --output json` (offline)."),
]
DescribeOpt = Annotated[
    Path | None, typer.Option("--describe", help="A saved `aws stepfunctions describe-execution --output json`.")
]


def _session(pipeline: str | None, env: str | None, home: Path | None) -> Session:
    from flywheel import api

    return api.open_session(pipeline, env, home)


@contextmanager
def _aws_errors() -> Iterator[None]:
    """AWS failures are backend errors with their code, not tracebacks."""
    from botocore.exceptions import BotoCoreError, ClientError

    from flywheel.aws.session import ACCESS_DENIED, error_code, error_message

    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        fix = "the role lacks a permission: see infra/stacks/<env>-orchestration" if code in ACCESS_DENIED else None
        raise BackendError(f"AWS said {code}: {error_message(exc)}", fix=fix) from None
    except BotoCoreError as exc:
        raise BackendError(f"cannot reach AWS: {exc}", fix="check the network, region and credentials") from None


def _confirm(session: Session, what: str, yes: bool) -> None:
    env = session.project.config.environment(session.env_name)
    if not env.confirm or yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{session.env_name} needs confirmation and no terminal is attached", fix="add --yes")
    if not typer.confirm(f"{what} in {session.env_name}?", default=False):
        raise typer.Exit(int(ExitCode.USAGE))


@app.command()
def export(
    env: EnvOpt = None,
    pipeline: PipelineOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (e.g. the Terraform stack).")
    ] = None,
) -> None:
    """Compile the pipeline into the Step Functions definition (what Terraform deploys)."""
    from flywheel.aws.recover import export as export_text

    session = _session(pipeline, env, None)
    text = export_text(session, output)
    if output is None:
        sys.stdout.write(text)
    else:
        console.print(f"wrote {output}")


def _view_table(view: ExecutionView, session: Session) -> Table:
    from flywheel.aws.sfn import AttemptStatus
    from flywheel.durations import duration
    from flywheel.render import SYMBOL
    from flywheel.state import StepStatus

    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in ("#", "step", "", "state", "took", "Glue run"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="fold")
    for key in session.spec.keys:
        s = view.state.step(key)
        task = view.record.tasks.get(key)
        label = key.step + (f" [{key.context}]" if key.context else "")
        detail = ""
        if s.error_type:
            detail = f"{s.error_type}: {s.error_message}"
        if task is not None:
            detail = _how_known(task.last, detail)
        if key in view.record.skipped:
            detail = s.reason or "skipped by the execution input"
        if s.status is StepStatus.NOT_STARTED:
            detail = "not executed"
        unknown = task is not None and task.last.status is AttemptStatus.UNKNOWN  # no word from the job's run
        table.add_row(
            str(session.spec.step(key.step).number),
            Text(label),
            "❔" if unknown else SYMBOL[s.status],
            "unknown" if unknown else s.status.value,
            duration(s.duration),
            task.job_run_id or "" if task else "",
            Text(detail),
        )
    return table


def _how_known(attempt: Any, detail: str) -> str:
    """How the status is known, when the history and Glue could disagree: e.g. `task succeeded
    (request-response) - Glue run jr_1 FAILED: OutOfMemory`."""
    if attempt.evidence == "glue" and attempt.task_outcome and attempt.integration != "sync":
        said = (
            f"task {attempt.task_outcome} ({attempt.integration}) - Glue run {attempt.job_run_id} {attempt.glue_state}"
        )
        return said + (f": {detail}" if detail else "")
    if attempt.evidence == "glue":
        return (detail + "; " if detail else "") + f"Glue says {attempt.glue_state}"
    if attempt.evidence.startswith("history only"):
        said = (
            f"task {attempt.task_outcome} ({attempt.integration})" if attempt.task_outcome else "no end in the history"
        )
        return f"{said}; {attempt.evidence}" + (f"; {detail}" if detail else "")
    return detail


def _print_view(view: ExecutionView, session: Session) -> None:
    record = view.record
    style = {"SUCCEEDED": "green", "RUNNING": "cyan"}.get(record.status.value, "red")
    console.print(
        Text.assemble(
            (record.name, "bold"), f"  {session.pipeline} · {session.env_name} · ", (record.status.value, style)
        )
    )
    console.print(record.arn, style="dim", markup=False)
    if record.recovers:
        console.print(f"recovers {record.recovers}", style="dim", markup=False)
    console.print(_view_table(view, session))
    if record.error:
        console.print(Text.assemble(("\n❌ ", "red"), f"{record.error}: {record.cause or ''}"))
    for task in record.still_running:
        console.print(f"🔄 {task.key}: Glue run {task.job_run_id} is still running (a local recover re-attaches)")
    if view.lock_holder:
        console.print(f"🔒 {session.pipeline} in {session.env_name} is busy: {view.lock_holder}")
    if record.not_in_pipeline:
        console.print(f"not part of the pipeline: {', '.join(record.not_in_pipeline)}", style="dim", markup=False)
    if not record.glue_asked:
        console.print("read from the saved history alone: Glue was not asked (no AWS credentials here)", style="dim")
    for warning in record.warnings:
        console.print(f"⚠️  {warning}", style="yellow", markup=False)
    if view.recover_command:
        console.print(Text.assemble("\nto continue after fixing the cause:  ", (view.recover_command, "bold cyan")))
        console.print(f"to preview first:                    {view.recover_command} --dry-run", style="dim")


def _view_json(view: ExecutionView, session: Session) -> dict[str, Any]:
    record = view.record
    return {
        "execution": record.arn,
        "name": record.name,
        "status": record.status.value,
        "recovers": record.recovers,
        "error": record.error,
        "recover_command": view.recover_command,
        "lock_holder": view.lock_holder,
        "steps": [
            {
                "key": str(k),
                "number": session.spec.step(k.step).number,
                "status": view.state.step(k).status.value,
                "job_run_id": record.tasks[k].job_run_id if k in record.tasks else None,
                "glue_state": record.tasks[k].last.glue_state if k in record.tasks else None,
                "error_type": view.state.step(k).error_type,
                "error_message": view.state.step(k).error_message,
                "attempt_status": record.tasks[k].last.status.value if k in record.tasks else "not_run",
                "integration": record.tasks[k].last.integration if k in record.tasks else None,
                "task_outcome": record.tasks[k].last.task_outcome if k in record.tasks else None,
                "evidence": record.tasks[k].last.evidence if k in record.tasks else None,
            }
            for k in session.spec.keys
        ],
        "glue_asked": record.glue_asked,
        "not_in_pipeline": list(record.not_in_pipeline),
        "warnings": list(record.warnings),
    }


@app.command()
def status(
    execution_arn: ArnArg = None,
    env: EnvOpt = None,
    pipeline: PipelineOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
    history: HistoryOpt = None,
    describe: DescribeOpt = None,
) -> None:
    """Show an execution (default: the latest) step by step, with Glue run ids and errors.

    With --history, read what `aws stepfunctions get-execution-history --output json` saved (on a laptop,
    for a post-mortem): Glue is asked only when credentials are configured.
    """
    from flywheel.aws import recover as ops

    session = _session(pipeline, env, home)
    with _aws_errors():
        if history is not None:
            view = ops.view_saved(session, ops.read_saved(session, history, describe))
        else:
            view = ops.status(session, ops.connect(session), execution_arn)
    if as_json:
        console.print_json(json.dumps(_view_json(view, session)))
    else:
        _print_view(view, session)


def _print_recovery(recovery: Recovery, *, dry_run: bool) -> None:
    from flywheel.render import print_plan

    record = recovery.record
    console.print(
        f"execution {record.name} ({record.status.value}) is run {recovery.imported.run_id} in the journal"
        + ("" if recovery.imported.created else " (already imported; brought up to date)"),
        style="dim",
    )
    print_plan(console, recovery.planned, dry_run=dry_run)
    for key, run_id in recovery.reattach.items():
        console.print(f"🔄 {key}: Glue run {run_id} is still running; the Glue executor re-attaches to it")


def _preview_saved(session: Session, history: Path, describe: Path | None, *, dry_run: bool, as_json: bool) -> None:
    """`sfn recover --history FILE --dry-run`: the plan of a saved execution, nothing written."""
    from flywheel import api
    from flywheel.aws import recover as ops
    from flywheel.render import print_plan

    if not dry_run:
        raise UsageError(
            "--history reads a saved history to preview the recovery; it cannot run it",
            fix="add --dry-run, or recover the execution by its ARN where AWS is reachable",
        )
    with _aws_errors():
        planned = ops.plan_saved(session, ops.read_saved(session, history, describe))
    if as_json:
        console.print_json(json.dumps(api.planned_summary(planned)))
    else:
        print_plan(console, planned, dry_run=True)


def _redrive(session: Session, clients: Any, recovery: Recovery, *, dry_run: bool, yes: bool) -> None:
    """`sfn recover --redrive`: only where Step Functions would rerun the failed task (`check_redrive`)."""
    from flywheel.aws import recover as ops

    check = ops.check_redrive(session, clients, recovery.record)
    if not check.possible:
        raise UsageError(
            "this execution cannot be redriven: " + check.problems[0],
            details=check.problems[1:],
            fix=f"recover it with `flywheel sfn recover {recovery.record.arn} --env {session.env_name} "
            "--in-aws` (a new execution that skips what finished) or locally without flags",
        )
    if dry_run:
        console.print(
            "redrive possible: Step Functions would restart " + (", ".join(check.restarts) or "the failed states")
        )
        return
    _confirm(session, "Redrive the execution", yes)
    when = ops.redrive(clients.sfn, recovery.record.arn)
    console.print(f"redriven at {when}: follow it with `flywheel sfn status {recovery.record.arn}`")


def _recover_in_aws(
    session: Session, clients: Any, recovery: Recovery, *, dry_run: bool, yes: bool, as_json: bool
) -> None:
    """`sfn recover --in-aws`: a new execution that skips what finished."""
    from flywheel.aws import recover as ops

    if dry_run:
        console.print(f"would start {ops.recovery_execution_name(recovery.record)} with input:")
        console.print_json(json.dumps({"skip": recovery.skip_input, "recovers": recovery.record.arn}))
        return
    _confirm(session, "Start the recovery execution", yes)
    started = ops.recover_in_aws(session, clients, recovery)
    if as_json:
        console.print_json(json.dumps({"execution": started.arn, "input": dict(started.input)}))
    else:
        console.print(f"started {started.name}: follow it with `flywheel sfn status {started.arn}`")


@app.command()
def recover(
    execution_arn: ArnArg = None,
    env: EnvOpt = None,
    pipeline: PipelineOpt = None,
    home: HomeOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Import and print the plan; run nothing.")] = False,
    in_aws: Annotated[
        bool, typer.Option("--in-aws", help="Run the rest as a new execution that skips what finished.")
    ] = False,
    redrive: Annotated[bool, typer.Option("--redrive", help="Redrive the execution when Step Functions can.")] = False,
    note: Annotated[str | None, typer.Option("--note", help="Why (journaled; sent with --in-aws).")] = None,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
    history: HistoryOpt = None,
    describe: DescribeOpt = None,
) -> None:
    """Continue a failed, timed-out or aborted execution (default: the latest) from where it stopped.

    Locally by default (the Glue executor; runs still going are re-attached), or --in-aws, or --redrive.
    """
    from flywheel import api
    from flywheel.aws import recover as ops
    from flywheel.events import RunOutcome
    from flywheel.progress import progress
    from flywheel.render import print_status

    if in_aws and redrive:
        raise UsageError("--in-aws and --redrive cannot be combined", fix="choose one")
    session = _session(pipeline, env, home)
    if history is not None:  # a saved history: the plan only; recovering needs the execution itself
        _preview_saved(session, history, describe, dry_run=dry_run, as_json=as_json)
        return
    with _aws_errors():
        clients = ops.connect(session)
        recovery = ops.plan_recovery(session, clients, execution_arn, note=note)
        if as_json and (dry_run or not (in_aws or redrive)):
            console.print_json(json.dumps(ops.plan_json(recovery)))
            if dry_run:
                return
        elif not as_json:
            _print_recovery(recovery, dry_run=dry_run or in_aws or redrive)
        if redrive:
            _redrive(session, clients, recovery, dry_run=dry_run, yes=yes)
            return
        if in_aws:
            _recover_in_aws(session, clients, recovery, dry_run=dry_run, yes=yes, as_json=as_json)
            return
        if dry_run:
            return
        _confirm(session, "Recover the execution", yes)
        shown = None if as_json else progress(console, session.spec)
        with shown or nullcontext():
            observers = [] if shown is None else [shown]
            result = ops.recover_locally(session, recovery, api.RunOptions(observers=observers))
    if not as_json:
        console.print()
        print_status(console, api.RunView(session=session, state=result.state))
    if result.outcome is None:
        raise typer.Exit(int(ExitCode.INTERRUPTED))
    if result.outcome is RunOutcome.FAILED:
        raise typer.Exit(int(ExitCode.STEP_FAILED))


@app.command()
def start(
    env: EnvOpt = None,
    pipeline: PipelineOpt = None,
    home: HomeOpt = None,
    input_file: Annotated[Path | None, typer.Option("--input", help="Execution input (JSON file).")] = None,
    from_execution: Annotated[
        str | None, typer.Option("--from", help="Reuse this execution's input (default: the latest failed).")
    ] = None,
    yes: YesOpt = False,
) -> None:
    """Start a full run of the state machine (everything runs; no skips)."""
    from flywheel.aws import recover as ops

    session = _session(pipeline, env, home)
    text = None
    if input_file is not None:
        try:
            text = input_file.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read {input_file}: {exc}") from None
    with _aws_errors():
        clients = ops.connect(session)
        _confirm(session, "Start a full execution", yes)
        started = ops.start(session, clients, input_text=text, from_execution=from_execution)
    console.print(f"started {started.name}: follow it with `flywheel sfn status {started.arn}`")
