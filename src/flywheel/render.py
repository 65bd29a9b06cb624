"""Terminal rendering (Rich): status trees, plans, run lists, and live progress lines.

Symbols follow the Step Functions console operators already read: ✅ succeeded, ❌ failed,
⏸️ not executed, ⏭ skipped or reused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from flywheel.api import PlannedRun, RunView
from flywheel.durations import duration
from flywheel.events import Event, RunFinished, RunInterrupted, StepFailed, StepStarted, StepSucceeded
from flywheel.planner import Action
from flywheel.spec import PipelineSpec
from flywheel.state import RunState, RunStatus, StepStatus

SYMBOL = {
    StepStatus.SUCCEEDED: "✅",
    StepStatus.FAILED: "❌",
    StepStatus.NOT_STARTED: "⏸️ ",
    StepStatus.INTERRUPTED: "⚠️ ",
    StepStatus.RUNNING: "🔄",
    StepStatus.SKIPPED: "⏭ ",
    StepStatus.REUSED: "⏭ ",
    StepStatus.MARKED: "☑️ ",
}
RUN_STYLE = {
    RunStatus.SUCCEEDED: "green",
    RunStatus.FAILED: "red",
    RunStatus.INTERRUPTED: "yellow",
    RunStatus.RUNNING: "cyan",
    RunStatus.UNFINISHED: "yellow",
}


def when(at: float | None) -> str:
    return "" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _first_line(text: str | None, limit: int = 70) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _detail(state: RunState, step_status: Any) -> str:
    s = step_status
    if s.status is StepStatus.REUSED:
        return f"reused from run {s.produced_by}" + (" (stale, kept)" if s.stale_kept else "")
    if s.status is StepStatus.MARKED:
        return f"marked succeeded: {s.note}"
    if s.status is StepStatus.SKIPPED:
        return s.reason or "skipped"
    if s.status is StepStatus.FAILED:
        return _first_line(f"{s.error_type}: {s.error_message}")
    if s.status is StepStatus.INTERRUPTED:
        return "interrupted (started, never finished)"
    if s.status is StepStatus.RUNNING:
        return f"attempt {s.attempts}, running since {when(s.started_at)}"
    if s.status is StepStatus.NOT_STARTED:
        return "not executed"
    return f"attempt {s.attempts}" if s.attempts > 1 else ""


def status_table(spec: PipelineSpec, state: RunState) -> Table:
    """One row per step and context, labelled as `--only` takes it (`step[context]`)."""
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("#", justify="right", no_wrap=True, min_width=1)
    table.add_column("", no_wrap=True, min_width=2)
    table.add_column("step", no_wrap=True, min_width=20)
    table.add_column("took", justify="right", no_wrap=True, min_width=8)
    table.add_column("detail", overflow="ellipsis", no_wrap=True, max_width=80)
    for key in spec.keys:
        s = state.step(key)
        took = s.duration
        if s.status is StepStatus.RUNNING and s.started_at:
            took = time.time() - s.started_at
        detail = _detail(state, s)
        if s.status in (StepStatus.SUCCEEDED, StepStatus.FAILED) or not detail:
            detail = f"{s.status.value}{'; ' + detail if detail else ''}"
        table.add_row(str(spec.step(key.step).number), SYMBOL[s.status], Text(str(key)), duration(took), Text(detail))
    return table


def print_status(console: Console, view: RunView) -> None:
    state = view.state
    started = state.started
    header = Text.assemble(
        (f"run {state.run_id}", "bold"),
        f"  {view.session.pipeline} · {view.session.env_name} · ",
        (state.status.value, RUN_STYLE[state.status]),
    )
    console.print(header)
    if started is not None:
        lineage = f" · resumes run {started.parent_run}" if started.parent_run else ""
        console.print(
            f"started {when(started.at)} by {started.user}@{started.host} · flywheel {started.flywheel_version}"
            f" · code {started.code_version}{lineage}",
            style="dim",
        )
    console.print(status_table(view.session.spec, state))
    if state.status is RunStatus.RUNNING:
        print_etas(console, view)
    failed = [state.step(k) for k in state.failed_keys]
    for s in failed:
        console.print(
            Text.assemble(("\n❌ ", "red"), (str(s.key), "bold"), f" failed: {s.error_type}: {s.error_message}")
        )
        if s.log_path:
            console.print(f"   log: {s.log_path}", style="dim", markup=False)
    if view.resume_command:
        console.print(Text.assemble("\nto continue after fixing the cause:  ", (view.resume_command, "bold cyan")))
        console.print(f"to preview first:                    {view.resume_command} --dry-run", style="dim")


def print_etas(console: Console, view: RunView) -> None:
    """When each running step should end, from the median of its past durations (none without history)."""
    from flywheel.notify.overdue import eta

    with view.session.journal() as journal:
        ends = eta(journal, view.session.spec, view.state)
    now = time.time()
    for key, end in sorted(ends.items()):
        if end >= now:
            console.print(f"⏱  {key}: expected to finish around {when(end)} (in {duration(end - now)})", markup=False)
        else:
            console.print(f"⏰ {key}: {duration(now - end)} past its usual duration", style="yellow", markup=False)


def print_plan(console: Console, planned: PlannedRun, *, dry_run: bool) -> None:
    spec = planned.session.spec
    title = "plan (dry run: nothing will run)" if dry_run else "plan"
    source = f" from run {planned.source.run_id}" if planned.source else ""
    console.print(Text.assemble((title, "bold"), f"  {spec.pipeline} · {planned.session.env_name}{source}"))
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("#", justify="right")
    table.add_column("step", no_wrap=True)
    table.add_column("action", no_wrap=True)
    table.add_column("why", overflow="fold")
    style = {Action.RUN: "cyan", Action.REUSE: "green", Action.SKIP: "dim"}
    symbol = {Action.RUN: "▶ run", Action.REUSE: "⏭ reuse", Action.SKIP: "⏸️  skip"}
    for d in planned.plan.decisions:
        label = str(d.key)
        row = (str(spec.step(d.key.step).number), Text(label), Text(symbol[d.action], style[d.action]), Text(d.reason))
        table.add_row(*row)
    console.print(table)
    saved = planned.time_saved
    if saved.compute_seconds > 0:
        dpu = f", {saved.dpu_hours:.1f} DPU-hours" if saved.dpu_hours else ""
        console.print(
            f"time saved by reusing finished steps: {duration(saved.wall_seconds)} wall-clock "
            f"({duration(saved.compute_seconds)} of compute{dpu})"
        )
    for warning in planned.warnings:
        console.print(f"⚠️  {warning}", style="yellow")


def print_runs(console: Console, states: Sequence[RunState]) -> None:
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in ("run", "pipeline", "env", "status", "started", "took", "by", "parent", "request"):
        table.add_column(column)
    for s in states:
        st = s.started
        request = st.request if st else {}
        what = str(request.get("mode", "")) if request else ""
        for flag in ("skip", "only"):
            if request.get(flag):
                what += f" --{flag}={','.join(request[flag])}"
        if request.get("from_step"):
            what += f" --from-step={request['from_step']}"
        table.add_row(
            str(s.run_id),
            st.pipeline if st else "?",
            st.env if st else "?",
            Text(s.status.value, RUN_STYLE[s.status]),
            when(st.at if st else None),
            duration(s.duration),
            f"{st.user}@{st.host}" if st else "",
            str(st.parent_run or "") if st else "",
            what,
        )
    console.print(table)


class ProgressPrinter:
    """An observer that prints one line per step event (plain when output is not a terminal)."""

    name = "console"

    def __init__(self, console: Console, spec: PipelineSpec) -> None:
        self.console = console
        self.spec = spec

    def __call__(self, event: Event) -> None:
        key = event.key
        number = f"{self.spec.step(key.step).number}" if key else ""
        match event:
            case StepStarted():
                retry = f" (attempt {event.attempt})" if event.attempt > 1 else ""
                self.console.print(f"  ▶ {number} {key} started{retry}", markup=False)
            case StepSucceeded():
                self.console.print(f"  ✅ {number} {key} succeeded in {duration(event.duration)}", markup=False)
            case StepFailed():
                again = ", retrying" if event.will_retry else ""
                self.console.print(
                    f"  ❌ {number} {key} failed after {duration(event.duration)}: "
                    f"{event.error_type}: {event.error_message}{again}",
                    style="red" if not event.will_retry else "yellow",
                    markup=False,
                )
            case RunFinished():
                self.console.print(f"run {event.run_id} {event.outcome.value}", style="bold")
            case RunInterrupted():
                self.console.print(f"run {event.run_id} interrupted; `flywheel resume {event.run_id}` continues it")
