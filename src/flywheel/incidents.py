"""Incidents: what went wrong, why, what fixed it and what recovery saved, as a projection of the journal.

Nothing here is stored on its own. An incident is read from run events every time:

- a **failed run opens an incident**; its id is that run's id (the run the operator resumes, the run the
  alert named). Not the lineage root: a root may be a run that succeeded long ago (a `--from-step`
  rerun descends from it) and one lineage can hold several incidents over the weeks;
- a later run whose `RunStarted.parent_run` is a member of the open incident (a resume, a resume of a
  resume) **joins** it; when one of them finishes succeeded the incident is **resolved**, with the
  recovery time (failure to success) and the time saved by the steps that run reused (their durations
  as originally measured: `StepReused.duration`, through `Plan.time_saved`);
- a later run of the same pipeline and environment outside the lineage (a fresh `flywheel run`, maybe
  with `--skip-steps`) that succeeds closes it as **superseded**, with the time its reuse saved;
- operator findings are `IncidentNoted` events appended to the incident's run.

A failure's cause comes from `CauseRule`s in the pipeline definition (`steps[].causes`), then from a
few generic rules kept here for errors every step can meet (timeouts, access denied, code bugs).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from flywheel.errors import NotFound, UsageError
from flywheel.events import Event, IncidentNoted, RunStarted, StepFailed, StepReused, StepStarted
from flywheel.journal import Journal
from flywheel.planner import Action, Plan, PlanRequest, Provenance, StepDecision, TimeSaved
from flywheel.spec import CauseRule, PipelineSpec, StepKey, StepSpec, load_pipeline
from flywheel.state import RunState, RunStatus, fold

log = logging.getLogger(__name__)


class Cause(StrEnum):
    DATA = "data"
    PERMISSION = "permission"
    RESOURCE = "resource"
    SCHEMA = "schema"
    CONFIGURATION = "configuration"
    CODE = "code"
    UNKNOWN = "unknown"


class IncidentStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"  # a run of its lineage succeeded
    SUPERSEDED = "superseded"  # a fresh run outside the lineage succeeded


# Errors any step can meet. The pipeline's own rules are tried first: they know the step.
GENERIC_RULES: tuple[CauseRule, ...] = (
    CauseRule(
        match=r"^Timeout\b|timed out|TimeoutError",
        cause="resource",
        hint="The step ran past its timeout: raise it for one run with `--set STEP.timeout=3h`, "
        "or give it more workers (`--set STEP.workers=30`).",
    ),
    CauseRule(
        match=r"^DiskFull\b|No space left on device|File too large|Disk quota exceeded",
        cause="resource",
        hint="The step could not write: its disk is full, or a quota or file-size limit (`ulimit -f`) applies. "
        "Free space on that disk or lift the limit, then resume.",
    ),
    CauseRule(
        match=r"^Killed\b|OutOfMemory|out of memory|MemoryError|"
        r"ResourceNumberLimitExceeded|ConcurrentRunsExceeded|Throttling|Rate exceeded",
        cause="resource",
        hint="The step ran out of memory, disk or service capacity: raise `--set STEP.memory=...` "
        "or workers, or wait for concurrent jobs to finish, then resume.",
    ),
    CauseRule(
        match=r"AccessDenied|access denied|not authorized|\bForbidden\b|Insufficient Lake Formation permission|"
        r"ExpiredToken|InvalidClientTokenId|UnrecognizedClient|PermissionError|Permission denied",
        cause="permission",
        hint="A permission is missing: check the job role's IAM policy (and Lake Formation grants) for the "
        "resource named in the error, or refresh your AWS credentials.",
    ),
    CauseRule(
        match=r"^(JobNotFound|Crashed|TypeError|AttributeError|NameError|ImportError|ModuleNotFoundError|"
        r"SyntaxError|IndexError|ZeroDivisionError|AssertionError|NotImplementedError|UnboundLocalError|"
        r"RecursionError)\b",
        cause="code",
        hint="A bug in the job's code: read the traceback in the step log, fix the code, then resume.",
    ),
)

CAUSE_HELP = ", ".join(c.value for c in Cause)


# ---------------------------------------------------------------------------------------------
# classification and signatures


def classify(step: StepSpec | None, error_type: str, message: str) -> tuple[Cause, tuple[str, ...]]:
    """The cause of a failure and every matching hint, from the step's rules then the generic ones.

    Rules are regular expressions searched (case-insensitively) in `"{error_type}: {message}"`, so a
    rule can anchor on the error type (`^DataQualityError`) or match words of the message. The first
    matching rule names the cause; the hints of every matching rule of that cause are shown, in order
    (hints of another cause would only contradict the classification).
    """
    subject = f"{error_type}: {message}"
    cause: Cause | None = None
    hints: list[str] = []
    for rules in ((step.causes if step is not None else ()), GENERIC_RULES):
        for rule in rules:
            if (cause is None or rule.cause == cause.value) and re.search(rule.match, subject, re.IGNORECASE):
                cause = cause or Cause(rule.cause)
                if rule.hint and rule.hint not in hints:
                    hints.append(rule.hint)
        if cause is not None and rules is not GENERIC_RULES and step is not None:
            break  # the step knows better than the generic rules
    return cause or Cause.UNKNOWN, tuple(hints)


_NORMALISERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"arn:aws[\w-]*:[^\s'\"(),;]+"), "<arn>"),
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"(),;]+", re.IGNORECASE), "<uri>"),
    (
        re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"),
        "<time>",
    ),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\b"), "<time>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE), "<id>"),
    (re.compile(r"\b(?:jr|exec|job|req|run|id)[_-][0-9a-z]{6,}\b", re.IGNORECASE), "<id>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.IGNORECASE), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,}\b", re.IGNORECASE), "<hex>"),
    (re.compile(r"(?:[~.]{1,2}|[\w.-]+)?(?:/[^\s/'\"(),;:]+)+/?"), "<path>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def signature(message: str) -> str:
    """The error with what changes between occurrences (ids, paths, ARNs, numbers, hashes, times) removed.

    Two failures with one signature are the same problem met again, so the fix recorded for the first
    is worth showing at the second.
    """
    text = message
    for pattern, replacement in _NORMALISERS:
        text = pattern.sub(replacement, text)
    return text.strip()[:1000]


def signature_id(error_type: str, message: str) -> str:
    """A short stable id of `error_type` plus the message's signature (for tables and links)."""
    return hashlib.sha256(f"{error_type}\0{signature(message)}".encode()).hexdigest()[:10]


