"""What the dashboard's pages show, read from the journal and the pipeline definitions. No web code here.

A home can hold runs of several pipelines, so every run is read with the definition its `RunStarted`
recorded (cached by file and modification time). Status is folded from events as everywhere else; an
unfinished run counts as running only while its runner holds the lock, as in `flywheel status`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flywheel import api
from flywheel.errors import FlywheelError, UsageError
from flywheel.events import Event, StepReused
from flywheel.incidents import (
    Incident,
    IncidentStatus,
    LogExcerpt,
    PastFix,
    ReusedStep,
    classify,
    log_excerpt,
    time_saved,
)
from flywheel.journal import Journal
from flywheel.lock import Holder, RunLock
from flywheel.logtail import tail
from flywheel.planner import Action, Mode, PlanRequest, TimeSaved
from flywheel.redaction import Redactor
from flywheel.render import SYMBOL
from flywheel.reports.run_charts import AttemptSpan, attempts
from flywheel.spec import PipelineSpec, Project, StepKey, load_project
from flywheel.state import RunState, RunStatus, StepState, StepStatus, fold
from flywheel.ui.launcher import ResumeJob

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 200


def symbol(status: StepStatus) -> str:
    return SYMBOL[status].strip()


# ---------------------------------------------------------------------------------------------
# definitions and sessions


class Catalog:
    """Pipeline definitions by path, parsed once per version of the file (a page must not parse YAML).

    `default_pipeline` (the `--pipeline` of `flywheel ui`) serves runs whose recorded definition has
    moved, is relative to another folder, or was never recorded, when its name matches theirs.
    """

    def __init__(self, home: Path, default_pipeline: str | None = None) -> None:
        self.home = home
        self.default_pipeline = default_pipeline
        self._cache: dict[str, tuple[float, Project]] = {}

    def project(self, definition: str | None, pipeline: str) -> Project | None:
        """The project of a run: its recorded definition, else `--pipeline`, else a built-in pipeline of that name.

        A recorded definition can be relative to where the run was started; it resolves here only when
        the dashboard was started in the same folder, hence the fallbacks.
        """
        for ref in (definition, self.default_pipeline, pipeline):
            if not ref:
                continue
            path = Path(ref)
            try:
                mtime = path.stat().st_mtime if path.exists() else 0.0
                cached = self._cache.get(ref)
                if cached is None or cached[0] != mtime:
                    cached = (mtime, load_project(ref))
                    self._cache[ref] = cached
            except FlywheelError as exc:
                log.debug("cannot load pipeline %s: %s", ref, exc.message)
                continue
            if cached[1].spec.pipeline == pipeline:
                return cached[1]
        return None

    def session(self, journal: Journal, run_id: int) -> api.Session | None:
        """The session a run belongs to (its pipeline, its environment, this home), or None without a definition."""
        row = journal.run(run_id)
        started = journal.run_started(run_id)
        project = self.project(started.definition if started else None, row.pipeline)
        if project is None:
            return None
        return api.Session(project=project, env_name=row.env, home=self.home)

    def environment_confirms(self, session: api.Session) -> bool:
        """An environment with `confirm: true` (prod) asks for its name to be typed before a resume."""
        env = session.project.config.environments.get(session.env_name)
        return bool(env is not None and env.confirm)

    def redactor(self, token: str | None = None) -> Redactor:
        """Masks the secrets of every project this dashboard has loaded (see `flywheel.redaction`) and its token."""
        return api.projects_redactor([project for _, project in list(self._cache.values())], extra=[token])


class Locks:
    """Lock holders per pipeline and environment, asked once per page."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._seen: dict[tuple[str, str], Holder | None] = {}

    def holder(self, pipeline: str, env: str) -> Holder | None:
        if (pipeline, env) not in self._seen:
            self._seen[(pipeline, env)] = RunLock(self.home, pipeline, env).holder()
        return self._seen[(pipeline, env)]

    def settle(self, state: RunState, pipeline: str, env: str) -> RunState:
        if state.status is not RunStatus.UNFINISHED:
            return state
        return api.settle(state, self.holder(pipeline, env))


def load_run(journal: Journal, home: Path, run_id: int) -> tuple[RunState, list[Event]]:
    row = journal.run(run_id)
    events = journal.events(run_id)
    return Locks(home).settle(fold(run_id, events), row.pipeline, row.env), events


# ---------------------------------------------------------------------------------------------
# the run list


