"""CLI for incidents and reports: `flywheel incidents [report]`, `flywheel incident show|note`, `flywheel report`.

Mounted by `flywheel.cli`; heavy imports stay inside the command bodies so `flywheel --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from flywheel.errors import UsageError

console = Console(highlight=False, soft_wrap=True)

PipelineOpt = Annotated[
    str | None, typer.Option("--pipeline", "-p", help="Pipeline name or path (default: db-refresh).")
]
EnvOpt = Annotated[str | None, typer.Option("--env", "-e", help="Only this environment (default: every one).")]
HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="Journal, logs and local data live here.", envvar="FLYWHEEL_HOME")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="Only incidents opened in this period: 30d, 12h, 2w, or a date.")
]

incidents_app = typer.Typer(
    help="Failures of past runs: cause, fix, recovery time and time saved.",
    invoke_without_command=True,
    no_args_is_help=False,
)
incident_app = typer.Typer(help="One incident: show it, or note its cause and fix.", no_args_is_help=True)


def _session(pipeline: str | None, home: Path | None, run_id: int | None = None) -> Any:
    from flywheel import api

    return api.open_session(pipeline, None, home, run_id=run_id)


def _when(at: float | None) -> str:
    from flywheel.reports import when

    return when(at)


def _dur(seconds: float | None) -> str:
    from flywheel.reports import dur

    return dur(seconds)


@incidents_app.callback()
def list_incidents(
    ctx: typer.Context,
    pipeline: PipelineOpt = None,
    env: EnvOpt = None,
    home: HomeOpt = None,
    since: SinceOpt = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only incidents not yet closed.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 30,
    as_json: JsonOpt = False,
) -> None:
    """List incidents, newest first: step, cause, status, recovery time and time saved."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table
    from rich.text import Text

    from flywheel.incidents import IncidentStatus, incident_dict, incidents, parse_since

    session = _session(pipeline, home)
    with session.journal() as journal:
        found = incidents(journal, session.spec, env=env)
    if since:
        start = parse_since(since)
        found = [i for i in found if i.opened_at >= start]
    if open_only:
        found = [i for i in found if i.status is IncidentStatus.OPEN]
    found = list(reversed(found))[:limit]
    if as_json:
        console.print_json(json.dumps([incident_dict(i) for i in found]))
        return
    if not found:
        console.print(f"no incidents of {session.pipeline}" + (f" in {env}" if env else ""))
        return
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    wide = console.width >= 120  # the error needs room; `incident show` always has it
    columns = ("id", "env", "status", "opened", "step", "cause", "recovery", "saved", "notes", "error")
    for column in columns if wide else columns[:-1]:
        if column == "error":
            table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=60)
        else:
            table.add_column(column, no_wrap=True, min_width=len(column))
    style = {"open": "red", "resolved": "green", "superseded": "dim"}
    for inc in found:
        f = inc.primary
        error = f"{f.error_type}: {f.error_message}".splitlines()[0][:80]
        table.add_row(
            str(inc.id),
            inc.env,
            Text(inc.status.value, style[inc.status.value]),
            _when(inc.opened_at)[5:16],
            Text(str(f.key)),
            inc.cause.value,
            _dur(inc.recovery_seconds),
            _dur(inc.time_saved.wall_seconds) if inc.time_saved and inc.time_saved.wall_seconds else "",
            str(len(inc.notes) or ""),
            *([Text(error)] if wide else []),
        )
    console.print(table)