# ---------------------------------------------------------------------------------------------
# the projection


@dataclass(frozen=True)
class FinalFailure:
    """A step attempt that failed with no retry left, as recorded (classified when incidents are read,
    with the pipeline definition of that time)."""

    key: StepKey
    at: float
    error_type: str
    error_message: str
    attempts: int
    duration: float
    exit_code: int | None
    log_path: str | None


@dataclass(frozen=True)
class Failure(FinalFailure):
    """One step that failed for good (no retry left) in one run of the incident, classified."""

    run_id: int
    cause: Cause
    hints: tuple[str, ...]
    signature: str
    signature_id: str


@dataclass(frozen=True)
class Note:
    at: float
    user: str
    cause: str
    fix: str
    category: str | None


@dataclass(frozen=True)
class ReusedStep:
    key: StepKey
    source_run: int
    duration: float
    dpu_hours: float | None


@dataclass(frozen=True)
class PastFix:
    """A fix recorded on an earlier incident that failed with the same error signature."""

    incident_id: int
    key: StepKey
    at: float
    note: Note


@dataclass(frozen=True)
class Incident:
    id: int
    pipeline: str
    env: str
    opened_at: float
    opened_by: str
    runs: tuple[int, ...]
    failures: tuple[Failure, ...]
    status: IncidentStatus = IncidentStatus.OPEN
    closed_by: int | None = None
    closed_at: float | None = None
    reused: tuple[ReusedStep, ...] = ()
    time_saved: TimeSaved | None = None
    notes: tuple[Note, ...] = ()
    past_fixes: tuple[PastFix, ...] = ()
    execution: str | None = None  # a Step Functions execution ARN, when the run came from one

    @property
    def primary(self) -> Failure:
        """The first failure of the run that opened the incident: the one to explain."""
        return self.failures[0]

    @property
    def cause(self) -> Cause:
        """An operator's category wins over the classification."""
        for note in reversed(self.notes):
            if note.category:
                return Cause(note.category)
        return self.primary.cause

    @property
    def recovery_seconds(self) -> float | None:
        return None if self.closed_at is None else max(0.0, self.closed_at - self.opened_at)

    @property
    def resume_command(self) -> str:
        return f"flywheel resume {self.runs[-1]}"