@dataclass(frozen=True)
class RunSummary:
    run_id: int
    pipeline: str
    env: str
    status: RunStatus
    started_at: float | None
    duration: float | None
    user: str
    parent_run: int | None
    request: str
    failed: tuple[str, ...]
    source: str
    recovered_by: int | None = None  # a later run of its lineage that succeeded (`api.recovered_by`)
    children: tuple[int, ...] = ()  # the runs that continue this one (resumes)
    cells: Mapping[StepKey, api.Cell] = field(default_factory=dict)
    overdue: bool = False

    @property
    def open(self) -> bool:
        """Work is left and no later run did it: what the on-call engineer still has to act on."""
        return api.open_to_resume(self.status, self.recovered_by)

    @property
    def needs_attention(self) -> bool:
        return api.needs_attention(self.status, self.recovered_by, overdue=self.overdue)


@dataclass(frozen=True)
class RunList:
    runs: tuple[RunSummary, ...]
    pipelines: tuple[str, ...]
    envs: tuple[str, ...]
    statuses: tuple[str, ...] = tuple(s.value for s in RunStatus if s is not RunStatus.UNFINISHED)
    truncated: bool = False
    columns: tuple[StepKey, ...] = ()  # the grid's columns: every key of the runs shown, in operator order


_MAY_SETTLE_AS = {RunStatus.RUNNING, RunStatus.INTERRUPTED}
_ATTENTION = (RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.PARTIAL, RunStatus.UNFINISHED)


def list_runs(
    journal: Journal,
    home: Path,
    *,
    pipeline: str | None = None,
    env: str | None = None,
    status: str | None = None,
    attention: bool = False,
    limit: int = 100,
    before: int | None = None,
    catalog: Catalog | None = None,
) -> RunList:
    """Newest runs first (older than `before`, for the next page), filtered, each with its grid cells.

    Read from the run index (`api.RunIndex`), never by folding every run: a page costs a few indexed
    queries whatever the size of the journal. A run the index holds as unfinished is settled against
    its lock here (running, or interrupted when its runner is gone) before the status filter applies.
    """
    wanted: tuple[RunStatus, ...] = ()
    if status:
        chosen = RunStatus(status) if status in {s.value for s in RunStatus} else None
        if chosen is None:
            raise UsageError(f"unknown status {status!r}", fix=f"use one of: {', '.join(RunList.statuses)}")
        wanted = (chosen, RunStatus.UNFINISHED) if chosen in _MAY_SETTLE_AS else (chosen,)
    if attention:
        wanted = tuple(s for s in _ATTENTION if not wanted or s in wanted)
    locks = Locks(home)
    out: list[RunSummary] = []
    with api.RunIndex(home, journal) as index:
        index.refresh()
        pipelines, envs = index.names()
        cursor = before
        while len(out) <= limit:
            # attention keeps few of many candidates: judge them on the indexed columns, read only those kept
            heads = index.heads(
                pipeline=pipeline, env=env, statuses=wanted, before=cursor, limit=2000 if attention else limit + 1
            )
            if not heads:
                break
            cursor = heads[-1].run_id
            lineage = index.lineage(after=cursor - 1)
            recovered = api.recovered_among(
                [h.run_id for h in heads if h.status.resumable or h.status is RunStatus.UNFINISHED],
                lineage,
                lambda ids: {r for r, st in index.statuses(ids).items() if st is RunStatus.SUCCEEDED},
            )
            kept = []
            for head in heads:
                settled = head.status
                if settled is RunStatus.UNFINISHED:
                    settled = locks.settle(RunState(head.run_id, None, settled), head.pipeline, head.env).status
                if status and settled.value != status:
                    continue
                running = settled is RunStatus.RUNNING  # overdue or not: judged on its digest below
                if attention and not running and not api.needs_attention(settled, recovered.get(head.run_id)):
                    continue
                kept.append(head.run_id)
                if len(out) + len(kept) > limit:
                    break
            children: dict[int, list[int]] = {}
            for child, parent in sorted(lineage.items()):
                children.setdefault(parent, []).append(child)
            digests = index.digests_by_id(kept)
            for run_id in kept:
                digest = digests[run_id]
                summary = _summary(digest, locks, recovered.get(run_id), tuple(children.get(run_id, ())))
                if summary.status is RunStatus.RUNNING:
                    summary = replace(summary, overdue=index.overdue(digest))
                if attention and not summary.needs_attention:
                    continue
                out.append(summary)
    truncated = len(out) > limit
    shown = tuple(out[:limit])
    return RunList(
        runs=shown,
        pipelines=pipelines,
        envs=envs,
        truncated=truncated,
        columns=_grid_columns(shown, catalog),
    )


