"""The rules about runs that every interface applies, each in one place.

- is an unfinished run still running, or did its runner die? (`load_state`: the lock tells)
- which successes may `--skip-steps` reuse? (`latest_successes`)
- was a run already recovered, through its whole lineage? (`recovered_by`)
- which run does a bare `flywheel resume` continue? (`find_resumable`)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from flywheel.app.session import Session
from flywheel.errors import NotFound, UsageError
from flywheel.journal import Journal
from flywheel.lock import Holder, Lock, current_identity
from flywheel.planner import (
    PlanRequest,
    Provenance,
)
from flywheel.runner import Overrides
from flywheel.spec import PipelineSpec, Resources, StepKey, parse_duration
from flywheel.state import RunState, RunStatus, as_crashed, as_running, fold

# ---------------------------------------------------------------------------------------------
# reading the journal


def settle(state: RunState, holder: Holder | None) -> RunState:
    """The one answer to "is this unfinished run still running, or did its runner die?".

    Running while a live runner on this machine holds the pipeline's lock for this very run (run ids
    are per journal, and the journal is this machine's); otherwise its runner died: interrupted.
    """
    if state.status is not RunStatus.UNFINISHED:
        return state
    here = current_identity()[1]
    running = holder is not None and holder.run_id == state.run_id and holder.host == here
    return as_running(state) if running else as_crashed(state)


def load_state(journal: Journal, run_id: int, *, lock: Lock | None = None) -> RunState:
    """Fold a run and `settle` it against its lock."""
    state = fold(run_id, journal.events(run_id))
    if state.status is not RunStatus.UNFINISHED:
        return state
    return settle(state, lock.holder() if lock is not None else None)


def latest_successes(journal: Journal, pipeline: str, env: str) -> dict[StepKey, Provenance]:
    """The newest success of every key in this pipeline and environment (what `--skip-steps` reuses),
    read through the same fold as every history: a reused success points at the run that produced it."""
    out: dict[StepKey, Provenance] = {}
    for (step, context), (recorded_in, event) in journal.latest_successes(pipeline, env).items():
        key = StepKey(step, context)
        done = fold(recorded_in, [event]).step(key)
        out[key] = Provenance(
            produced_by=done.produced_by or recorded_in,
            recorded_in=recorded_in,
            duration=done.duration or 0.0,
            outputs=done.outputs,
            fingerprint=done.fingerprint,
            dpu_hours=done.dpu_hours,
        )
    return out


def recovered_by(journal: Journal, run_id: int) -> int | None:
    """The first later run in `run_id`'s lineage (its resume, a resume of that, ...) that succeeded.

    The one rule behind "already recovered": a second recovery would redo that run's work, so the CLI
    needs `--again` for it and the dashboard refuses it.
    """
    return recovered_by_many(journal, [run_id]).get(run_id)


def open_to_resume(status: RunStatus, recovered: int | None) -> bool:
    """May this run be resumed? Work is left (failed, interrupted, partial) and no later run of its
    lineage did it (`recovered` is `recovered_by` of the run). The one answer the CLI's resume
    command, `mark`, the run list and the dashboard's Resume all use."""
    return status.resumable and recovered is None


def needs_attention(status: RunStatus, recovered: int | None, *, overdue: bool = False) -> bool:
    """Does this run need the on-call engineer? Work left that no later run did (a failed, interrupted or
    partial run not yet recovered), or a run still going whose running step is overdue."""
    return open_to_resume(status, recovered) or (status is RunStatus.RUNNING and overdue)


def recovered_by_many(journal: Journal, run_ids: Sequence[int]) -> dict[int, int]:
    """`recovered_by` for many runs at once (a page of the run list): one read of the lineage and one
    of the descendants' events, whatever the number of runs in the journal."""

    def succeeded(wanted: Sequence[int]) -> set[int]:
        events = journal.events_of_runs(wanted) if wanted else {}
        return {d for d in wanted if fold(d, events[d]).status is RunStatus.SUCCEEDED}

    return recovered_among(run_ids, journal.lineage(after=min(run_ids, default=0)), succeeded)


def recovered_among(
    run_ids: Sequence[int], lineage: Mapping[int, int], succeeded: Callable[[Sequence[int]], set[int]]
) -> dict[int, int]:
    """The rule behind `recovered_by`, over any source of lineage ({run: parent}) and of run outcomes
    (the journal, or the dashboard's run index): the first descendant, in run order, that succeeded."""
    children: dict[int, list[int]] = {}
    for child, parent in sorted(lineage.items()):
        children.setdefault(parent, []).append(child)
    lines: dict[int, list[int]] = {}
    for run_id in run_ids:
        found, frontier = [], list(children.get(run_id, ()))
        while frontier:
            child = frontier.pop(0)
            found.append(child)
            frontier.extend(children.get(child, ()))
        lines[run_id] = sorted(found)
    done = succeeded(sorted({d for line in lines.values() for d in line}))
    out: dict[int, int] = {}
    for run_id, line in lines.items():
        first = next((d for d in line if d in done), None)
        if first is not None:
            out[run_id] = first
    return out