@dataclass(frozen=True)
class RunFacts:
    """What the incident projection needs of one run, folded once from its events.

    Small and serializable on purpose: the dashboard's run index keeps one per run so the incidents
    pages never fold every run again (`flywheel.app.run_index`).
    """

    run_id: int
    started: RunStarted | None
    status: RunStatus
    finished_at: float | None
    failures: tuple[FinalFailure, ...] = ()
    notes: tuple[Note, ...] = ()
    reused: tuple[ReusedStep, ...] = ()


def run_facts(run_id: int, events: Sequence[Event], state: RunState | None = None) -> RunFacts:
    """The incident-relevant facts of one run, from its events (and its fold, when already made)."""
    state = fold(run_id, events) if state is None else state
    logs: dict[tuple[StepKey, int], str | None] = {}
    failures: list[FinalFailure] = []
    for event in events:
        if isinstance(event, StepStarted):
            logs[(event.key, event.attempt)] = event.log_path
        elif isinstance(event, StepFailed) and not event.will_retry:
            failures.append(
                FinalFailure(
                    key=event.key,
                    at=event.at,
                    error_type=event.error_type,
                    error_message=event.error_message,
                    attempts=event.attempt,
                    duration=event.duration,
                    exit_code=event.exit_code,
                    log_path=logs.get((event.key, event.attempt)),
                )
            )
    return RunFacts(
        run_id=run_id,
        started=state.started,
        status=state.status,
        finished_at=state.finished_at,
        failures=tuple(failures),
        notes=tuple(
            Note(at=e.at, user=e.user, cause=e.cause, fix=e.fix, category=e.category)
            for e in events
            if isinstance(e, IncidentNoted)
        ),
        reused=tuple(
            ReusedStep(key=e.key, source_run=e.source_run, duration=e.duration, dpu_hours=e.dpu_hours)
            for e in events
            if isinstance(e, StepReused)
        ),
    )


def _classified(run_id: int, failure: FinalFailure, spec: PipelineSpec | None) -> Failure:
    step_spec = spec.by_id.get(failure.key.step) if spec is not None else None
    cause, hints = classify(step_spec, failure.error_type, failure.error_message)
    return Failure(
        **{f.name: getattr(failure, f.name) for f in fields(FinalFailure)},
        run_id=run_id,
        cause=cause,
        hints=hints,
        signature=signature(failure.error_message),
        signature_id=signature_id(failure.error_type, failure.error_message),
    )


def time_saved(spec: PipelineSpec | None, reused: Sequence[ReusedStep]) -> TimeSaved:
    """What reusing these steps saved, by the planner's own rule (critical path, compute sum, DPU-hours).

    Without a pipeline definition the graph is unknown, so wall-clock falls back to the longest single
    reused step (a lower bound).
    """
    if spec is None:
        known = [r.dpu_hours for r in reused if r.dpu_hours is not None]
        return TimeSaved(
            wall_seconds=max((r.duration for r in reused), default=0.0),
            compute_seconds=sum(r.duration for r in reused),
            dpu_hours=sum(known) if known else None,
        )
    decisions = tuple(
        StepDecision(
            key=r.key,
            action=Action.REUSE,
            reason=f"reused from run {r.source_run}",
            source=Provenance(
                produced_by=r.source_run, recorded_in=r.source_run, duration=r.duration, dpu_hours=r.dpu_hours
            ),
        )
        for r in reused
    )
    return Plan(request=PlanRequest(), decisions=decisions).time_saved(spec)


@dataclass
class _Open:
    id: int
    pipeline: str
    env: str
    opened_at: float
    opened_by: str
    execution: str | None
    runs: list[int] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)


def _spec_for(
    started: RunStarted, given: PipelineSpec | None, cache: dict[str, PipelineSpec | None]
) -> PipelineSpec | None:
    if given is not None and given.pipeline == started.pipeline:
        return given
    path = started.definition
    if not path:
        return None
    if path not in cache:
        try:
            cache[path] = load_pipeline(Path(path)) if Path(path).exists() else None
        except Exception:  # a definition that no longer loads still leaves its incidents readable
            log.debug("cannot load %s for classification", path, exc_info=True)
            cache[path] = None
    return cache[path]


