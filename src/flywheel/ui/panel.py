"""The side panel of one `step[context]` of a run: what the graph's node opens.

Read from the same fold as the page (state, attempts), so the panel and the node cannot disagree; the
log tail goes through the dashboard's redactor, and the rerun command comes from the application layer
(`api.rerun_command`), the one place it is spelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flywheel import api
from flywheel.errors import NotFound
from flywheel.events import Event, StepAttached
from flywheel.journal import Journal
from flywheel.redaction import Redactor
from flywheel.reports.run_charts import attempts, run_keys, stopped_at
from flywheel.spec import StepKey
from flywheel.state import StepStatus
from flywheel.ui.views import Catalog, load_run, read_tail, step_detail

PANEL_TAIL_LINES = 40


@dataclass(frozen=True)
class AttemptRow:
    attempt: int
    started_at: float
    duration: float | None
    outcome: str
    external_id: str | None  # the Glue JobRunId; local subprocesses journal none
    pid: int | None  # a running local attempt's process group, read live from /proc (gone once it ends)
    error: str | None
    log_name: str | None


@dataclass(frozen=True)
class StepPanel:
    run_id: int
    key: str
    number: int
    title: str
    status: str
    detail: str
    duration: float | None
    produced_by: int | None
    attempts: tuple[AttemptRow, ...]
    log_name: str | None
    log_lines: tuple[str, ...]
    log_cut: bool
    rerun: str | None
    live: bool
    tick_start: float | None  # the running attempt's start, for the ticking elapsed time


def _attached(events: list[Event]) -> dict[tuple[StepKey, int], str]:
    return {(e.key, e.attempt): e.external_id for e in events if isinstance(e, StepAttached)}


def _running_pid(home: Path, run_id: int, key: StepKey) -> int | None:
    """The process group of a running local step: the journal records no pid (a pid means nothing once
    the process ends, and the runner finds its steps by their log files), so it is read live."""
    groups = sorted({p.group for p in api.live_step_processes(home, run_id) if p.key == str(key)})
    return groups[0] if groups else None


def step_panel(catalog: Catalog, journal: Journal, run_id: int, key_text: str, *, redact: Redactor) -> StepPanel:
    """The panel of one key of a run; `NotFound` names the keys the run has when `key_text` is not one."""
    state, events = load_run(journal, catalog.home, run_id)
    session = catalog.session(journal, run_id)
    if session is None:
        raise NotFound(
            f"the definition of run {run_id}'s pipeline cannot be found",
            fix="start the dashboard with --pipeline PATH",
        )
    spec = session.spec
    known = run_keys(spec, state)
    key = StepKey.parse(key_text)
    if key not in known:
        raise NotFound(
            f"run {run_id} has no step {key_text!r}",
            fix=f"pick one of: {', '.join(str(k) for k in known)}",
        )
    s = state.step(key)
    ids = _attached(events)
    end = stopped_at(state, 0.0)
    spans = [a for a in attempts(events, state) if a.key == key]
    pid = _running_pid(catalog.home, run_id, key) if any(a.outcome == "running" for a in spans) else None
    rows = tuple(
        AttemptRow(
            attempt=a.attempt,
            started_at=a.start,
            duration=(a.end - a.start) if a.end is not None else (None if a.outcome == "running" else end - a.start),
            outcome=a.outcome,
            external_id=ids.get((key, a.attempt)),
            pid=pid if a.outcome == "running" else None,
            error=redact(a.error) if a.error else None,
            log_name=Path(a.log_path).name if a.log_path else None,
        )
        for a in spans
    )
    last = spans[-1] if spans else None
    lines: list[str] = []
    cut = False
    if last is not None and last.log_path and Path(last.log_path).exists():
        lines, cut, _ = read_tail(last.log_path, PANEL_TAIL_LINES)
    running = next((a for a in spans if a.outcome == "running"), None)
    return StepPanel(
        run_id=run_id,
        key=str(key),
        number=spec.by_id[key.step].number,
        title=spec.by_id[key.step].title,
        status=s.status.value,
        detail=redact(step_detail(s)),
        duration=s.duration,
        produced_by=s.produced_by if s.status is StepStatus.REUSED else None,
        attempts=rows,
        log_name=Path(last.log_path).name if last is not None and last.log_path else None,
        log_lines=tuple(redact(line) for line in lines),
        log_cut=cut,
        rerun=api.rerun_command(session, key),
        live=running is not None,
        tick_start=running.start if running is not None else None,
    )