def _summary(digest: api.RunDigest, locks: Locks, recovered: int | None, children: tuple[int, ...]) -> RunSummary:
    st = digest.facts.started
    cells = {c.key: c for c in digest.cells}
    status = digest.status
    if status is RunStatus.UNFINISHED:
        steps = {k: StepState(k, status=c.status) for k, c in cells.items()}
        settled = locks.settle(RunState(digest.run_id, st, status, steps=steps), digest.pipeline, digest.env)
        status = settled.status
        cells = {k: replace(c, status=settled.step(k).status) for k, c in cells.items()}
    return RunSummary(
        run_id=digest.run_id,
        pipeline=digest.pipeline,
        env=digest.env,
        status=status,
        started_at=digest.started_at,
        duration=digest.duration,
        user=f"{st.user}@{st.host}" if st and st.user else "",
        parent_run=digest.parent_run,
        request=api.request_flags(st.request) if st else "",
        failed=tuple(str(k) for k in digest.failed),
        source=st.source if st else "",
        recovered_by=recovered if status.resumable else None,
        children=children,
        cells=cells,
    )


def _grid_columns(runs: Sequence[RunSummary], catalog: Catalog | None) -> tuple[StepKey, ...]:
    """Every key of these runs in operator order: by the pipeline's step order when its definition is
    known (contexts in the order they were resolved), else in the order the runs recorded them."""
    seen: dict[StepKey, None] = {}
    for run in reversed(runs):
        seen.update(dict.fromkeys(run.cells))
    order: dict[str, int] = {}
    if catalog is not None:
        for name in dict.fromkeys(r.pipeline for r in runs):
            project = catalog.project(None, name)
            if project is not None:
                for spec_step in project.spec.steps:
                    order.setdefault(spec_step.id, len(order))
    first = {key: i for i, key in enumerate(seen)}
    return tuple(sorted(seen, key=lambda k: (order.get(k.step, len(order)), first[k])))


# ---------------------------------------------------------------------------------------------
# one run


@dataclass(frozen=True)
class StepRow:
    number: int
    key: str
    status: str
    symbol: str
    attempts: int
    started_at: float | None
    duration: float | None
    detail: str


def step_detail(s: StepState) -> str:
    if s.status is StepStatus.FAILED:
        return f"{s.error_type}: {s.error_message}"
    if s.status is StepStatus.REUSED:
        return f"reused from run {s.produced_by}" + (" (stale, kept)" if s.stale_kept else "")
    if s.status is StepStatus.MARKED:
        return f"marked succeeded: {s.note}"
    if s.status is StepStatus.INTERRUPTED:
        return "interrupted (started, never finished)"
    if s.status is StepStatus.RUNNING:
        return f"running (attempt {s.attempts})"
    if s.status is StepStatus.NOT_STARTED:
        return "not executed"
    return s.reason or ""


def step_rows(spec: PipelineSpec, state: RunState) -> list[StepRow]:
    """One row per step and context, in the order the pipeline runs them."""
    keys = [
        key
        for step in spec.topological_steps
        for key in ([StepKey(step.id, c) for c in state.contexts.get(step.id, ())] or list(step.keys))
    ]
    rows = []
    for key in keys:
        s = state.step(key)
        rows.append(
            StepRow(
                number=spec.by_id[key.step].number,
                key=str(key),
                status=s.status.value,
                symbol=symbol(s.status),
                attempts=s.attempts,
                started_at=s.started_at,
                duration=s.duration,
                detail=step_detail(s)[:400],
            )
        )
    return rows


@dataclass(frozen=True)
class FailureView:
    """A failed step as the operator needs it: the error, the classified cause, hints, the log lines."""

    key: str
    number: int
    error_type: str
    error_message: str
    attempts: int
    duration: float | None
    cause: str
    hints: tuple[str, ...]
    excerpt: LogExcerpt | None
    log_name: str | None


@dataclass(frozen=True)
class LogView:
    name: str
    key: str
    attempt: int
    outcome: str
    lines: tuple[str, ...]
    cut: bool


@dataclass(frozen=True)
class ResumePreview:
    """The dry-run plan of resuming this run: exactly what the Resume button would start."""

    decisions: tuple[dict[str, Any], ...] = ()
    to_run: int = 0
    to_reuse: int = 0
    saved: TimeSaved | None = None
    warnings: tuple[str, ...] = ()
    nothing_changed: bool = False  # a failed step would rerun as it failed: Resume is not the first choice
    error: str | None = None
    fix: str | None = None