def incidents(
    journal: Journal,
    spec: PipelineSpec | None = None,
    *,
    env: str | None = None,
    all_pipelines: bool = False,
) -> list[Incident]:
    """Every incident of the pipeline (of `spec`, unless `all_pipelines`), oldest first, folded from
    the journal's events (the dashboard reads the same projection from its run index)."""
    pipeline = None if all_pipelines or spec is None else spec.pipeline
    rows = sorted(journal.runs(pipeline, env), key=lambda r: r.run_id)
    events = journal.events_of_runs([r.run_id for r in rows])
    return incidents_from([run_facts(r.run_id, events[r.run_id]) for r in rows], spec)


def incidents_from(runs: Iterable[RunFacts], spec: PipelineSpec | None = None) -> list[Incident]:
    """The incident projection over runs in run-id order (oldest first).

    Runs are taken as recorded: a run with no end event is taken as still running, never as failed.
    """
    specs: dict[str, PipelineSpec | None] = {}
    open_by_run: dict[int, _Open] = {}  # member run -> its open incident
    closed: dict[int, Incident] = {}
    opened: list[_Open] = []
    journal_started: dict[int, RunStarted] = {}

    def close(inc: _Open, facts: RunFacts, status: IncidentStatus) -> None:
        reused = facts.reused  # a fresh `run --skip-steps` that supersedes still saved time
        first = journal_started.get(inc.id)
        closed[inc.id] = _freeze(
            inc,
            status=status,
            closed_by=facts.run_id,
            closed_at=facts.finished_at,
            reused=reused,
            saved=time_saved(_spec_for(first, spec, specs), reused) if first and reused else None,
        )
        for member in [k for k, v in open_by_run.items() if v is inc]:
            del open_by_run[member]

    for facts in runs:
        started = facts.started
        if started is None:
            continue
        journal_started[facts.run_id] = started
        parent = open_by_run.get(started.parent_run) if started.parent_run is not None else None
        if parent is not None:
            parent.runs.append(facts.run_id)
            parent.notes.extend(facts.notes)
            open_by_run[facts.run_id] = parent
            if facts.status is RunStatus.FAILED:
                run_spec = _spec_for(started, spec, specs)
                parent.failures.extend(_classified(facts.run_id, f, run_spec) for f in facts.failures)
            elif facts.status is RunStatus.SUCCEEDED:
                close(parent, facts, IncidentStatus.RESOLVED)
            continue
        if facts.status is RunStatus.SUCCEEDED:
            for inc in {id(v): v for v in open_by_run.values()}.values():
                if (inc.pipeline, inc.env) == (started.pipeline, started.env) and inc.id < facts.run_id:
                    close(inc, facts, IncidentStatus.SUPERSEDED)
            continue
        if facts.status is not RunStatus.FAILED:
            continue
        run_spec = _spec_for(started, spec, specs)
        failures = [_classified(facts.run_id, f, run_spec) for f in facts.failures]
        if not failures:  # failed without a failed step (an import of a broken execution): still an incident
            failures = [_run_level_failure(facts)]
        inc = _Open(
            id=facts.run_id,
            pipeline=started.pipeline,
            env=started.env,
            opened_at=min(f.at for f in failures),
            opened_by=f"{started.user}@{started.host}" if started.user else "",
            execution=started.external_id,
            runs=[facts.run_id],
            failures=failures,
            notes=list(facts.notes),
        )
        opened.append(inc)
        open_by_run[facts.run_id] = inc

    result = [closed.get(inc.id) or _freeze(inc) for inc in opened]
    return _with_past_fixes(result)


def _run_level_failure(facts: RunFacts) -> Failure:
    message = "the run failed without a failed step (steps were blocked or never started)"
    return Failure(
        run_id=facts.run_id,
        key=StepKey("(run)"),
        at=facts.finished_at or (facts.started.at if facts.started else 0.0),
        error_type="RunFailed",
        error_message=message,
        attempts=0,
        duration=0.0,
        exit_code=None,
        log_path=None,
        cause=Cause.UNKNOWN,
        hints=(),
        signature=signature(message),
        signature_id=signature_id("RunFailed", message),
    )


def _freeze(
    inc: _Open,
    *,
    status: IncidentStatus = IncidentStatus.OPEN,
    closed_by: int | None = None,
    closed_at: float | None = None,
    reused: tuple[ReusedStep, ...] = (),
    saved: TimeSaved | None = None,
) -> Incident:
    return Incident(
        id=inc.id,
        pipeline=inc.pipeline,
        env=inc.env,
        opened_at=inc.opened_at,
        opened_by=inc.opened_by,
        runs=tuple(inc.runs),
        failures=tuple(inc.failures),
        status=status,
        closed_by=closed_by,
        closed_at=closed_at,
        reused=reused,
        time_saved=saved if saved is not None else (TimeSaved(0.0, 0.0) if status is not IncidentStatus.OPEN else None),
        notes=tuple(sorted(inc.notes, key=lambda n: n.at)),
        execution=inc.execution,
    )


