"""`flywheel report RUN`: one self-contained HTML page that explains a run.

The page holds the run's graph coloured by state (contexts drawn as parallel nodes), a Gantt-style
timeline of every attempt, the steps it reused and the time that saved, the incident it belongs to with
its notes, and the step logs. Everything is read from the journal and the log files; nothing is stored.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from flywheel.events import Event, StepReused
from flywheel.incidents import Incident, IncidentStatus, ReusedStep, incidents, log_excerpt, time_saved
from flywheel.journal import Journal
from flywheel.logtail import tail
from flywheel.reports import badge, dur, esc, page, when
from flywheel.reports.run_charts import AttemptSpan, attempts, graph_svg, timeline_svg
from flywheel.spec import PipelineSpec
from flywheel.state import RunState, RunStatus, StepStatus, fold

LOG_TAIL_LINES = 400


# ---------------------------------------------------------------------------------------------
# sections


def _header(spec: PipelineSpec, state: RunState) -> str:
    st = state.started
    status = state.status.value
    lines = [f"<h1>Run {state.run_id} · {esc(spec.pipeline)} {badge(status)}</h1>"]
    if st is not None:
        lineage = ""
        if st.parent_run:
            lineage = f" · continues run {st.parent_run}" + (f" (lineage of run {st.root_run})" if st.root_run else "")
        lines.append(
            f'<p class="muted">env <b>{esc(st.env)}</b> · started {esc(when(st.at))} by {esc(st.user)}@{esc(st.host)}'
            f" · took {esc(dur(state.duration))} · flywheel {esc(st.flywheel_version)} · code "
            f"{esc(st.code_version)}{esc(lineage)}</p>"
        )
        if st.external_id:
            lines.append(f'<p class="muted mono">execution {esc(st.external_id)}</p>')
        if st.request and st.request.get("note"):
            lines.append(f"<p>note: {esc(st.request['note'])}</p>")
    if state.status in (RunStatus.FAILED, RunStatus.INTERRUPTED):
        lines.append(
            f'<p>to continue after fixing the cause: <code class="cmd">flywheel resume {state.run_id}</code></p>'
        )
    return "\n".join(lines)


def _steps_table(spec: PipelineSpec, state: RunState) -> str:
    rows = []
    for key in spec.keys:
        s = state.step(key)
        detail = ""
        if s.status is StepStatus.FAILED:
            detail = f"{s.error_type}: {s.error_message}"
        elif s.status is StepStatus.REUSED:
            detail = f"reused from run {s.produced_by}"
        elif s.reason:
            detail = s.reason
        rows.append(
            f'<tr data-key="{esc(key)}" data-state="{s.status.value}"><td>{spec.by_id[key.step].number}</td>'
            f"<td>{esc(key)}</td><td>{badge(s.status.value)}</td><td>{s.attempts or ''}</td>"
            f'<td class="nowrap">{esc(dur(s.duration))}</td><td>{esc(detail[:400])}</td></tr>'
        )
    return (
        '<table id="steps"><tr><th>#</th><th>step</th><th>state</th><th>attempts</th><th>took</th><th>detail</th></tr>'
        + "".join(rows)
        + "</table>"
    )


def _reused_section(spec: PipelineSpec, events: Sequence[Event]) -> str:
    reused = [
        ReusedStep(key=e.key, source_run=e.source_run, duration=e.duration, dpu_hours=e.dpu_hours)
        for e in events
        if isinstance(e, StepReused)
    ]
    if not reused:
        return '<p class="muted">this run reused no step</p>'
    saved = time_saved(spec, reused)
    with_dpu = any(r.dpu_hours is not None for r in reused)
    rows = "".join(
        f"<tr><td>{esc(r.key)}</td><td>run {r.source_run}</td><td>{esc(dur(r.duration))}</td>"
        + (f"<td>{'' if r.dpu_hours is None else f'{r.dpu_hours:.2f}'}</td>" if with_dpu else "")
        + "</tr>"
        for r in reused
    )
    dpu = f", {saved.dpu_hours:.1f} DPU-hours" if saved.dpu_hours else ""
    head = "<tr><th>step</th><th>produced by</th><th>took then</th>" + ("<th>DPU-hours</th>" if with_dpu else "")
    return (
        f'<p id="time-saved"><b>{esc(dur(saved.wall_seconds))}</b> wall-clock saved '
        f"({esc(dur(saved.compute_seconds))} of compute{esc(dpu)}) by reusing {len(reused)} finished step(s)</p>"
        f"<table>{head}</tr>{rows}</table>"
    )


def incident_section(inc: Incident) -> str:
    """The incident as HTML (also used by the incidents report)."""
    f = inc.primary
    parts = [
        f'<div class="incident" id="incident-{inc.id}" data-status="{inc.status.value}">',
        f"<p><b>incident {inc.id}</b> {badge(inc.status.value)} · "
        f"{esc(inc.env)} · opened {esc(when(inc.opened_at))} · runs {', '.join(str(r) for r in inc.runs)}</p>",
        f"<p>failed: <b>{esc(f.key)}</b> — "
        f"<span class=mono>{esc(f.error_type)}: {esc(f.error_message[:2000])}</span></p>",
        f'<p>cause: <b class="cause">{esc(inc.cause.value)}</b>'
        + (" (from a note)" if inc.cause is not f.cause else " (classified)")
        + f' · signature <code title="{esc(f.signature)}">{esc(f.signature_id)}</code></p>',
    ]
    parts += [f'<p class="hint"><b>hint:</b> {esc(h)}</p>' for h in f.hints]
    for past in inc.past_fixes[:3]:
        parts.append(
            f"<p>same error in incident {past.incident_id} ({esc(when(past.at))}): fixed by "
            f"{esc(past.note.user)}: <i>{esc(past.note.fix)}</i></p>"
        )
    if inc.status is not IncidentStatus.OPEN:
        saved = inc.time_saved
        text = f"closed by run {inc.closed_by} ({inc.status.value}) after {dur(inc.recovery_seconds)}"
        if saved is not None and saved.compute_seconds:
            text += f"; reuse saved {dur(saved.wall_seconds)} wall-clock ({dur(saved.compute_seconds)} of compute)"
        parts.append(f"<p>{esc(text)}</p>")
    if inc.notes:
        parts.append("<table class=notes><tr><th>when</th><th>who</th><th>cause</th><th>fix</th></tr>")
        parts += [
            f"<tr><td>{esc(when(n.at))}</td><td>{esc(n.user)}</td><td>{esc(n.cause)}"
            f"{f' [{esc(n.category)}]' if n.category else ''}</td><td>{esc(n.fix)}</td></tr>"
            for n in inc.notes
        ]
        parts.append("</table>")
    else:
        parts.append(
            f'<p class="muted">no notes yet: <code class="cmd">flywheel incident note {inc.id} --cause "…" '
            '--fix "…"</code></p>'
        )
    parts.append("</div>")
    return "\n".join(parts)


def _tail_of(path: str, lines: int) -> tuple[list[str], bool]:
    end = tail(path, lines)
    return end.lines, end.cut


def _logs_section(spans: Sequence[AttemptSpan]) -> str:
    parts = []
    for s in spans:
        if not s.log_path:
            continue
        lines, cut = _tail_of(s.log_path, LOG_TAIL_LINES)
        marked = set()
        if s.outcome == "failed" and s.error:
            error_type, _, message = s.error.partition(": ")
            excerpt = log_excerpt(s.log_path, error_type, message, before=0, after=0)
            if excerpt and excerpt.lines:
                marked = {ln for ln in excerpt.lines}
        body = "\n".join(f'<span class="err">{esc(line)}</span>' if line in marked else esc(line) for line in lines)
        opened = " open" if s.outcome == "failed" else ""
        parts.append(
            f'<details class="log" data-key="{esc(s.key)}" data-attempt="{s.attempt}"{opened}>'
            f"<summary>{esc(s.key)} · attempt {s.attempt} · {badge(s.outcome)} · "
            f'<span class="muted mono">{esc(Path(s.log_path).name)}</span></summary>'
            + (f'<p class="muted">last {LOG_TAIL_LINES} lines</p>' if cut else "")
            + f"<pre>{body or '(empty)'}</pre></details>"
        )
    return "\n".join(parts) or '<p class="muted">no logs</p>'


def render_run_report(
    journal: Journal,
    spec: PipelineSpec,
    run_id: int,
    *,
    state: RunState | None = None,
    now: float | None = None,
) -> str:
    """The HTML page for one run. `state` lets the caller pass a run folded with its lock (running or not)."""
    now = time.time() if now is None else now
    journal.run(run_id)
    events = journal.events(run_id)
    state = state or fold(run_id, events)
    spans = attempts(events, state)
    found = next((i for i in incidents(journal, spec) if run_id in i.runs or i.closed_by == run_id), None)
    body = [
        _header(spec, state),
        "<h2>Graph</h2>",
        graph_svg(spec, state, now=now, interactive=False),
        "<h2>Steps</h2>",
        _steps_table(spec, state),
        "<h2>Timeline</h2>",
        timeline_svg(spec, state, spans, now),
        "<h2>Reused steps and time saved</h2>",
        _reused_section(spec, events),
        "<h2>Incident</h2>",
        incident_section(found) if found else '<p class="muted">no incident: this run did not fail</p>',
        "<h2>Logs</h2>",
        _logs_section(spans),
        f'<p class="muted">generated {esc(when(now))} by flywheel</p>',
    ]
    return page(f"run {run_id} · {spec.pipeline} · {state.status.value}", "\n".join(body))
