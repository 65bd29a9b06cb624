"""The library API: run, resume, plan, status, runs, logs, mark. The CLI and the dashboard call these.

Functions here gather facts (journal reads, lock state, output checks), call the pure planner, and
hand the plan to the runner. They return dataclasses; they never print.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from flywheel.errors import NotFound, UsageError
from flywheel.events import RunOutcome, RunStarted, StepMarked
from flywheel.executors import create_executor
from flywheel.executors.base import Executor
from flywheel.journal import Journal, open_journal
from flywheel.lock import Lock, RunLock, current_identity, holds_run
from flywheel.planner import (
    Action,
    Mode,
    Plan,
    PlanInputs,
    PlanRequest,
    Provenance,
    TimeSaved,
    check_request,
    parse_selectors,
    plan,
)
from flywheel.runner import Fingerprinter, Observer, Overrides, Runner
from flywheel.spec import EnvironmentSpec, Project, StepKey, load_project
from flywheel.state import RunState, RunStatus, as_crashed, as_running, fold

DEFAULT_HOME = ".flywheel"


def resolve_home(home: str | Path | None = None) -> Path:
    """`--home` beats `$FLYWHEEL_HOME` beats `./.flywheel`."""
    chosen = home or os.environ.get("FLYWHEEL_HOME") or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class Session:
    """A project, an environment and a home: everything one command works on."""

    project: Project
    env_name: str
    home: Path

    @property
    def spec(self):  # type: ignore[no-untyped-def]
        return self.project.spec

    @property
    def pipeline(self) -> str:
        return self.project.spec.pipeline

    def journal(self) -> Journal:
        return open_journal(self.home)

    def lock(self) -> Lock:
        """A kernel lock in the home, or for AWS environments with a lock table one in DynamoDB, so
        that operators on different machines cannot run the same pipeline and environment at once."""
        env = self.project.config.environment(self.env_name)
        if env.executor == "glue" and env.aws is not None and env.aws.lock_table:
            from flywheel.aws.lock import AwsRunLock

            return AwsRunLock(env.aws, self.pipeline, self.env_name)
        return RunLock(self.home, self.pipeline, self.env_name)


def open_session(
    pipeline: str | None = None,
    env: str | None = None,
    home: str | Path | None = None,
    *,
    run_id: int | None = None,
) -> Session:
    """Open what a command works on. Given a run id, the run itself says its pipeline and environment."""
    if run_id is not None and pipeline is None:
        resolved_home = resolve_home(home)
        with open_journal(resolved_home) as journal:
            journal.run(run_id)
            started = journal.run_started(run_id)
        if started is not None and started.definition and Path(started.definition).exists():
            pipeline = started.definition
        if started is not None and env is None:
            env = started.env
    project = load_project(pipeline)
    env_name = env or os.environ.get("FLYWHEEL_ENV") or project.config.default_env
    project.config.environment(env_name)  # unknown env: clear error now
    return Session(project=project, env_name=env_name, home=resolve_home(home))


# ---------------------------------------------------------------------------------------------
# reading the journal


def load_state(journal: Journal, run_id: int, *, lock: Lock | None = None) -> RunState:
    """Fold a run; an unfinished run is running while its lock is held, else it was interrupted."""
    state = fold(run_id, journal.events(run_id))
    if state.status is RunStatus.UNFINISHED:
        running = lock is not None and holds_run(lock, run_id)
        return as_running(state) if running else as_crashed(state)
    return state


def latest_successes(journal: Journal, pipeline: str, env: str) -> dict[StepKey, Provenance]:
    out: dict[StepKey, Provenance] = {}
    for (step, context), (recorded_in, event) in journal.latest_successes(pipeline, env).items():
        produced_by = getattr(event, "source_run", None) or recorded_in
        out[StepKey(step, context)] = Provenance(
            produced_by=produced_by,
            recorded_in=recorded_in,
            duration=float(getattr(event, "duration", 0.0) or 0.0),
            outputs=tuple(getattr(event, "outputs", ()) or ()),
            fingerprint=getattr(event, "fingerprint", None),
            dpu_hours=getattr(event, "dpu_hours", None),
        )
    return out


def recovered_by(journal: Journal, run_id: int) -> int | None:
    """The first later run in `run_id`'s lineage (its resume, a resume of that, ...) that succeeded.

    The one rule behind "already recovered": a second recovery would redo that run's work, so the CLI
    needs `--again` for it and the dashboard refuses it.
    """
    for descendant, _ in journal.descendants(run_id):
        if fold(descendant, journal.events(descendant)).status is RunStatus.SUCCEEDED:
            return descendant
    return None


def find_resumable(session: Session, journal: Journal) -> RunState:
    """The latest failed, interrupted or partial run of this pipeline and environment not yet recovered."""
    lock = session.lock()
    rows = journal.runs(session.pipeline, session.env_name, limit=50)
    for row in rows:
        state = load_state(journal, row.run_id, lock=lock)
        if state.status.resumable and recovered_by(journal, row.run_id) is None:
            return state
        if state.status is RunStatus.SUCCEEDED and row is rows[0]:
            raise UsageError(
                f"nothing to resume: the latest run of {session.pipeline} in {session.env_name} "
                f"(run {row.run_id}) succeeded",
                fix="start a new run with `flywheel run`, or name a run to resume",
            )
        if state.status is RunStatus.RUNNING:
            raise UsageError(
                f"run {row.run_id} of {session.pipeline} in {session.env_name} is still running",
                fix="watch it with `flywheel status`; resume it if it fails",
            )
    raise NotFound(
        f"no failed or interrupted run of {session.pipeline} in {session.env_name} to resume",
        fix="start one with `flywheel run`",
    )


# ---------------------------------------------------------------------------------------------
# planning


@dataclass(frozen=True)
class PlannedRun:
    """A plan with the context a person needs to trust it."""

    session: Session
    plan: Plan
    source: RunState | None
    time_saved: TimeSaved
    warnings: tuple[str, ...] = ()


PlanInputsHook = Callable[[Session, Journal, PlanRequest, RunState | None], PlanInputs]


def gather_inputs(session: Session, journal: Journal, request: PlanRequest, source: RunState | None) -> PlanInputs:
    """The default facts: recorded successes, verified outputs, staleness (`flywheel.recovery.gather`)."""
    from flywheel.recovery import gather

    return gather(session, journal, request, source)


def prepare(
    session: Session,
    journal: Journal,
    request: PlanRequest,
    *,
    gather: PlanInputsHook = gather_inputs,
) -> PlannedRun:
    """Find the source run, gather facts and plan. The same plan a dry run prints is what runs."""
    check_request(session.spec, request)
    source: RunState | None = None
    if request.source_run is not None:
        row = journal.run(request.source_run)
        if (row.pipeline, row.env) != (session.pipeline, session.env_name):
            raise UsageError(
                f"run {row.run_id} is {row.pipeline} in {row.env}, not {session.pipeline} in {session.env_name}",
                fix=f"add --env {row.env} (and the pipeline) or name another run",
            )
        source = load_state(journal, request.source_run, lock=session.lock())
        if request.mode is Mode.RESUME and not request.again:
            recovered = recovered_by(journal, source.run_id)
            if recovered is not None:
                raise UsageError(
                    f"run {source.run_id} was already recovered by run {recovered}; resuming it again would "
                    f"redo that run's work",
                    fix=f"see `flywheel status {recovered}`; to recover run {source.run_id} again anyway, add --again",
                )
    elif request.mode is Mode.RESUME:
        source = find_resumable(session, journal)
        request = replace(request, source_run=source.run_id)
    elif request.from_step or request.only:
        # Steps not selected are taken from the latest run; with no run yet, the selection must stand
        # on its own (the planner refuses a selected step whose inputs nothing provides).
        rows = journal.runs(session.pipeline, session.env_name, limit=1)
        if rows:
            source = load_state(journal, rows[0].run_id, lock=session.lock())
            request = replace(request, source_run=source.run_id)
    if source is not None and source.status is RunStatus.RUNNING:
        raise UsageError(f"run {source.run_id} is still running", fix="wait for it, or stop it first")
    inputs = gather(session, journal, request, source)
    decided = plan(session.spec, request, inputs)
    return PlannedRun(
        session=session,
        plan=decided,
        source=source,
        time_saved=decided.time_saved(session.spec),
        warnings=inputs.warnings,
    )


# ---------------------------------------------------------------------------------------------
# running


def code_version(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def flywheel_version() -> str:
    from flywheel import __version__

    return __version__


@dataclass(frozen=True)
class RunResult:
    run_id: int
    outcome: RunOutcome | None  # None: interrupted
    state: RunState
    planned: PlannedRun


@contextmanager
def _stop_on_signals(cancel: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM ask the runner to stop cleanly (only possible from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        cancel.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass
class RunOptions:
    observers: Sequence[Observer] = ()
    executor: Executor | None = None
    fingerprinter: Fingerprinter | None = None
    overrides: Overrides = field(default_factory=Overrides)
    max_parallel: int | None = None
    cancel: threading.Event | None = None
    gather: PlanInputsHook = gather_inputs
    on_planned: Callable[[PlannedRun, int], None] | None = None
    confirm: Callable[[PlannedRun], None] | None = None  # sees the plan before anything is journaled; raises to stop


def execute(session: Session, request: PlanRequest, options: RunOptions | None = None) -> RunResult:
    """Lock, plan, journal and run. The lock is taken before planning so the plan cannot go stale."""
    options = options or RunOptions()
    env = session.project.config.environment(session.env_name)
    executor = options.executor
    if executor is None and env.executor == "subprocess":  # other executors check their backend when made
        executor = create_executor(env.executor, env=env)
        getattr(executor, "start", lambda: None)()
    try:
        return _execute(session, request, options, env, executor)
    finally:
        if executor is not None and executor is not options.executor:
            getattr(executor, "close", lambda: None)()


def _execute(
    session: Session, request: PlanRequest, options: RunOptions, env: EnvironmentSpec, executor: Executor | None
) -> RunResult:
    with session.journal() as journal, session.lock().acquire(command=request.mode.value) as lock:
        planned = prepare(session, journal, request, gather=options.gather)
        if options.confirm is not None:
            options.confirm(planned)
        run_id = journal.new_run(session.pipeline, session.env_name)
        lock.update(run_id=run_id, command=request.mode.value)
        user, host = current_identity()
        source = planned.source
        started = RunStarted(
            run_id=run_id,
            at=time.time(),
            pipeline=session.pipeline,
            env=session.env_name,
            parameters=dict(session.spec.params),
            parent_run=source.run_id if source else None,
            root_run=(source.started.root_run or source.run_id) if source and source.started else None,
            request=planned.plan.request.to_dict(),
            user=user,
            host=host,
            flywheel_version=flywheel_version(),
            code_version=code_version(session.project.root),
            definition=session.spec.source_path,
        )
        if options.on_planned is not None:
            options.on_planned(planned, run_id)
        runner = Runner(
            spec=session.spec,
            env_name=session.env_name,
            env=env,
            home=session.home,
            journal=journal,
            executor=executor or create_executor(env.executor, spec=session.spec, env_name=session.env_name, env=env),
            observers=options.observers,
            fingerprinter=options.fingerprinter or _default_fingerprinter(session),
            overrides=options.overrides,
            max_parallel=options.max_parallel,
            cancel=options.cancel or threading.Event(),
        )
        with _stop_on_signals(runner.cancel):
            outcome = runner.execute(planned.plan, started)
        state = fold(run_id, journal.events(run_id))
    return RunResult(run_id=run_id, outcome=outcome, state=state, planned=planned)


def _default_fingerprinter(session: Session) -> Fingerprinter:
    from flywheel.recovery import default_fingerprinter

    return default_fingerprinter(session)


def dry_run(session: Session, request: PlanRequest, gather: PlanInputsHook = gather_inputs) -> PlannedRun:
    with session.journal() as journal:
        return prepare(session, journal, request, gather=gather)


# ---------------------------------------------------------------------------------------------
# status, history, logs


@dataclass(frozen=True)
class RunView:
    session: Session
    state: RunState
    recovered_by: int | None = None

    @property
    def resume_command(self) -> str | None:
        """Offered only where work is left and no later run already did it."""
        if not self.state.status.resumable or self.recovered_by is not None:
            return None
        return f"flywheel resume {self.state.run_id}"


def status(session: Session, run_id: int | None = None) -> RunView:
    with session.journal() as journal:
        if run_id is None:
            rows = journal.runs(session.pipeline, session.env_name, limit=1)
            if not rows:
                raise NotFound(
                    f"no runs of {session.pipeline} in {session.env_name} yet",
                    fix="start one with `flywheel run`",
                )
            run_id = rows[0].run_id
        row = journal.run(run_id)
        if (row.pipeline, row.env) != (session.pipeline, session.env_name):
            session = replace(session, env_name=row.env)
        state = load_state(journal, run_id, lock=session.lock())
        return RunView(session=session, state=state, recovered_by=recovered_by(journal, run_id))


def list_runs(session: Session, *, limit: int = 20, all_envs: bool = False) -> list[RunState]:
    with session.journal() as journal:
        rows = journal.runs(session.pipeline, None if all_envs else session.env_name, limit=limit)
        events = journal.events_of_runs([r.run_id for r in rows])
        lock = session.lock()
        out = []
        for row in rows:
            state = fold(row.run_id, events[row.run_id])
            if state.status is RunStatus.UNFINISHED:
                state = as_running(state) if holds_run(lock, row.run_id) else as_crashed(state)
            out.append(state)
        return out


def log_files(session: Session, run_id: int, step: str | None = None) -> list[Path]:
    """The per-attempt log files of a run (optionally of one step or `step[context]`), in order.

    The step is read like every other selection (`planner.parse_selectors`), so an unknown step or
    context is a usage error naming the valid ones, never an empty answer.
    """
    with session.journal() as journal:
        journal.run(run_id)
    folder = session.home / "logs" / f"run-{run_id}"
    files = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime) if folder.exists() else []
    if step is None:
        return files
    keys = parse_selectors(session.spec, [step], flag="--step")
    return [f for f in files if any(f.name.startswith(f"{key}.") for key in keys)]


@dataclass(frozen=True)
class MarkResult:
    """What `mark` recorded, what was already done, and whether a resume has work left."""

    run_id: int
    marked: tuple[StepMarked, ...]
    already_done: tuple[StepKey, ...]
    missing: Mapping[StepKey, tuple[str, ...]]  # declared outputs absent when marked (only with force)
    resume_command: str | None


def mark_succeeded(
    session: Session,
    run_id: int,
    key_text: str,
    note: str,
    outputs: Sequence[Mapping[str, Any]] = (),
    *,
    force: bool = False,
) -> MarkResult:
    """Record a fix made outside flywheel so that a resume continues past the step.

    A step with contexts names one (`3[addressable_ids]`) or, by its number or id alone, all of them.
    The declared outputs are fingerprinted as the operator left them: when one is missing the mark is
    refused (a resume would reuse outputs that are not there and the next step would fail on them)
    unless `force`; a later resume verifies marked outputs like any other and reruns the step when
    they are still missing.
    """
    keys = parse_selectors(session.spec, [key_text], flag="STEP")
    if not note.strip():
        raise UsageError("a mark needs --note saying what was fixed", fix='add --note "what you did"')
    user, host = current_identity()
    from flywheel.recovery import mark_records

    with session.journal() as journal:
        journal.run(run_id)
        with session.lock().acquire(run_id=run_id, command="mark"):
            state = fold(run_id, journal.events(run_id))
            todo = [k for k in keys if not state.step(k).status.done]
            records = {k: tuple(outputs) or mark_records(session, k) for k in todo}
            missing = {k: tuple(str(r["uri"]) for r in rs if r.get("missing")) for k, rs in records.items()}
            missing = {k: uris for k, uris in missing.items() if uris}
            if missing and not force:
                raise UsageError(
                    f"cannot mark {', '.join(str(k) for k in missing)} succeeded: "
                    f"{sum(len(u) for u in missing.values())} declared output(s) are not there",
                    details=tuple(f"{k}: {uri} is missing" for k, uris in missing.items() for uri in uris),
                    fix="produce the outputs first (or `flywheel resume` to rerun the step); add --force to "
                    "record the mark anyway (a resume still checks them and reruns the step while they are missing)",
                )
            events = tuple(
                StepMarked(
                    run_id=run_id,
                    at=time.time(),
                    step=key.step,
                    context=key.context,
                    note=note,
                    user=f"{user}@{host}",
                    outputs=tuple({**r, "claimed": True} if r.get("missing") else r for r in records[key]),
                )
                for key in todo
            )
            journal.append(*events)
            after = fold(run_id, journal.events(run_id))
            later = recovered_by(journal, run_id)
    command = f"flywheel resume {run_id}" if events and after.status.resumable and later is None else None
    return MarkResult(
        run_id=run_id,
        marked=events,
        already_done=tuple(k for k in keys if k not in todo),
        missing=missing,
        resume_command=command,
    )


def planned_summary(planned: PlannedRun) -> dict[str, Any]:
    """A JSON-ready description of a plan (for --json and the dashboard)."""
    return {
        "pipeline": planned.session.pipeline,
        "env": planned.session.env_name,
        "source_run": planned.source.run_id if planned.source else None,
        "request": planned.plan.request.to_dict(),
        "decisions": [
            {
                "key": str(d.key),
                "action": d.action.value,
                "reason": d.reason,
                "source_run": d.source.produced_by if d.source else None,
            }
            for d in planned.plan.decisions
        ],
        "to_run": [str(k) for k in planned.plan.keys(Action.RUN)],
        "time_saved": {
            "wall_seconds": planned.time_saved.wall_seconds,
            "compute_seconds": planned.time_saved.compute_seconds,
            "dpu_hours": planned.time_saved.dpu_hours,
        },
        "warnings": list(planned.warnings),
    }
