"""`flywheel report RUN`: one self-contained HTML page that explains a run.

The page holds the run's graph coloured by state (contexts drawn as parallel nodes), a Gantt-style
timeline of every attempt, the steps it reused and the time that saved, the incident it belongs to with
its notes, and the step logs. Everything is read from the journal and the log files; nothing is stored.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flywheel.events import Event, StepFailed, StepReused, StepStarted, StepSucceeded
from flywheel.incidents import Incident, IncidentStatus, ReusedStep, incidents, log_excerpt, time_saved
from flywheel.journal import Journal
from flywheel.logtail import tail
from flywheel.reports import STATE_COLOURS, badge, dur, esc, page, when
from flywheel.spec import PipelineSpec, StepKey
from flywheel.state import RunState, RunStatus, StepStatus, fold

LOG_TAIL_LINES = 400


@dataclass(frozen=True)
class AttemptSpan:
    key: StepKey
    attempt: int
    start: float
    end: float | None
    outcome: str  # succeeded | failed | running | interrupted
    log_path: str | None
    error: str | None


def attempts(events: Sequence[Event], state: RunState) -> list[AttemptSpan]:
    """Every attempt of the run with its start, end and outcome, in the order they started."""
    opened: dict[tuple[StepKey, int], StepStarted] = {}
    out: list[AttemptSpan] = []
    for event in events:
        if isinstance(event, StepStarted):
            opened[(event.key, event.attempt)] = event
        elif isinstance(event, StepSucceeded | StepFailed):
            began = opened.pop((event.key, event.attempt), None)
            error = f"{event.error_type}: {event.error_message}" if isinstance(event, StepFailed) else None
            out.append(
                AttemptSpan(
                    key=event.key,
                    attempt=event.attempt,
                    start=began.at if began else event.started_at,
                    end=event.at,
                    outcome="succeeded" if isinstance(event, StepSucceeded) else "failed",
                    log_path=began.log_path if began else None,
                    error=error,
                )
            )
    dangling = "running" if state.status is RunStatus.RUNNING else "interrupted"
    for (key, attempt), began in opened.items():
        out.append(AttemptSpan(key, attempt, began.at, None, dangling, began.log_path, None))
    out.sort(key=lambda a: (a.start, str(a.key)))
    return out


# ---------------------------------------------------------------------------------------------
# the graph


def _layers(spec: PipelineSpec) -> dict[str, int]:
    layer: dict[str, int] = {}
    for step in spec.topological_steps:
        layer[step.id] = 1 + max((layer[d] for d in step.depends_on if d in layer), default=-1)
    return layer


def graph_svg(spec: PipelineSpec, state: RunState) -> str:
    """Steps left to right by dependency depth; each context of a fanned-out step is its own node."""
    layer = _layers(spec)
    columns: dict[int, list[StepKey]] = {}
    for step in sorted(spec.steps, key=lambda s: (layer[s.id], s.number)):
        keys = [StepKey(step.id, c) for c in state.contexts.get(step.id, ())] or list(step.keys)
        columns.setdefault(layer[step.id], []).extend(keys)
    w, h, gap_x, gap_y, pad = 196, 46, 40, 14, 12
    pos: dict[StepKey, tuple[float, float]] = {}
    tallest = max(len(keys) for keys in columns.values())
    for col, keys in columns.items():
        offset = (tallest - len(keys)) * (h + gap_y) / 2
        for row, key in enumerate(keys):
            pos[key] = (pad + col * (w + gap_x), pad + offset + row * (h + gap_y))
    width = pad * 2 + len(columns) * (w + gap_x) - gap_x
    height = pad * 2 + tallest * (h + gap_y) - gap_y
    parts = [
        f'<div class="scroll"><svg id="graph" role="img" aria-label="run graph" width="{width}" height="{height}">'
    ]
    for key, (x, y) in pos.items():
        for dep in spec.by_id[key.step].depends_on:
            for up, (ux, uy) in pos.items():
                if up.step == dep:
                    x1, y1, x2, y2 = ux + w, uy + h / 2, x, y + h / 2
                    mid = (x1 + x2) / 2
                    parts.append(
                        f'<path class="edge" d="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} '
                        f'{x2:.0f},{y2:.0f}"/>'
                    )
    for key, (x, y) in pos.items():
        s = state.step(key)
        status = s.status.value
        fill, stroke = STATE_COLOURS[status]
        number = spec.by_id[key.step].number
        label = key.step if len(key.step) <= 24 else key.step[:23] + "…"
        sub = status + (f" · {dur(s.duration)}" if s.duration is not None else "")
        if s.status is StepStatus.REUSED:
            sub = f"reused (run {s.produced_by})"
        if key.context:
            sub = f"[{key.context}] {sub}"
        sub = sub if len(sub) <= 32 else sub[:31] + "…"
        dash = ' stroke-dasharray="4 3"' if s.status in (StepStatus.NOT_STARTED, StepStatus.SKIPPED) else ""
        tip = f"{key}: {status}" + (f" — {s.error_type}: {s.error_message}" if s.error_type else "")
        parts.append(
            f'<g class="node state-{status}" data-key="{esc(key)}" data-state="{status}">'
            f"<title>{esc(tip)}</title>"
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="7" fill="{fill}" stroke="{stroke}"{dash}/>'
            f'<text x="{x + 10}" y="{y + 19}"><tspan font-weight="600">{number}</tspan> {esc(label)}</text>'
            f'<text x="{x + 10}" y="{y + 36}" class="sub">{esc(sub)}</text></g>'
        )
    parts.append("</svg></div>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# the timeline


def timeline_svg(spec: PipelineSpec, state: RunState, spans: Sequence[AttemptSpan], now: float) -> str:
    """Attempts as bars. An attempt that never ended is drawn to `now` while the run runs, and to where
    the run stopped (its end, or its last event when the runner died) once it does not."""
    if not spans:
        return '<p class="muted">no step was executed in this run</p>'
    if state.status is not RunStatus.RUNNING:
        now = state.finished_at or state.last_event_at or now
    t0 = min([s.start for s in spans] + ([state.started.at] if state.started else []))
    t1 = max([s.end or now for s in spans] + ([state.finished_at] if state.finished_at else []))
    span = max(t1 - t0, 1e-3)
    order = {k: i for i, k in enumerate(spec.keys)}
    rows = sorted({s.key for s in spans}, key=lambda k: order.get(k, len(order)))
    left, width, bar_h, gap, top = 260, 860, 18, 8, 24
    plot = width - left - 20
    height = top + len(rows) * (bar_h + gap) + 8
    parts = [
        f'<div class="scroll"><svg id="timeline" role="img" aria-label="timeline" width="{width}" height="{height}">'
    ]
    for i in range(6):
        x = left + plot * i / 5
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{top - 10}" text-anchor="middle" class="sub">+{esc(dur(span * i / 5) or "0")}</text>'
        )
    for row, key in enumerate(rows):
        y = top + row * (bar_h + gap)
        parts.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">{esc(key)}</text>')
        for s in (s for s in spans if s.key == key):
            fill, stroke = STATE_COLOURS[s.outcome]
            x = left + plot * (s.start - t0) / span
            w = max(2.0, plot * ((s.end or now) - s.start) / span)
            tip = f"{key} attempt {s.attempt}: {s.outcome}, {dur((s.end or now) - s.start)}"
            parts.append(
                f'<g class="span state-{s.outcome}" data-key="{esc(key)}" data-attempt="{s.attempt}" '
                f'data-state="{s.outcome}"><title>{esc(tip)}</title>'
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="3" fill="{fill}" '
                f'stroke="{stroke}"/></g>'
            )
    parts.append("</svg></div>")
    return "".join(parts)


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
        graph_svg(spec, state),
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
