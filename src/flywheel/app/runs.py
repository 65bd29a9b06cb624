"""Prepare and start a run: the one way run, resume, try and `sfn recover` plan and execute.

Functions here gather facts (journal reads, lock state, output checks), call the pure planner, and
hand the plan to the runner. They return dataclasses; they never print.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

from flywheel.app.facts import default_fingerprinter, gather
from flywheel.app.policies import find_resumable, load_state, recovered_by, require_note
from flywheel.app.secrets import session_redactor
from flywheel.app.session import Session
from flywheel.errors import BackendError, UsageError
from flywheel.events import RunOutcome, RunStarted
from flywheel.executors import create_executor
from flywheel.executors.base import Executor
from flywheel.journal import Journal, backup_journal, check_journal
from flywheel.lock import current_identity
from flywheel.planner import (
    Mode,
    Plan,
    PlanInputs,
    PlanRequest,
    TimeSaved,
    check_request,
    plan,
)
from flywheel.runner import Fingerprinter, Observer, Overrides, Runner
from flywheel.spec import EnvironmentSpec, StepKey
from flywheel.state import RunState, RunStatus, fold

# ---------------------------------------------------------------------------------------------
# planning


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedRun:
    """A plan with the context a person needs to trust it."""

    session: Session
    plan: Plan
    source: RunState | None
    time_saved: TimeSaved
    warnings: tuple[str, ...] = ()
    unchanged_failures: tuple[StepKey, ...] = ()  # see `PlanInputs.unchanged_failures`


PlanInputsHook = Callable[[Session, Journal, PlanRequest, RunState | None], PlanInputs]


def gather_inputs(session: Session, journal: Journal, request: PlanRequest, source: RunState | None) -> PlanInputs:
    """The default facts: recorded successes, verified outputs, staleness (`facts.gather`)."""
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
    require_note(session, request)  # library callers meet the environment's rules too
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
    if request.mode is Mode.RESUME and source is not None:
        _check_after_unclean_end(journal, source)
    inputs = gather(session, journal, request, source)
    decided = plan(session.spec, request, inputs)
    return PlannedRun(
        session=session,
        plan=decided,
        source=source,
        time_saved=decided.time_saved(session.spec),
        warnings=inputs.warnings,
        unchanged_failures=inputs.unchanged_failures,
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
        executor.start()
    try:
        return _execute(session, request, options, env, executor)
    finally:
        if executor is not None and executor is not options.executor:
            executor.close()


def _execute(
    session: Session, request: PlanRequest, options: RunOptions, env: EnvironmentSpec, executor: Executor | None
) -> RunResult:
    with session.journal() as journal, session.lock().acquire(command=request.mode.value) as lock:
        planned = prepare(session, journal, request, gather=options.gather)
        if options.confirm is not None:
            options.confirm(planned)
        run_id = journal.new_run(session.pipeline, session.env_name)
        lock.update(run_id=run_id, command=request.mode.value)
        started = run_started(session, run_id, planned.plan.request, planned.source)
        if options.on_planned is not None:
            options.on_planned(planned, run_id)
        outcome, state = carry_out(session, env, session.home, journal, planned.plan, started, options, executor)
        _back_up(session)
    return RunResult(run_id=run_id, outcome=outcome, state=state, planned=planned)


def _back_up(session: Session) -> None:
    """A copy of the journal at the end of every run (`flywheel journal restore` puts one back). A
    backup that fails (a full disk) is logged and never fails the run it follows."""
    try:
        backup_journal(session.home)
    except (OSError, sqlite3.Error) as exc:
        log.warning("the journal backup after this run failed: %s", exc)


def _check_after_unclean_end(journal: Journal, source: RunState) -> None:
    """A resume never plans from a damaged journal. The check (SQLite's quick_check, ~50 ms for a
    journal of 10,000 runs) is made where damage is plausible: the run being resumed ended uncleanly
    (its runner died, a power cut). `flywheel journal check` makes it on demand."""
    if source.status is not RunStatus.INTERRUPTED or source.finished_at is not None:
        return
    problems = check_journal(journal.path)
    if problems:
        raise BackendError(
            f"the journal at {journal.path} fails its integrity check, so a resume cannot trust what it "
            f"says finished: {problems[0]}",
            details=problems[1:6],
            fix="`flywheel journal restore` puts back the latest backup and says which runs it lacks",
        )


def run_started(
    session: Session, run_id: int, request: PlanRequest, source: RunState | None, *, origin: str = "local"
) -> RunStarted:
    """The first event of a run: what was asked, by whom, from where, with which code, continuing what."""
    user, host = current_identity()
    return RunStarted(
        run_id=run_id,
        at=time.time(),
        pipeline=session.pipeline,
        env=session.env_name,
        parameters=dict(session.spec.params),
        parent_run=source.run_id if source else None,
        root_run=(source.started.root_run or source.run_id) if source and source.started else None,
        request=request.to_dict(),
        user=user,
        host=host,
        flywheel_version=flywheel_version(),
        code_version=code_version(session.project.root),
        definition=session.spec.source_path,
        source=origin,
    )


def carry_out(
    session: Session,
    env: EnvironmentSpec,
    home: Path,
    journal: Journal,
    decided: Plan,
    started: RunStarted,
    options: RunOptions,
    executor: Executor | None = None,
) -> tuple[RunOutcome | None, RunState]:
    """Hand a plan to the runner (Ctrl-C and SIGTERM stop it cleanly) and fold what it journaled.

    The one place a `Runner` is made: `execute` and `flywheel try` (a scratch home and journal) use it.
    """
    runner = Runner(
        spec=session.spec,
        env_name=session.env_name,
        env=env,
        home=home,
        journal=journal,
        executor=executor or create_executor(env.executor, spec=session.spec, env_name=session.env_name, env=env),
        observers=options.observers,
        fingerprinter=options.fingerprinter or default_fingerprinter(session),
        overrides=options.overrides,
        max_parallel=options.max_parallel,
        cancel=options.cancel or threading.Event(),
        redact=session_redactor(session),
    )
    with _stop_on_signals(runner.cancel):
        outcome = runner.execute(decided, started)
    return outcome, fold(started.run_id, journal.events(started.run_id))


def dry_run(session: Session, request: PlanRequest, gather: PlanInputsHook = gather_inputs) -> PlannedRun:
    with session.journal() as journal:
        return prepare(session, journal, request, gather=gather)
