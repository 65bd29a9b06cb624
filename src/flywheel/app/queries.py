"""Questions about runs (status, history, logs) and the one command that edits one (`mark`)."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flywheel.app.facts import default_fingerprinter, verify_key
from flywheel.app.policies import load_state, open_to_resume, recovered_by, settle
from flywheel.app.secrets import session_redactor
from flywheel.app.session import Session
from flywheel.errors import NotFound, UsageError
from flywheel.events import StepMarked
from flywheel.lock import current_identity
from flywheel.outputs import CheckStatus, OutputCheck
from flywheel.params import resolve_outputs
from flywheel.planner import (
    parse_selectors,
)
from flywheel.spec import Project, StepKey
from flywheel.state import RunState, RunStatus, StepStatus, fold

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
        if not open_to_resume(self.state.status, self.recovered_by):
            return None
        return f"flywheel resume {self.state.run_id}"


def status(session: Session, run_id: int | None = None) -> RunView:
    with session.journal(create=False) as journal:
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
    with session.journal(create=False) as journal:
        rows = journal.runs(session.pipeline, None if all_envs else session.env_name, limit=limit)
        events = journal.events_of_runs([r.run_id for r in rows])
        holder = session.lock().holder()
        return [settle(fold(row.run_id, events[row.run_id]), holder) for row in rows]


def log_files(session: Session, run_id: int, step: str | None = None) -> list[Path]:
    """The per-attempt log files of a run (optionally of one step or `step[context]`), in order.

    The step is read like every other selection (`planner.parse_selectors`), so an unknown step or
    context is a usage error naming the valid ones, never an empty answer.
    """
    with session.journal(create=False) as journal:
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
                    note=session_redactor(session)(note),
                    user=f"{user}@{host}",
                    outputs=tuple({**r, "claimed": True} if r.get("missing") else r for r in records[key]),
                )
                for key in todo
            )
            journal.append(*events)
            after = fold(run_id, journal.events(run_id))
            later = recovered_by(journal, run_id)
    command = f"flywheel resume {run_id}" if events and open_to_resume(after.status, later) else None
    return MarkResult(
        run_id=run_id,
        marked=events,
        already_done=tuple(k for k in keys if k not in todo),
        missing=missing,
        resume_command=command,
    )


# ---------------------------------------------------------------------------------------------
# verify a finished run; fingerprint outputs for a mark


@dataclass(frozen=True)
class KeyReport:
    key: StepKey
    number: int
    status: StepStatus
    checks: tuple[OutputCheck, ...] = ()
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None and all(c.ok for c in self.checks)


@dataclass(frozen=True)
class VerifyReport:
    run_id: int
    keys: tuple[KeyReport, ...] = field(default_factory=tuple)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(k.ok for k in self.keys)

    @property
    def problems(self) -> int:
        return sum(not k.ok for k in self.keys)


def verify_run(session: Session, run_id: int | None = None) -> VerifyReport:
    """Check every declared output of a run: present and matching its fingerprint.

    A step that did not finish in the run (failed, skipped, never started) is a problem too: its
    outputs were not produced.
    """
    began = time.perf_counter()
    view = status(session, run_id)
    state = view.state
    fp = default_fingerprinter(view.session)
    reports: list[KeyReport] = []
    for key in session.spec.keys:
        step = state.step(key)
        number = session.spec.step(key.step).number
        if not step.status.done:
            what = {
                StepStatus.FAILED: "failed",
                StepStatus.SKIPPED: "skipped",
                StepStatus.INTERRUPTED: "interrupted",
                StepStatus.RUNNING: "still running",
            }.get(step.status, "not executed")
            reports.append(KeyReport(key, number, step.status, problem=f"{what} in run {state.run_id}"))
            continue
        records = step.outputs
        if not any("uri" in r for r in records):  # nothing recorded: at least check the declared outputs exist
            params = fp.params(key)
            records = fp.output_records(key, resolve_outputs(session.spec, key, params), (), params)
            checks = tuple(
                OutputCheck(str(r["uri"]), str(r.get("kind")), CheckStatus.MISSING, "gone")
                if r.get("missing")
                else OutputCheck(str(r["uri"]), str(r.get("kind")), CheckStatus.UNCHECKED, "present, no fingerprint")
                for r in records
            )
        else:
            checks = verify_key(fp, key, records, step.duration or 0.0).checks
        reports.append(KeyReport(key, number, step.status, checks))
    return VerifyReport(run_id=state.run_id, keys=tuple(reports), seconds=time.perf_counter() - began)


def mark_records(session: Session, key: StepKey) -> tuple[Mapping[str, Any], ...]:
    """Fingerprints of a key's declared outputs as they are now (for `flywheel mark`)."""
    fp = default_fingerprinter(session)
    params = fp.params(key)
    return fp.output_records(key, resolve_outputs(session.spec, key, params), (), params)