@dataclass(frozen=True)
class RunPage:
    state: RunState
    pipeline: str
    env: str
    session: api.Session | None
    steps: tuple[StepRow, ...]
    failures: tuple[FailureView, ...]
    logs: tuple[LogView, ...]
    children: tuple[tuple[int, str], ...]
    reused: tuple[ReusedStep, ...]
    saved: TimeSaved | None
    busy: Holder | None
    spans: tuple[AttemptSpan, ...] = field(default=())
    recovered_by: int | None = None  # `api.recovered_by`: a later run in its lineage that succeeded
    past_fixes: tuple[PastFix, ...] = ()  # fixes recorded on earlier incidents with the same error

    @property
    def resumable(self) -> bool:
        return self.session is not None and api.open_to_resume(self.state.status, self.recovered_by)

    @property
    def may_have_incident(self) -> bool:
        """Only a failed run, or one that continues another, opens, joins or closes an incident."""
        started = self.state.started
        return self.state.status.resumable or bool(started and started.parent_run)

    @property
    def live(self) -> bool:
        return self.state.status is RunStatus.RUNNING


def read_tail(path: str, lines: int = LOG_TAIL_LINES) -> tuple[list[str], bool, int]:
    """The last `lines` lines of a log, whether it was cut, and the byte offset the tail ends at."""
    end = tail(path, lines)
    return end.lines, end.cut, end.size


def log_views(spans: Sequence[AttemptSpan], redact: Redactor) -> list[LogView]:
    out = []
    for s in spans:
        if not s.log_path:
            continue
        lines, cut, _ = read_tail(s.log_path)
        out.append(
            LogView(
                name=Path(s.log_path).name,
                key=str(s.key),
                attempt=s.attempt,
                outcome=s.outcome,
                lines=tuple(redact(line) for line in lines),
                cut=cut,
            )
        )
    return out


def log_span_of(events: Sequence[Event], state: RunState, name: str) -> AttemptSpan | None:
    """The attempt whose journaled log file is called `name`: only those files are ever served or viewed."""
    for span in attempts(events, state):
        if span.log_path and Path(span.log_path).name == name:
            return span
    return None


def failures(spec: PipelineSpec, state: RunState, spans: Sequence[AttemptSpan]) -> list[FailureView]:
    """The failed steps with their classified cause and log lines. Fixes recorded for the same error come
    with the incident (`incident_of`), which reads every run of the pipeline and is loaded after the page."""
    logs = {(s.key, s.attempt): s.log_path for s in spans}
    out = []
    for key in state.failed_keys:
        s = state.step(key)
        cause, hints = classify(spec.by_id.get(key.step), s.error_type or "", s.error_message or "")
        path = logs.get((key, s.attempts))
        out.append(
            FailureView(
                key=str(key),
                number=spec.by_id[key.step].number if key.step in spec.by_id else 0,
                error_type=s.error_type or "",
                error_message=s.error_message or "",
                attempts=s.attempts,
                duration=s.duration,
                cause=cause.value,
                hints=hints,
                excerpt=log_excerpt(path, s.error_type or "", s.error_message or "") if path else None,
                log_name=Path(path).name if path else None,
            )
        )
    return out


def resume_preview(session: api.Session, run_id: int) -> ResumePreview:
    """`flywheel resume RUN --dry-run`, for the page. A refused plan is shown, not raised."""
    try:
        planned = api.dry_run(session, PlanRequest(mode=Mode.RESUME, source_run=run_id))
    except FlywheelError as exc:
        return ResumePreview(error=exc.message, fix=exc.fix)
    return ResumePreview(
        decisions=tuple(api.planned_summary(planned)["decisions"]),
        to_run=len(planned.plan.keys(Action.RUN)),
        to_reuse=len(planned.plan.keys(Action.REUSE)),
        saved=planned.time_saved,
        warnings=planned.warnings,
        nothing_changed=bool(planned.unchanged_failures),
    )


def children(journal: Journal, pipeline: str, env: str, run_id: int, home: Path) -> list[tuple[int, str]]:
    """Later runs that continue this one directly (its resumes), with their status."""
    direct = sorted(child for child, parent in journal.lineage(after=run_id).items() if parent == run_id)
    events = journal.events_of_runs(direct)
    locks = Locks(home)
    return [(child, locks.settle(fold(child, events[child]), pipeline, env).status.value) for child in direct]


def all_incidents(journal: Journal, home: Path, spec: PipelineSpec | None = None) -> list[Incident]:
    """Every incident in this home, oldest first, from the run index (no run is folded twice)."""
    with api.RunIndex(home, journal) as index:
        index.refresh()
        return index.incidents(spec)