def find_resumable(session: Session, journal: Journal) -> RunState:
    """The latest failed, interrupted or partial run of this pipeline and environment not yet recovered."""
    lock = session.lock()
    rows = journal.runs(session.pipeline, session.env_name, limit=50)
    for row in rows:
        state = load_state(journal, row.run_id, lock=lock)
        if open_to_resume(state.status, recovered_by(journal, row.run_id)):
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
# one-run overrides (`--set`, `--engine`) and the environment's rules (prod)

_SETTING = re.compile(r"^([\w-]+)\.(timeout|workers|memory|worker_type|threads)=(.+)$")
ENGINES = ("duckdb", "spark")
_SETTING_FIX = {
    "timeout": "a duration longer than 0, e.g. timeout=90m or timeout=2h",
    "workers": "a whole number of at least 1, e.g. workers=10",
    "threads": "a whole number of at least 1, e.g. threads=4",
    "memory": "a size with its unit, e.g. memory=3GB or memory=1500MB",
    "worker_type": "a Glue worker type, e.g. worker_type=G.2X (Standard, G.025X, G.1X-G.16X, R.1X-R.8X, Z.2X)",
}


def parse_overrides(values: Sequence[str], engine: str | None = None) -> Overrides:
    """`--set STEP.SETTING=VALUE` and `--engine` as one run's overrides; a typo fails before anything runs."""
    timeouts: dict[str, float] = {}
    resources: dict[str, dict[str, Any]] = {}
    for value in values:
        match = _SETTING.match(value.strip())
        if not match:
            raise UsageError(
                f"--set {value!r} is not STEP.SETTING=VALUE",
                fix="write e.g. --set addressable-split-and-part.timeout=3h (settings: timeout, workers, "
                "worker_type, memory, threads)",
            )
        step, setting, raw = match.groups()
        try:
            if setting == "timeout":
                timeouts[step] = parse_duration(raw)
                if timeouts[step] <= 0:
                    raise ValueError("a timeout must be longer than 0")
            else:  # the same rules as `resources:` in pipeline.yaml
                wanted = int(raw) if setting in ("workers", "threads") else raw
                Resources.model_validate({setting: wanted})
                resources.setdefault(step, {})[setting] = wanted
        except ValidationError:
            raise UsageError(f"--set {value!r}: {raw!r} is not a valid {setting}", fix=_SETTING_FIX[setting]) from None
        except ValueError as exc:
            reason = str(exc) if setting == "timeout" else f"{raw!r} is not a valid {setting}"
            raise UsageError(f"--set {value!r}: {reason}", fix=_SETTING_FIX[setting]) from None
    if engine is not None and engine.lower() not in ENGINES:
        raise UsageError(f"--engine {engine!r} is not an engine", fix="use --engine duckdb or --engine spark")
    return Overrides(timeouts=timeouts, resources=resources, engine=engine.lower() if engine else None)


def check_overrides(spec: PipelineSpec, overrides: Overrides) -> None:
    """Every step an override names exists in the pipeline."""
    for step in [*overrides.timeouts, *overrides.resources]:
        if step not in spec.by_id:
            raise UsageError(
                f"--set names unknown step {step!r}",
                fix="steps: " + ", ".join(s.id for s in spec.steps),
            )


def require_note(session: Session, request: PlanRequest) -> None:
    """Where the environment requires it (prod), anything that bends the rules carries a note saying why."""
    env = session.project.config.environment(session.env_name)
    bends = bool(request.skip or request.force or request.reuse_stale or request.again)
    if env.require_note and bends and not (request.note or "").strip():
        raise UsageError(
            f"in {session.env_name}, --skip-steps, --force, --reuse-stale and --again need --note saying why",
            fix='add --note "..." (it is journaled with the run)',
        )


def environment_policy(
    session: Session,
    request: PlanRequest,
    *,
    confirmed: bool,
    dry_run: bool,
    ask: Callable[[str], bool] | None,
) -> None:
    """The environment's rules before a run: a note where rules are bent, and confirmation (prod).

    `ask` puts the question to a person (None when nobody can answer: no terminal); `confirmed` is
    `--yes` or the environment's name typed in the dashboard.
    """
    require_note(session, request)
    env = session.project.config.environment(session.env_name)
    if not env.confirm or confirmed or dry_run:
        return
    if ask is None:
        raise UsageError(
            f"{session.env_name} needs confirmation and no terminal is attached", fix="add --yes to confirm"
        )
    if not ask(f"Run {session.pipeline} in {session.env_name}?"):
        raise UsageError(f"not confirmed: nothing was run in {session.env_name}")