def _with_past_fixes(found: list[Incident]) -> list[Incident]:
    """Attach to each incident the fixes noted on earlier incidents with one of its error signatures."""
    from dataclasses import replace

    out: list[Incident] = []
    fixes: dict[tuple[str, str], list[PastFix]] = {}
    for inc in found:
        wanted = {(f.error_type, f.signature) for f in inc.failures}
        past = [fix for key in wanted for fix in fixes.get(key, [])]
        past.sort(key=lambda p: p.at, reverse=True)
        out.append(replace(inc, past_fixes=tuple(past)))
        for note in inc.notes:
            if not note.fix:
                continue
            for failure in inc.failures:
                fixes.setdefault((failure.error_type, failure.signature), []).append(
                    PastFix(incident_id=inc.id, key=failure.key, at=note.at, note=note)
                )
    return out


def past_fix(journal: Journal, spec: PipelineSpec | None, error_type: str, message: str) -> PastFix | None:
    """The newest fix recorded for this error signature in this pipeline, for an alert being written now."""
    wanted = (error_type, signature(message))
    best: PastFix | None = None
    for inc in incidents(journal, spec):
        for note in inc.notes:
            matches = note.fix and any((f.error_type, f.signature) == wanted for f in inc.failures)
            if matches and (best is None or note.at > best.at):
                best = PastFix(incident_id=inc.id, key=inc.primary.key, at=note.at, note=note)
    return best


def find_incident(journal: Journal, spec: PipelineSpec | None, ref: int) -> Incident:
    """The incident with this id, or the one a run id belongs to (any run of its lineage)."""
    return find_in(incidents(journal, spec, all_pipelines=True), ref)


def find_in(found: Sequence[Incident], ref: int) -> Incident:
    """`find_incident` among incidents already read (the dashboard reads them from its run index)."""
    for inc in found:
        if inc.id == ref:
            return inc
    for inc in found:
        if ref in inc.runs:
            return inc
    raise NotFound(
        f"no incident {ref}: run {ref} did not fail and continues no failed run",
        fix="list incidents with `flywheel incidents`",
    )


def note_incident(
    journal: Journal,
    spec: PipelineSpec | None,
    ref: int,
    *,
    cause: str,
    fix: str,
    category: str | None,
    user: str,
    at: float | None = None,
) -> tuple[Incident, IncidentNoted]:
    """Journal an operator's finding on an incident (on the incident's run): who, when, cause and fix."""
    if not cause.strip() and not fix.strip() and not category:
        raise UsageError("a note needs --cause or --fix", fix='flywheel incident note ID --cause "..." --fix "..."')
    if category is not None and category not in {c.value for c in Cause}:
        raise UsageError(f"unknown category {category!r}", fix=f"use one of: {CAUSE_HELP}")
    incident = find_incident(journal, spec, ref)
    event = IncidentNoted(
        run_id=incident.id,
        at=time.time() if at is None else at,
        cause=cause.strip(),
        fix=fix.strip(),
        category=category,
        user=user,
    )
    journal.append(event)
    return incident, event


# ---------------------------------------------------------------------------------------------
# log lines around the error


TRACEBACK = "Traceback (most recent call last)"
_ERROR_LINE = re.compile(
    r"^\s*ERROR\b"  # flywheel's own last word on a failed step: `ERROR type: message` (entry.py, glue_entry.py)
    r"|^Traceback \(most recent call last\)"  # the head of a Python traceback
    r"|^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Fault)(?::|$)"  # its last line: `KeyError: 'x'`
    r"|[\s\[|]\s*(?:ERROR|CRITICAL|FATAL)\s*[\]|:-]"  # a logging record at ERROR level: `... [ERROR] ...`
)


def is_error_line(line: str) -> bool:
    """Whether a log line reports an error, whatever the failure: the markers `log_excerpt` falls back on
    when the failure's own text is not found, and what the log viewer marks. One home for the rule."""
    return bool(_ERROR_LINE.search(line))