def read_logs(
    session: Session,
    run_id: int,
    step: str | None = None,
    *,
    pattern: re.Pattern[str] | None = None,
    follow: bool = False,
    poll_seconds: float = 0.5,
) -> Iterator[tuple[str, str]]:
    """The lines of a run's logs as (source, line): each attempt's local log, and for AWS runs the
    CloudWatch logs of its Glue runs and execution. With `follow`, keeps reading while the run runs.
    Secret values are masked (the files on disk keep what the job printed)."""
    from flywheel.aws.logs import cloud_logs  # no boto3 until an AWS run's logs are read

    redact = session_redactor(session)
    cloud = cloud_logs(session, run_id, step, pattern)
    offsets: dict[Path, int] = {}
    while True:
        for path in log_files(session, run_id, step):
            with path.open("r", errors="replace") as handle:
                handle.seek(offsets.get(path, 0))
                chunk = handle.read()
                offsets[path] = handle.tell()
            source = path.name.removesuffix(".log")
            lines = (redact(line) for line in chunk.splitlines())
            yield from ((source, line) for line in lines if pattern is None or pattern.search(line))
        for entry in cloud.poll() if cloud is not None else ():
            yield entry.source, redact(entry.message)
        if not follow or status(session, run_id).state.status is not RunStatus.RUNNING:
            return
        time.sleep(poll_seconds)


def find_jobs(project: Project) -> tuple[str, ...]:
    """Every step's job, found without running it: its module on the path a step would have (the
    pipeline's folder after the standard library), and the function defined at its top level.

    Importing a job module would run its imports (an engine, a cloud SDK) and whatever else it does at
    import time, so the module is located with `importlib.util.find_spec` and its source read with `ast`.
    """
    folder = str(Path(project.spec.source_path).resolve().parent) if project.spec.source_path else None
    added = folder is not None and folder not in sys.path
    if added:
        sys.path.append(str(folder))
    problems: list[str] = []
    try:
        for step in project.spec.steps:
            if step.job is None:
                continue
            module, _, function = step.job.partition(":")
            try:
                found = importlib.util.find_spec(module)
            except (ImportError, ValueError) as exc:  # a parent package that is missing or fails
                found, why = None, f"{type(exc).__name__}: {exc}"
            else:
                why = "no such module"
            if found is None or found.origin is None or not found.origin.endswith(".py"):
                where = f" (searched the pipeline's folder {folder} and the installed packages)" if folder else ""
                problems.append(f"step {step.number} {step.id}: job {step.job!r}: {why}{where}")
                continue
            if function not in _top_level_names(ast.parse(Path(found.origin).read_bytes(), found.origin)):
                where = f"{found.origin} defines no {function!r}"
                problems.append(f"step {step.number} {step.id}: job {step.job!r}: {where}")
    finally:
        if added:
            sys.path.remove(str(folder))
    return tuple(problems)


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level: functions, classes, assignments and imports."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names