@incidents_app.command("report")
def incidents_report(
    pipeline: PipelineOpt = None,
    env: EnvOpt = None,
    home: HomeOpt = None,
    since: SinceOpt = "30d",
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, html, json or csv.")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Failure patterns: by step, cause and env; mean time to recovery; time saved; repeat offenders."""
    from flywheel.incidents import incidents, parse_since, summarize

    if fmt not in ("table", "html", "json", "csv"):
        raise UsageError(f"--format {fmt!r} is not one of table, html, json, csv")
    session = _session(pipeline, home)
    with session.journal() as journal:
        found = incidents(journal, session.spec, env=env)
    start = parse_since(since) if since and since != "all" else None
    summary = summarize(found, since=start)
    if fmt == "table":
        if output is not None:
            raise UsageError("--output needs --format html, json or csv")
        _print_summary(summary, session.pipeline)
        return
    from flywheel.reports import incidents_report as render

    text = {
        "html": lambda: render.to_html(summary, title=f"Incidents · {session.pipeline}"),
        "json": lambda: render.to_json(summary),
        "csv": lambda: render.to_csv(summary),
    }[fmt]()
    if output is None:
        sys.stdout.write(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    console.print(f"wrote {output}")


def _print_summary(summary: Any, pipeline: str) -> None:
    from rich.table import Table
    from rich.text import Text

    period = f"since {_when(summary.since)}" if summary.since else "all time"
    console.print(
        f"[bold]incidents of {pipeline}[/bold] ({period}): {len(summary.incidents)}, {summary.open_count} open"
    )
    console.print(
        f"mean time to recovery: {_dur(summary.mttr_seconds) or '—'} · time saved by resuming: "
        f"{_dur(summary.saved_wall_seconds) or '0'} wall-clock ({_dur(summary.saved_compute_seconds) or '0'} of "
        "compute" + (f", {summary.saved_dpu_hours:.1f} DPU-hours" if summary.saved_dpu_hours else "") + ")"
    )
    for title, counts in (("step", summary.by_step), ("cause", summary.by_cause), ("env", summary.by_env)):
        table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        table.add_column(f"by {title}")
        table.add_column("failures", justify="right")
        for name, count in counts.items():
            table.add_row(Text(name), str(count))
        console.print()
        console.print(table)
    if summary.repeat_offenders:
        console.print("\n[bold]repeat offenders[/bold]")
        for o in summary.repeat_offenders:
            fix = f" · last fix: {o.last_fix}" if o.last_fix else ""
            console.print(
                f"  {o.key} ×{o.count} (incidents {', '.join(map(str, o.incidents))}): {o.error_type}: "
                f"{o.signature[:100]}{fix}",
                markup=False,
            )


@incident_app.command("show")
def show(
    incident_id: Annotated[int, typer.Argument(help="Incident id (the failed run's id) or any run of it.")],
    pipeline: PipelineOpt = None,
    home: HomeOpt = None,
    lines: Annotated[int, typer.Option("--lines", help="Log lines around the error.")] = 18,
    as_json: JsonOpt = False,
) -> None:
    """An incident: what failed, the classified cause and hints, log lines, notes, recovery and time saved."""
    from dataclasses import replace

    from flywheel import api
    from flywheel.incidents import find_incident, incident_dict, log_excerpt

    session = _session(pipeline, home, incident_id)
    with session.journal() as journal:
        inc = find_incident(journal, session.spec, incident_id)
    excerpts = [
        log_excerpt(f.log_path, f.error_type, f.error_message, before=max(1, lines * 2 // 3), after=lines // 3)
        for f in inc.failures
    ]
    redact = api.session_redactor(session)
    if as_json:
        body = incident_dict(inc)
        for item, excerpt in zip(body["failures"], excerpts, strict=True):
            item["log_excerpt"] = [redact(line) for line in excerpt.lines] if excerpt else []
        console.print_json(redact(json.dumps(body)))
        return
    _print_incident(inc, [replace(e, lines=tuple(redact(line) for line in e.lines)) if e else e for e in excerpts])


def _print_incident(inc: Any, excerpts: list[Any]) -> None:
    from rich.text import Text

    from flywheel.incidents import IncidentStatus

    style = {"open": "bold red", "resolved": "bold green", "superseded": "dim"}
    console.print(
        Text.assemble(
            (f"incident {inc.id}", "bold"),
            f"  {inc.pipeline} · {inc.env} · ",
            (inc.status.value, style[inc.status.value]),
            f" · opened {_when(inc.opened_at)}" + (f" by {inc.opened_by}" if inc.opened_by else ""),
        )
    )
    console.print(f"runs: {' → '.join(str(r) for r in inc.runs)}", style="dim")
    if inc.execution:
        console.print(f"execution: {inc.execution}", markup=False)
    for failure, excerpt in zip(inc.failures, excerpts, strict=True):
        console.print()
        console.print(
            Text.assemble(("❌ ", "red"), (str(failure.key), "bold"), f" failed in run {failure.run_id} ")
            + Text(f"(attempt {failure.attempts}, after {_dur(failure.duration)})", "dim")
        )
        console.print(Text(f"   {failure.error_type}: {failure.error_message}"))
        cause = inc.cause if failure is inc.primary else failure.cause
        origin = "from a note" if failure is inc.primary and inc.cause is not failure.cause else "classified"
        console.print(Text.assemble("   cause: ", (cause.value, "bold"), f" ({origin})"))
        for hint in failure.hints:
            console.print(Text(f"   💡 {hint}"))
        console.print(f"   signature {failure.signature_id}: {failure.signature[:160]}", style="dim", markup=False)
        if excerpt is not None and excerpt.lines:
            where = f" (from line {excerpt.first_line})" if excerpt.first_line else ""
            console.print(f"   log {excerpt.path}{where}:", style="dim", markup=False)
            for i, line in enumerate(excerpt.lines):
                mark = "▶ " if i == excerpt.error_index else "  "
                console.print(Text(f"   {mark}{line}", "red" if i == excerpt.error_index else ""))
        elif failure.log_path:
            console.print(f"   log: {failure.log_path} (not readable here)", style="dim", markup=False)
    for past in inc.past_fixes[:3]:
        console.print(
            Text.assemble(
                ("\n🔁 same error in incident ", "bold"),
                (str(past.incident_id), "bold"),
                f" ({_when(past.at)}), fixed by {past.note.user}: ",
                (past.note.fix, "italic"),
            )
        )
    if inc.notes:
        console.print("\n[bold]notes[/bold]")
        for note in inc.notes:
            category = f" [{note.category}]" if note.category else ""
            text = f"  {_when(note.at)} {note.user}{category}: cause: {note.cause or '—'} · fix: {note.fix or '—'}"
            console.print(text, markup=False)
    console.print()
    if inc.status is IncidentStatus.OPEN:
        console.print(Text.assemble("to continue after fixing the cause:  ", (inc.resume_command, "bold cyan")))
        console.print(f'record what you found:  flywheel incident note {inc.id} --cause "…" --fix "…"', style="dim")
    else:
        saved = inc.time_saved
        text = f"closed by run {inc.closed_by} ({inc.status.value}) after {_dur(inc.recovery_seconds)}"
        if saved is not None and saved.compute_seconds:
            dpu = f", {saved.dpu_hours:.1f} DPU-hours" if saved.dpu_hours else ""
            text += (
                f"; reusing {len(inc.reused)} finished step(s) saved {_dur(saved.wall_seconds)} wall-clock "
                f"({_dur(saved.compute_seconds)} of compute{dpu})"
            )
        console.print(text, style="green", markup=False)


@incident_app.command("note")
def note(
    incident_id: Annotated[int, typer.Argument(help="Incident id (or any run of it).")],
    cause: Annotated[str, typer.Option("--cause", help="The root cause you found.")] = "",
    fix: Annotated[str, typer.Option("--fix", help="What fixed it (shown when the same error comes back).")] = "",
    category: Annotated[
        str | None,
        typer.Option(
            "--category", help="Correct the classification: data, permission, resource, schema, configuration, code."
        ),
    ] = None,
    pipeline: PipelineOpt = None,
    home: HomeOpt = None,
) -> None:
    """Record the root cause and the fix of an incident (journaled with who and when)."""
    from flywheel.incidents import note_incident
    from flywheel.lock import current_identity

    session = _session(pipeline, home, incident_id)
    user, host = current_identity()
    with session.journal() as journal:
        inc, event = note_incident(
            journal, session.spec, incident_id, cause=cause, fix=fix, category=category, user=f"{user}@{host}"
        )
    console.print(f"📝 noted on incident {inc.id} by {event.user} at {_when(event.at)}", markup=False)


def report(
    run_id: Annotated[int, typer.Argument(help="Run id.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write (default: HOME/reports/run-RUN.html).")
    ] = None,
    pipeline: PipelineOpt = None,
    home: HomeOpt = None,
) -> None:
    """Write a self-contained HTML page of a run: graph, timeline, reused steps, incident and logs."""
    from flywheel import api
    from flywheel.reports.run_report import render_run_report

    session = _session(pipeline, home, run_id)
    with session.journal() as journal:
        state = api.load_state(journal, run_id, lock=session.lock())
        text = api.session_redactor(session)(render_run_report(journal, session.spec, run_id, state=state))
    target = output or session.home / "reports" / f"run-{run_id}.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    console.print(f"wrote {target}", markup=False)
