"""Terminal rendering (Rich): status trees, plans, run lists, and live progress lines.

Symbols follow the Step Functions console operators already read: ✅ succeeded, ❌ failed,
⏸️ not executed, ⏭ skipped or reused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from flywheel.api import PlannedRun, RunView, request_flags
from flywheel.durations import duration, when
from flywheel.events import Event, RunFinished, RunInterrupted, StepFailed, StepStarted, StepSucceeded
from flywheel.planner import Action
from flywheel.spec import PipelineSpec, StepSpec
from flywheel.state import RunState, RunStatus, StepState, StepStatus

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
    RunStatus.PARTIAL: "yellow",
    RunStatus.RUNNING: "cyan",
    RunStatus.UNFINISHED: "yellow",
}


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


# A fanned-out step's own row shows the state that most needs attention among its contexts.
_ATTENTION = (
    StepStatus.FAILED,
    StepStatus.INTERRUPTED,
    StepStatus.RUNNING,
    StepStatus.NOT_STARTED,
    StepStatus.SKIPPED,
    StepStatus.MARKED,
    StepStatus.REUSED,
    StepStatus.SUCCEEDED,
)
_STATE_STYLE = {
    StepStatus.FAILED: "red",
    StepStatus.INTERRUPTED: "yellow",
    StepStatus.RUNNING: "cyan",
    StepStatus.NOT_STARTED: "dim",
    StepStatus.SKIPPED: "dim",
}
_GUIDE = 4  # the cells a Rich tree indents each level by
_DETAIL_CELLS = 80


def parallel_groups(spec: PipelineSpec) -> list[list[StepSpec]]:
    """The steps in operator order, neighbours that can run at the same time grouped together.

    A step's level is the length of the longest dependency chain below it; steps on one level never
    depend on each other, so consecutive steps of one level form a group that runs in parallel.
    """
    level: dict[str, int] = {}
    for step in spec.topological_steps:
        level[step.id] = 1 + max((level.get(d, 0) for d in step.depends_on), default=-1)
    groups: list[list[StepSpec]] = []
    for step in spec.topological_steps:
        if groups and level[groups[-1][-1].id] == level[step.id]:
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


def _took(s: StepState, now: float) -> float | None:
    if s.status is StepStatus.RUNNING and s.started_at:
        return now - s.started_at
    return s.duration


def _row_detail(state: RunState, s: StepState, waiting: bool) -> str:
    if waiting and s.status is StepStatus.NOT_STARTED:
        return "waiting"
    detail = _detail(state, s)
    if s.status in (StepStatus.SUCCEEDED, StepStatus.FAILED) or not detail:
        detail = f"{s.status.value}{'; ' + detail if detail else ''}"
    return detail


def _symbol(status: StepStatus) -> str:
    symbol = SYMBOL[status].rstrip()
    return symbol + " " * max(1, 3 - cell_len(symbol))


@dataclass(frozen=True)
class _Row:
    depth: int  # 0: under the root; a step in a parallel group or a context is one deeper
    status: StepStatus
    number: str
    label: str
    took: float | None
    detail: str
    children: tuple[_Row, ...] = ()


def _step_row(spec: PipelineSpec, state: RunState, step: StepSpec, depth: int, now: float, waiting: bool) -> _Row:
    number = str(step.number).rjust(len(str(len(spec.steps))))
    if not step.contexts:
        s = state.step(step.keys[0])
        return _Row(depth, s.status, number, step.id, _took(s, now), _row_detail(state, s, waiting))
    contexts = [state.step(key) for key in step.keys]
    counts: dict[str, int] = {}
    for c in contexts:
        counts[c.status.value] = counts.get(c.status.value, 0) + 1
    summary = ", ".join(f"{n} {value.replace('_', ' ')}" for value, n in counts.items())
    return _Row(
        depth,
        min((c.status for c in contexts), key=_ATTENTION.index),
        number,
        step.id,
        None,
        f"{len(contexts)} contexts: {summary}",
        tuple(
            _Row(depth + 1, c.status, number, str(c.key), _took(c, now), _row_detail(state, c, waiting))
            for c in contexts
        ),
    )


def _row_text(row: _Row, label_cells: int) -> Text:
    style = _STATE_STYLE.get(row.status, "")
    detail = row.detail if cell_len(row.detail) <= _DETAIL_CELLS else row.detail[: _DETAIL_CELLS - 1] + "…"
    return Text.assemble(
        _symbol(row.status),
        f"{row.number} ",
        (row.label, "bold" if row.children else ""),
        " " * (label_cells - _GUIDE * row.depth - cell_len(row.label)),
        f"{duration(row.took):>9}  ",
        (detail, style),
    )


def status_tree(spec: PipelineSpec, state: RunState, *, now: float | None = None, live: bool = False) -> Tree:
    """The run as a tree in operator order: steps that run side by side under `in parallel`, a
    fanned-out step with one row per context (labelled as `--only` takes it, `step[context]`), each row
    with its state, duration and detail (the error, or the run a reused step came from). `live`: while
    the run goes on, what has not started yet is waiting rather than not executed."""
    now = time.time() if now is None else now
    grouped = [
        [_step_row(spec, state, step, 1 if len(group) > 1 else 0, now, live) for step in group]
        for group in parallel_groups(spec)
    ]
    every = [r for group in grouped for row in group for r in (row, *row.children)]
    label_cells = max((_GUIDE * r.depth + cell_len(r.label) for r in every), default=0)
    tree = Tree(Text(spec.pipeline, "bold"), guide_style="dim")
    for group in grouped:
        parent = tree.add(Text("in parallel", "dim")) if len(group) > 1 else tree
        for row in group:
            node = parent.add(_row_text(row, label_cells))
            for child in row.children:
                node.add(_row_text(child, label_cells))
    return tree


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
    console.print(status_tree(view.session.spec, state))
    if state.status is RunStatus.RUNNING:
        print_etas(console, view)
    failed = [state.step(k) for k in state.failed_keys]
    for s in failed:
        console.print(
            Text.assemble(("\n❌ ", "red"), (str(s.key), "bold"), f" failed: {s.error_type}: {s.error_message}")
        )
        if s.log_path:
            console.print(f"   log: {s.log_path}", style="dim", markup=False)
    if view.recovered_by is not None:
        console.print(
            Text.assemble("\nrecovered by run ", (str(view.recovered_by), "bold green"), ": nothing left to resume")
        )
    elif state.status is RunStatus.PARTIAL:
        left = [str(k) for k in view.session.spec.keys if not state.step(k).status.done]
        console.print(
            f"\npartial: {len(left)} step(s) left not executed: {', '.join(left)}", style="yellow", markup=False
        )
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
        what = request_flags(st.request) if st else ""
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

    def __enter__(self) -> ProgressPrinter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

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