@dataclass(frozen=True)
class LogExcerpt:
    path: str
    first_line: int | None  # 1-based number of lines[0] (None when only the file's tail was read)
    lines: tuple[str, ...]
    error_line: int | None  # 1-based number of the line that carries the error, when known
    error_index: int | None  # its index in `lines`, when found


def log_excerpt(
    path: str | os.PathLike[str] | None,
    error_type: str,
    message: str,
    *,
    before: int = 12,
    after: int = 6,
    max_bytes: int = 512 * 1024,
) -> LogExcerpt | None:
    """The lines of a failed attempt's log around its error (or its last lines when no error line is found).

    Reads at most the last `max_bytes` of the file: logs of long Glue steps are large and the error is
    near their end.
    """
    if path is None:
        return None
    file = Path(path)
    try:
        with file.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            start = max(0, size - max_bytes)
            handle.seek(start)
            raw = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = raw.splitlines()
    numbered = start == 0  # line numbers are unknown when the head of the file was not read
    if not numbered and lines:
        lines = lines[1:]  # a partial first line
    first_message_line = next((ln.strip() for ln in message.splitlines() if ln.strip()), "")[:80]
    needles = [n for n in (f"ERROR {error_type}", first_message_line, TRACEBACK, error_type) if n]
    index: int | None = None
    for needle in needles:
        for i in range(len(lines) - 1, -1, -1):
            if needle in lines[i]:
                index = i
                break
        if index is not None:
            break
    if index is None:  # not the failure's own text: the last line that reports any error
        index = next((i for i in range(len(lines) - 1, -1, -1) if is_error_line(lines[i])), None)
    if index is None:
        low, high = max(0, len(lines) - before - after), len(lines)
    else:
        low, high = max(0, index - before), min(len(lines), index + after + 1)
    return LogExcerpt(
        path=str(file),
        first_line=low + 1 if numbered else None,
        lines=tuple(lines[low:high]),
        error_line=index + 1 if numbered and index is not None else None,
        error_index=None if index is None else index - low,
    )


# ---------------------------------------------------------------------------------------------
# patterns over many incidents


_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")


def parse_since(text: str, now: float | None = None) -> float:
    """The epoch time `--since` means: `30d`, `12h`, `2w`, or a date `2025-01-31`."""
    now = time.time() if now is None else now
    match = _SINCE.match(text)
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[match.group(2)]
        return now - float(match.group(1)) * unit
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%d"))
    except ValueError:
        raise UsageError(
            f"--since {text!r} is not a period or a date", fix="write e.g. --since 30d, 12h, 2w or 2025-01-31"
        ) from None


@dataclass(frozen=True)
class RepeatOffender:
    """One problem met more than once: the same step failing with the same error signature."""

    key: StepKey
    error_type: str
    signature: str
    count: int
    incidents: tuple[int, ...]
    last_fix: str | None


@dataclass(frozen=True)
class IncidentSummary:
    since: float | None
    until: float
    incidents: tuple[Incident, ...]
    by_step: Mapping[str, int]
    by_cause: Mapping[str, int]
    by_env: Mapping[str, int]
    open_count: int
    mttr_seconds: float | None
    saved_wall_seconds: float
    saved_compute_seconds: float
    saved_dpu_hours: float | None
    repeat_offenders: tuple[RepeatOffender, ...]


