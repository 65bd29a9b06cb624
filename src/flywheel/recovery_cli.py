"""`flywheel verify` and `flywheel try`: check a recovery, and test a fix before resuming.

Thin commands over `flywheel.app.queries` (verify) and `flywheel.scratch` (try), mounted by `flywheel.cli`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from flywheel.errors import ExitCode, UsageError
from flywheel.state import StepStatus

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

PipelineOpt = Annotated[str | None, typer.Option("--pipeline", "-p", help="Pipeline name or path.")]
EnvOpt = Annotated[str | None, typer.Option("--env", "-e", help="Environment.", envvar="FLYWHEEL_ENV")]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="Journal, logs and local data.", envvar="FLYWHEEL_HOME")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

SYMBOL = {"matches": "✅", "unchecked": "➖", "changed": "❌", "missing": "❌"}


def verify(
    run_id: Annotated[int | None, typer.Argument(help="Run id (default: the latest).")] = None,
    pipeline: PipelineOpt = None,
    env: EnvOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check every output of a run: data present and unchanged, reports generated, tables and partitions registered. Exit 1 when anything is missing or changed."""  # noqa: E501 - one line: Typer keeps line breaks
    from flywheel import api
    from flywheel.app.queries import verify_run

    session = api.open_session(pipeline, env, home, run_id=run_id)
    report = verify_run(session, run_id)
    if as_json:
        body = {
            "run_id": report.run_id,
            "ok": report.ok,
            "seconds": report.seconds,
            "steps": [
                {
                    "key": str(k.key),
                    "number": k.number,
                    "status": k.status.value,
                    "ok": k.ok,
                    "problem": k.problem,
                    "outputs": [
                        {"uri": c.uri, "kind": c.kind, "status": c.status.value, "detail": c.detail} for c in k.checks
                    ],
                }
                for k in report.keys
            ],
        }
        console.print_json(json.dumps(body))
    else:
        console.print(
            Text.assemble((f"verify run {report.run_id}", "bold"), f"  {session.pipeline} · {session.env_name}")
        )
        for item in report.keys:
            mark = "✅" if item.ok else "❌"
            console.print(Text(f"{mark} {item.number} {item.key}" + (f": {item.problem}" if item.problem else "")))
            for check in item.checks:
                console.print(Text(f"     {SYMBOL[check.status.value]} {check.uri}  {check.detail}"))
        verdict = "all outputs verified" if report.ok else f"{report.problems} step(s) with missing or changed outputs"
        console.print(Text(f"\n{verdict} ({report.seconds * 1000:.0f} ms)", style="green" if report.ok else "red"))
    if not report.ok:
        raise typer.Exit(int(ExitCode.STEP_FAILED))


def try_(
    selection: Annotated[str, typer.Argument(metavar="STEP[CONTEXT]", help="The step (number, id, step[context]).")],
    pipeline: PipelineOpt = None,
    env: EnvOpt = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run one step on the current inputs into a scratch home; show its result and log. Nothing is recorded in the run history and the real outputs are untouched."""  # noqa: E501 - one line: Typer keeps line breaks
    from flywheel import api
    from flywheel.durations import duration
    from flywheel.render import ProgressPrinter
    from flywheel.scratch import try_step

    session = api.open_session(pipeline, env, home)
    printer = ProgressPrinter(console, session.spec)
    observers = [] if as_json else [lambda event: printer(event) if event.key is not None else None]
    result = try_step(session, selection, observers=observers)
    if as_json:
        body = {
            "scratch": str(result.scratch),
            "succeeded": result.succeeded,
            "redirected": dict(result.redirected),
            "copied": dict(result.copied),
            "steps": [
                {
                    "key": str(k),
                    "status": result.state.step(k).status.value,
                    "error_type": result.state.step(k).error_type,
                    "error_message": result.state.step(k).error_message,
                    "log": result.state.step(k).log_path,
                    "outputs": list(result.state.step(k).outputs),
                }
                for k in result.keys
            ],
        }
        console.print_json(json.dumps(body, default=str))
    else:
        for key in result.keys:
            step = result.state.step(key)
            if step.status is StepStatus.SUCCEEDED:
                console.print(f"✅ {key} works on the current inputs ({duration(step.duration)})", style="green")
            else:
                console.print(f"❌ {key} fails: {step.error_type}: {step.error_message}", style="red", markup=False)
            for record in step.outputs:
                if "uri" in record:
                    console.print(f"   wrote {record['uri']}", markup=False)
        redact = api.session_redactor(session)
        for path in result.log_paths():
            console.print(f"\nlog {path}:", style="dim", markup=False)
            lines = path.read_text(errors="replace").splitlines() if path.exists() else []
            for line in lines[-20:]:
                console.print(f"   {redact(line)}", markup=False)
        console.print(f"\nscratch home: {result.scratch} (nothing was recorded in the run history)", markup=False)
        if result.succeeded:
            console.print("the fix works here; continue with:  flywheel resume", style="bold cyan")
    if not result.succeeded:
        raise typer.Exit(int(ExitCode.STEP_FAILED))


def confirm_warnings(*, yes: bool) -> Callable[[Any], None]:
    """The `RunOptions.confirm` hook: a plan with warnings (the same error is likely) asks to go on;
    without a terminal it is refused unless `--yes`."""

    def confirm(planned: Any) -> None:
        warnings = tuple(planned.warnings)
        if not warnings or yes:
            return
        if not sys.stdin.isatty():
            raise UsageError(
                warnings[0] if len(warnings) == 1 else f"{len(warnings)} warnings about this resume",
                details=warnings if len(warnings) > 1 else (),
                fix="fix the cause first (`flywheel try STEP` tests it), then resume; or add --yes to resume anyway",
            )
        for warning in warnings:
            err.print(f"⚠️  {warning}", style="yellow", markup=False, soft_wrap=True)
        if not typer.confirm("Resume anyway?", default=False):
            raise typer.Exit(int(ExitCode.USAGE))

    return confirm