def incident_of(journal: Journal, home: Path, spec: PipelineSpec | None, state: RunState) -> Incident | None:
    """The incident a run opened, joined or closed. Only failed runs and resumes can have one."""
    started = state.started
    if not state.status.resumable and not (started and started.parent_run):
        return None
    run_id = state.run_id
    found = all_incidents(journal, home, spec)
    return next((i for i in found if run_id in i.runs or i.closed_by == run_id), None)


def run_page(catalog: Catalog, journal: Journal, run_id: int, *, redact: Redactor) -> RunPage:
    """Everything the run page shows but the resume plan (`resume_view`, loaded after the page)."""
    row = journal.run(run_id)
    state, events = load_run(journal, catalog.home, run_id)
    session = catalog.session(journal, run_id)
    spec = session.spec if session else None
    spans = attempts(events, state)
    reused = tuple(
        ReusedStep(key=e.key, source_run=e.source_run, duration=e.duration, dpu_hours=e.dpu_hours)
        for e in events
        if isinstance(e, StepReused)
    )
    busy = Locks(catalog.home).holder(row.pipeline, row.env)
    continued = tuple(children(journal, row.pipeline, row.env, run_id, catalog.home))
    return RunPage(
        state=state,
        pipeline=row.pipeline,
        env=row.env,
        session=session,
        steps=tuple(step_rows(spec, state)) if spec else (),
        failures=tuple(failures(spec, state, spans)) if spec else (),
        logs=tuple(log_views(spans, redact)),
        children=continued,
        reused=reused,
        saved=time_saved(spec, reused) if reused else None,
        busy=busy,
        spans=tuple(spans),
        recovered_by=api.recovered_by(journal, run_id),
        past_fixes=past_fixes_for(journal, catalog.home, spec, state),
    )


def past_fixes_for(journal: Journal, home: Path, spec: PipelineSpec | None, state: RunState) -> tuple[PastFix, ...]:
    """What was recorded as the fix, last time, for the errors this run failed with (newest first)."""
    if not state.failed_keys:
        return ()
    found = incident_of(journal, home, spec, state)
    return found.past_fixes if found is not None else ()


@dataclass(frozen=True)
class ResumeView:
    """The Resume section of a run: whether it can resume, the plan, and what confirming takes."""

    run_id: int
    pipeline: str
    env: str
    status: str
    resumable: bool
    recovered_by: int | None
    busy: Holder | None
    confirm_env: bool
    preview: ResumePreview | None
    active_job: ResumeJob | None = None


def resume_view(catalog: Catalog, journal: Journal, run_id: int) -> ResumeView:
    """Plan the resume of a run (a dry run: it verifies the outputs it would reuse, so it takes a moment)."""
    row = journal.run(run_id)
    state, _ = load_run(journal, catalog.home, run_id)
    session = catalog.session(journal, run_id)
    recovered = api.recovered_by(journal, run_id)
    busy = Locks(catalog.home).holder(row.pipeline, row.env)
    resumable = session is not None and api.open_to_resume(state.status, recovered)
    return ResumeView(
        run_id=run_id,
        pipeline=row.pipeline,
        env=row.env,
        status=state.status.value,
        resumable=resumable,
        recovered_by=recovered,
        busy=busy,
        confirm_env=catalog.environment_confirms(session) if session else False,
        preview=resume_preview(session, run_id) if resumable and session is not None and busy is None else None,
    )


# ---------------------------------------------------------------------------------------------
# incidents


@dataclass(frozen=True)
class IncidentList:
    incidents: tuple[Incident, ...]
    pipelines: tuple[str, ...]
    envs: tuple[str, ...]
    statuses: tuple[str, ...] = tuple(s.value for s in IncidentStatus)


def list_incidents(
    journal: Journal,
    home: Path,
    *,
    pipeline: str | None = None,
    env: str | None = None,
    status: str | None = None,
) -> IncidentList:
    """Every incident of every pipeline in this home, newest first, filtered."""
    found = all_incidents(journal, home)
    chosen = [
        i
        for i in reversed(found)
        if (pipeline is None or i.pipeline == pipeline)
        and (env is None or i.env == env)
        and (status is None or i.status.value == status)
    ]
    return IncidentList(
        incidents=tuple(chosen),
        pipelines=tuple(sorted({i.pipeline for i in found})),
        envs=tuple(sorted({i.env for i in found})),
    )


def excerpts(incident: Incident) -> list[LogExcerpt | None]:
    return [log_excerpt(f.log_path, f.error_type, f.error_message) for f in incident.failures]