def summarize(found: Iterable[Incident], *, since: float | None = None, now: float | None = None) -> IncidentSummary:
    """Failures by step, cause and environment; mean time to recovery; time saved; repeat offenders."""
    now = time.time() if now is None else now
    chosen = tuple(i for i in found if since is None or i.opened_at >= since)
    by_step: Counter[str] = Counter()
    for inc in chosen:
        for key in dict.fromkeys(f.key for f in inc.failures):
            by_step[str(key)] += 1
    by_cause = Counter(inc.cause.value for inc in chosen)
    by_env = Counter(inc.env for inc in chosen)
    recoveries = [i.recovery_seconds for i in chosen if i.recovery_seconds is not None]
    saved = [i.time_saved for i in chosen if i.time_saved is not None]
    dpus = [s.dpu_hours for s in saved if s.dpu_hours is not None]
    groups: dict[tuple[StepKey, str, str], list[Incident]] = {}
    for inc in chosen:
        for group in dict.fromkeys((f.key, f.error_type, f.signature) for f in inc.failures):
            groups.setdefault(group, []).append(inc)
    offenders = [
        RepeatOffender(
            key=key,
            error_type=error_type,
            signature=sig,
            count=len(incs),
            incidents=tuple(i.id for i in incs),
            last_fix=next((n.fix for i in reversed(incs) for n in reversed(i.notes) if n.fix), None),
        )
        for (key, error_type, sig), incs in groups.items()
        if len(incs) > 1
    ]
    offenders.sort(key=lambda o: (-o.count, str(o.key)))
    return IncidentSummary(
        since=since,
        until=now,
        incidents=chosen,
        by_step=dict(by_step.most_common()),
        by_cause=dict(by_cause.most_common()),
        by_env=dict(by_env.most_common()),
        open_count=sum(1 for i in chosen if i.status is IncidentStatus.OPEN),
        mttr_seconds=statistics.fmean(recoveries) if recoveries else None,
        saved_wall_seconds=sum(s.wall_seconds for s in saved),
        saved_compute_seconds=sum(s.compute_seconds for s in saved),
        saved_dpu_hours=sum(dpus) if dpus else None,
        repeat_offenders=tuple(offenders),
    )


# ---------------------------------------------------------------------------------------------
# JSON-ready views (for --json, the reports and the dashboard)


def _saved_dict(saved: TimeSaved | None) -> dict[str, float | None] | None:
    if saved is None:
        return None
    return {"wall_seconds": saved.wall_seconds, "compute_seconds": saved.compute_seconds, "dpu_hours": saved.dpu_hours}


def incident_dict(inc: Incident) -> dict[str, Any]:
    """An incident as plain JSON values."""
    return {
        "id": inc.id,
        "pipeline": inc.pipeline,
        "env": inc.env,
        "status": inc.status.value,
        "opened_at": inc.opened_at,
        "opened_by": inc.opened_by,
        "runs": list(inc.runs),
        "execution": inc.execution,
        "cause": inc.cause.value,
        "step": str(inc.primary.key),
        "error_type": inc.primary.error_type,
        "error_message": inc.primary.error_message,
        "hints": list(inc.primary.hints),
        "signature": inc.primary.signature,
        "signature_id": inc.primary.signature_id,
        "failures": [
            {
                "run_id": f.run_id,
                "key": str(f.key),
                "at": f.at,
                "error_type": f.error_type,
                "error_message": f.error_message,
                "attempts": f.attempts,
                "duration": f.duration,
                "exit_code": f.exit_code,
                "log_path": f.log_path,
                "cause": f.cause.value,
                "hints": list(f.hints),
                "signature": f.signature,
                "signature_id": f.signature_id,
            }
            for f in inc.failures
        ],
        "closed_by": inc.closed_by,
        "closed_at": inc.closed_at,
        "recovery_seconds": inc.recovery_seconds,
        "reused": [
            {"key": str(r.key), "source_run": r.source_run, "duration": r.duration, "dpu_hours": r.dpu_hours}
            for r in inc.reused
        ],
        "time_saved": _saved_dict(inc.time_saved),
        "notes": [
            {"at": n.at, "user": n.user, "cause": n.cause, "fix": n.fix, "category": n.category} for n in inc.notes
        ],
        "past_fixes": [
            {"incident_id": p.incident_id, "key": str(p.key), "at": p.at, "fix": p.note.fix, "user": p.note.user}
            for p in inc.past_fixes
        ],
        "resume_command": inc.resume_command if inc.status is IncidentStatus.OPEN else None,
    }


def summary_dict(summary: IncidentSummary) -> dict[str, Any]:
    return {
        "since": summary.since,
        "until": summary.until,
        "count": len(summary.incidents),
        "open": summary.open_count,
        "by_step": dict(summary.by_step),
        "by_cause": dict(summary.by_cause),
        "by_env": dict(summary.by_env),
        "mttr_seconds": summary.mttr_seconds,
        "time_saved": {
            "wall_seconds": summary.saved_wall_seconds,
            "compute_seconds": summary.saved_compute_seconds,
            "dpu_hours": summary.saved_dpu_hours,
        },
        "repeat_offenders": [
            {
                "key": str(o.key),
                "error_type": o.error_type,
                "signature": o.signature,
                "count": o.count,
                "incidents": list(o.incidents),
                "last_fix": o.last_fix,
            }
            for o in summary.repeat_offenders
        ],
        "incidents": [incident_dict(i) for i in summary.incidents],
    }
