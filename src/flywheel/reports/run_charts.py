"""The two pictures of a run: its graph and its Gantt timeline, as inline SVG.

Both are drawn by the static report (`flywheel report`) and by the dashboard, so they carry no script:
the dashboard's `app.js` finds what it needs in data attributes (`data-key` on focusable nodes,
`data-tick-start` on what grows while the run runs). Both scale with a `viewBox` and `width="100%"`
(never wider than their natural size), so a narrow window shrinks them instead of clipping them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from flywheel.events import Event, StepFailed, StepStarted, StepSucceeded
from flywheel.reports import STATE_COLOURS, dur, esc
from flywheel.spec import PipelineSpec, StepKey
from flywheel.state import RunState, RunStatus, StepStatus


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


def run_keys(spec: PipelineSpec, state: RunState) -> list[StepKey]:
    """Every key of the run in the order the pipeline runs them, with the contexts the run resolved."""
    return [
        key
        for step in spec.topological_steps
        for key in ([StepKey(step.id, c) for c in state.contexts.get(step.id, ())] or list(step.keys))
    ]


def stopped_at(state: RunState, now: float) -> float:
    """Where an attempt that never ended is drawn to: now while the run runs, else where the run stopped
    (its end, or its last event when the runner died without one)."""
    if state.status is RunStatus.RUNNING:
        return now
    return state.finished_at or state.last_event_at or now


# ---------------------------------------------------------------------------------------------
# the graph

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 184, 62, 30, 12, 12
GROUP_HEAD, GROUP_PAD = 22, 8
LINE_CHARS = 25
FOCUSABLE = ' tabindex="0" role="button"'
HINT = ": press Enter on a step for its details"


def wrap_name(name: str, width: int = LINE_CHARS) -> tuple[str, str]:
    """A step name on two lines, broken after a `-`, `_`, `.` or space; the second line is cut with an
    ellipsis only when even two lines do not hold it (the full name is in the node's title and panel)."""
    if len(name) <= width:
        return name, ""
    breaks = [m.end() for m in re.finditer(r"[-_. ]", name[: width + 1]) if m.end() <= width]
    cut = breaks[-1] if breaks else width
    first, rest = name[:cut], name[cut:]
    return first, rest if len(rest) <= width else rest[: width - 1] + "…"


@dataclass(frozen=True)
class _Block:
    step: str
    keys: tuple[StepKey, ...]

    @property
    def grouped(self) -> bool:
        return len(self.keys) > 1 or self.keys[0].context is not None

    @property
    def height(self) -> float:
        inner = len(self.keys) * (NODE_H + GAP_Y) - GAP_Y
        return inner + (GROUP_HEAD + GROUP_PAD if self.grouped else 0)


def _layers(spec: PipelineSpec) -> dict[str, int]:
    layer: dict[str, int] = {}
    for step in spec.topological_steps:
        layer[step.id] = 1 + max((layer[d] for d in step.depends_on if d in layer), default=-1)
    return layer


def graph_svg(spec: PipelineSpec, state: RunState, *, now: float | None = None, interactive: bool = True) -> str:
    """Steps left to right by dependency depth; the contexts of a step are nodes inside a labelled box.

    Every node has its full name and state in `<title>`; with `interactive` (the dashboard, whose script
    opens a panel) it is a focusable button (`data-key`), not in the static report where nothing would
    answer. A running node's elapsed time carries `data-tick-start` so the dashboard advances it."""
    layer = _layers(spec)
    columns: dict[int, list[_Block]] = {}
    for step in sorted(spec.steps, key=lambda s: (layer[s.id], s.number)):
        keys = tuple(StepKey(step.id, c) for c in state.contexts.get(step.id, ())) or step.keys
        columns.setdefault(layer[step.id], []).append(_Block(step.id, keys))
    heights = {col: sum(b.height + GAP_Y * 2 for b in blocks) - GAP_Y * 2 for col, blocks in columns.items()}
    tallest = max(heights.values())
    width = PAD * 2 + len(columns) * (NODE_W + GROUP_PAD * 2 + GAP_X) - GAP_X
    height = PAD * 2 + tallest
    pos: dict[StepKey, tuple[float, float]] = {}
    groups: list[str] = []
    for col, blocks in sorted(columns.items()):
        x = float(PAD + GROUP_PAD + col * (NODE_W + GROUP_PAD * 2 + GAP_X))
        y = PAD + (tallest - heights[col]) / 2
        for block in blocks:
            top = y
            if block.grouped:
                step = spec.by_id[block.step]
                groups.append(
                    f'<g class="group" data-step="{esc(step.id)}" role="group" aria-label="{esc(step.id)}: '
                    f'{len(block.keys)} context(s)"><title>{esc(step.number)} {esc(step.id)}</title>'
                    f'<rect x="{x - GROUP_PAD}" y="{top:.0f}" width="{NODE_W + GROUP_PAD * 2}" '
                    f'height="{block.height:.0f}" rx="9" fill="#f6f8fa" stroke="#8c959f" stroke-dasharray="5 3"/>'
                    f'<text x="{x - GROUP_PAD + 8}" y="{top + 15:.0f}" class="group-label" font-weight="600">'
                    f"{esc(step.number)} {esc(wrap_name(step.id, 30)[0])}"
                    f"{'…' if len(step.id) > 30 else ''}</text></g>"
                )
                top += GROUP_HEAD
            for row, key in enumerate(block.keys):
                pos[key] = (x, top + row * (NODE_H + GAP_Y))
            y += block.height + GAP_Y * 2
    parts = [
        f'<svg id="graph" class="chart" role="group" aria-label="run graph{HINT if interactive else ""}" '
        f'viewBox="0 0 {width} {height:.0f}" width="100%" style="max-width:{width}px" '
        f'preserveAspectRatio="xMinYMin meet">',
        *groups,
    ]
    for key, (x, y) in pos.items():
        for dep in spec.by_id[key.step].depends_on:
            for up, (ux, uy) in pos.items():
                if up.step == dep:
                    x1, y1, x2, y2 = ux + NODE_W, uy + NODE_H / 2, x, y + NODE_H / 2
                    mid = (x1 + x2) / 2
                    parts.append(
                        f'<path class="edge" d="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} '
                        f'{x2:.0f},{y2:.0f}"/>'
                    )
    for key, (x, y) in pos.items():
        parts.append(_node(spec, state, key, x, y, now, interactive))
    parts.append("</svg>")
    return "".join(parts)


def _node(
    spec: PipelineSpec, state: RunState, key: StepKey, x: float, y: float, now: float | None, interactive: bool
) -> str:
    s = state.step(key)
    status = s.status.value
    fill, stroke = STATE_COLOURS[status]
    number = spec.by_id[key.step].number
    first, second = wrap_name(f"[{key.context}]" if key.context else key.step)
    sub = status.replace("_", " ")
    if s.status is StepStatus.REUSED:
        sub = f"reused from run {s.produced_by}"
    elif s.duration is not None:
        sub += f" · {dur(s.duration)}"
    ticking = ""
    if s.status is StepStatus.RUNNING and s.started_at is not None:
        shown = dur(max(0.0, (now or s.started_at) - s.started_at)) or "0 ms"
        ticking = f' · <tspan data-tick-start="{s.started_at:.3f}">{esc(shown)}</tspan>'
    dash = ' stroke-dasharray="4 3"' if s.status in (StepStatus.NOT_STARTED, StepStatus.SKIPPED) else ""
    tip = f"{key}: {status}" + (f" — {s.error_type}: {s.error_message}" if s.error_type else "")
    lines = f'<text x="{x + 10}" y="{y + 18}"><tspan font-weight="600">{number}</tspan> {esc(first)}</text>'
    sub_y = y + 36
    if second:
        lines += f'<text x="{x + 10}" y="{y + 34}">{esc(second)}</text>'
        sub_y = y + 52
    return (
        f'<g class="node state-{status}" data-key="{esc(key)}" data-state="{status}"'
        f'{FOCUSABLE if interactive else ""} aria-label="{esc(key)}: {esc(sub)}">'
        f"<title>{esc(tip)}</title>"
        f'<rect x="{x}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="7" fill="{fill}" stroke="{stroke}"{dash}/>'
        f"{lines}"
        f'<text x="{x + 10}" y="{sub_y:.0f}" class="sub">{esc(sub)}{ticking}</text></g>'
    )


# ---------------------------------------------------------------------------------------------
# the timeline

LEFT, PLOT, BAR_H, ROW_GAP, TOP = 250, 700, 18, 8, 26
LABEL_CHARS = 36


def timeline_svg(spec: PipelineSpec, state: RunState, spans: Sequence[AttemptSpan], now: float) -> str:
    """A Gantt chart: one row per key, each attempt a bar (retries side by side), reused keys as ghost
    bars as long as they took in the run that produced them (from this run's start, labelled with that
    run). An attempt that never ended is drawn to where the run stopped; while the run runs it is drawn
    to now, carries `data-tick-start` and the dashboard grows it each second (capped at the plot's end,
    which leaves room for that)."""
    reused = [k for k in run_keys(spec, state) if state.step(k).status is StepStatus.REUSED]
    if not spans and not reused:
        return '<p class="muted">no step was executed in this run</p>'
    live = state.status is RunStatus.RUNNING
    end = stopped_at(state, now)
    t0 = min([s.start for s in spans] + ([state.started.at] if state.started else []))
    ghost_end = max((t0 + (state.step(k).duration or 0.0) for k in reused), default=t0)
    t1 = max([s.end or end for s in spans] + [state.finished_at or t0, ghost_end])
    if live:
        t1 += max(5.0, (t1 - t0) * 0.25)  # room for running bars to grow until the next event redraws
    span = max(t1 - t0, 1e-3)
    scale = PLOT / span
    order = {k: i for i, k in enumerate(run_keys(spec, state))}
    rows = sorted({s.key for s in spans} | set(reused), key=lambda k: (order.get(k, len(order)), str(k)))
    width = LEFT + PLOT + 20
    height = TOP + len(rows) * (BAR_H + ROW_GAP) + 6
    parts = [
        f'<svg id="timeline" class="chart" role="img" aria-label="timeline of every attempt" '
        f'viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" preserveAspectRatio="xMinYMin meet" '
        f'data-t0="{t0:.3f}" data-scale="{scale:.6f}" data-plot-end="{LEFT + PLOT}">'
    ]
    for i in range(6):
        x = LEFT + PLOT * i / 5
        parts.append(
            f'<line class="tick" x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{height}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{TOP - 10}" text-anchor="{"end" if i == 5 else "middle"}" class="sub">'
            f"+{esc(dur(span * i / 5) or '0')}</text>"
        )
    for row, key in enumerate(rows):
        y = TOP + row * (BAR_H + ROW_GAP)
        label = str(key) if len(str(key)) <= LABEL_CHARS else str(key)[: LABEL_CHARS - 1] + "…"
        parts.append(
            f'<text x="{LEFT - 8}" y="{y + 13}" text-anchor="end" class="row-label"><title>{esc(key)}</title>'
            f"{esc(label)}</text>"
        )
        if key in reused:
            parts.append(_ghost(state, key, t0, scale, y))
        for s in (s for s in spans if s.key == key):
            parts.append(_bar(s, t0, scale, y, end, live))
    parts.append("</svg>")
    return "".join(parts)


def _ghost(state: RunState, key: StepKey, t0: float, scale: float, y: float) -> str:
    s = state.step(key)
    took = s.duration or 0.0
    w = max(2.0, took * scale)
    fill, stroke = STATE_COLOURS["reused"]
    text = f"reused from run {s.produced_by}"
    tip = f"{key}: {text} (took {dur(took) or '0 ms'} there)"
    return (
        f'<g class="span ghost state-reused" data-key="{esc(key)}" data-state="reused" '
        f'data-source-run="{s.produced_by}"><title>{esc(tip)}</title>'
        f'<rect x="{LEFT}" y="{y}" width="{w:.1f}" height="{BAR_H}" rx="3" fill="{fill}" stroke="{stroke}" '
        f'stroke-dasharray="4 3" opacity="0.5"/>'
        f'<text x="{LEFT + 4}" y="{y + 13}" class="ghost-label">{esc(text)}</text></g>'
    )


def _bar(s: AttemptSpan, t0: float, scale: float, y: float, end: float, live: bool) -> str:
    fill, stroke = STATE_COLOURS[s.outcome]
    stop = s.end if s.end is not None else end
    x = LEFT + (s.start - t0) * scale
    w = max(2.0, (stop - s.start) * scale)
    took = dur(stop - s.start) or "0 ms"
    if s.end is None and s.outcome == "interrupted":
        tip = f"{s.key} attempt {s.attempt}: never finished, drawn to where the run stopped, {took}"
    else:
        tip = f"{s.key} attempt {s.attempt}: {s.outcome}, {took}"
    tick = f' data-tick-start="{s.start:.3f}"' if live and s.end is None else ""
    unfinished = " unfinished" if s.end is None else ""
    return (
        f'<g class="span state-{s.outcome}{unfinished}" data-key="{esc(s.key)}" data-attempt="{s.attempt}" '
        f'data-state="{s.outcome}" data-end="{stop:.3f}"><title>{esc(tip)}</title>'
        f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{BAR_H}" rx="3" fill="{fill}" stroke="{stroke}"{tick}/></g>'
    )
