"""The runbook's warnings as checks: verify before reusing, rerun what is stale, refuse to guess.

`gather` is the default fact-gathering hook of `runs.prepare`: before a plan reuses a step, its recorded
outputs are checked against what is there now (`invalid`), its code, parameters and inputs against what
it ran with (`stale`), and a resume where nothing changed since a failure carries a warning that the
same error is likely. State beyond repair (a run with no journal, outputs of several finished steps
gone) is refused with the fix: a full `flywheel run`.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel.app.policies import latest_successes
from flywheel.app.session import Session
from flywheel.disk import DISK_FULL
from flywheel.errors import PlanRefused
from flywheel.fingerprints import OutputFingerprinter, StepFingerprint, modified_after
from flywheel.journal import Journal
from flywheel.outputs import CheckStatus, OutputCheck, verify_record
from flywheel.planner import (
    Mode,
    PlanInputs,
    PlanRequest,
    Provenance,
    select,
)
from flywheel.spec import PipelineSpec, StepKey
from flywheel.state import RunState, RunStatus, StepState, StepStatus

log = logging.getLogger(__name__)

BUDGET_FLOOR_SECONDS = 0.1
BUDGET_SHARE = 0.01
"""Verifying a step may take max(1% of the time it took to produce its outputs, 100 ms)."""

TRANSIENT_TYPES = frozenset({"Timeout", "Killed", "Interrupted", "catalog-busy", DISK_FULL})
TRANSIENT_TEXT = re.compile(
    r"throttl|rate.?exceeded|too many requests|slow ?down|service ?unavailable|temporar|timed? ?out"
    r"|connection (reset|refused|aborted)|concurrent ?runs ?exceeded|try again",
    re.IGNORECASE,
)


def default_fingerprinter(session: Session) -> OutputFingerprinter:
    env = session.project.config.environment(session.env_name)
    return OutputFingerprinter(session.spec, session.env_name, env, session.home)


# ---------------------------------------------------------------------------------------------
# verification of one key's outputs


@dataclass(frozen=True)
class KeyVerification:
    key: StepKey
    checks: tuple[OutputCheck, ...]
    seconds: float
    budget: float

    @property
    def problem(self) -> str | None:
        bad = [c for c in self.checks if not c.ok]
        return "; ".join(f"{c.uri} {c.detail}" for c in bad) or None

    @property
    def vanished(self) -> bool:
        return any(c.status is CheckStatus.MISSING for c in self.checks)


def verify_key(
    fingerprinter: OutputFingerprinter, key: StepKey, records: Sequence[Mapping[str, Any]], produced_in: float = 0.0
) -> KeyVerification:
    """Check every recorded output of a key; log when it took longer than its budget."""
    began = time.perf_counter()
    params = fingerprinter.params(key)
    checks = tuple(verify_record(r, params) for r in records if "uri" in r)
    seconds = time.perf_counter() - began
    budget = max(BUDGET_SHARE * produced_in, BUDGET_FLOOR_SECONDS)
    if seconds > budget:
        log.info("verifying %s took %.3f s, over its budget of %.3f s", key, seconds, budget)
    return KeyVerification(key, checks, seconds, budget)


# ---------------------------------------------------------------------------------------------
# gathering plan inputs


def _refuse_full_refresh(message: str, details: tuple[str, ...] = (), earliest: int | None = None) -> PlanRefused:
    narrower = (
        f", or rebuild from the earliest lost step with `flywheel run --from-step {earliest}`" if earliest else ""
    )
    return PlanRefused(
        message,
        details=details,
        fix=f"start a full refresh with `flywheel run` (add --dry-run first to see it){narrower}; "
        "resuming would have to guess what the lost state held",
    )


def gather(session: Session, journal: Journal, request: PlanRequest, source: RunState | None) -> PlanInputs:
    """Facts for the planner: outputs that no longer verify, stale steps, warnings for the operator."""
    fp = default_fingerprinter(session)
    spec = session.spec
    skipped = select(spec, request).skip
    latest: dict[StepKey, Provenance] = {  # only the skipped keys may reuse a latest success: verify only them
        key: found
        for key, found in (latest_successes(journal, session.pipeline, session.env_name) if skipped else {}).items()
        if key in skipped
    }
    if source is not None and source.started is None and source.last_event_at is not None:
        raise _refuse_full_refresh(
            f"the journal of run {source.run_id} is incomplete (it has no start event), so flywheel cannot "
            "tell which of its steps finished"
        )
    if source is not None and request.mode is Mode.RESUME:
        _refuse_while_orphans_run(session, source)

    invalid: dict[StepKey, str] = {}
    vanished: dict[str, list[str]] = {}
    for key in spec.keys:
        records: Sequence[Mapping[str, Any]] = ()
        took = 0.0
        if source is not None and source.step(key).status.done:
            records, took = source.step(key).outputs, source.step(key).duration or 0.0
        elif key in latest:
            records, took = latest[key].outputs, latest[key].duration
        if not records:
            continue
        result = verify_key(fp, key, records, took)
        if result.problem:
            invalid[key] = result.problem
        if result.vanished:
            vanished.setdefault(key.step, []).append(f"{key}: {result.problem}")
    if request.mode is Mode.RESUME and len(vanished) >= 2:
        raise _refuse_full_refresh(
            f"the state of run {source.run_id if source else '?'} is beyond repair: outputs of "
            f"{len(vanished)} finished steps are gone",
            details=tuple(line for lines in vanished.values() for line in lines),
            earliest=min(spec.step(step_id).number for step_id in vanished),
        )

    stale: dict[StepKey, str] = {}
    current: dict[StepKey, StepFingerprint] = {}
    for key in spec.keys:
        step = source.step(key) if source is not None else None
        if step is None or step.status not in (StepStatus.SUCCEEDED, StepStatus.REUSED, StepStatus.FAILED):
            continue
        recorded = StepFingerprint.from_text(step.fingerprint)
        if recorded is None:
            continue
        current[key] = fp.fingerprint(key, fp.params(key))
        change = current[key].changes_since(recorded)
        if change is not None and step.status.done:
            stale[key] = change

    unchanged = unchanged_failures(session, fp, request, source, invalid, stale, current)
    return PlanInputs(
        source=source,
        latest=latest,
        invalid=invalid,
        stale=stale,
        warnings=tuple(unchanged.values()),
        unchanged_failures=tuple(unchanged),
    )


# ---------------------------------------------------------------------------------------------
# "did you fix the root cause?"


def is_transient(session: Session, step: StepState) -> bool:
    """Timeouts, kills, throttling and causes the pipeline calls `resource`: retrying may well work."""
    if step.error_type in TRANSIENT_TYPES:
        return True
    text = f"{step.error_type or ''}: {step.error_message or ''}"
    if TRANSIENT_TEXT.search(text):
        return True
    rules = session.spec.step(step.key.step).causes
    return any(rule.cause == "resource" and re.search(rule.match, text) for rule in rules)


def ancestors(spec: PipelineSpec, key: StepKey) -> set[StepKey]:
    """Every key a key depends on, directly or not."""
    out: set[StepKey] = set()
    frontier = list(spec.upstream_keys(key))
    while frontier:
        up = frontier.pop()
        if up not in out:
            out.add(up)
            frontier.extend(spec.upstream_keys(up))
    return out


def unchanged_failures(
    session: Session,
    fp: OutputFingerprinter,
    request: PlanRequest,
    source: RunState | None,
    invalid: Mapping[StepKey, str],
    stale: Mapping[StepKey, str],
    current: Mapping[StepKey, StepFingerprint],
) -> dict[StepKey, str]:
    """A warning per failed step that would rerun exactly as it failed: same code, parameters, raw
    inputs and settings, every upstream output reused unchanged, and nothing the step reads (a
    catalog, a configuration folder) modified since the run ended."""
    if request.mode is not Mode.RESUME or source is None:
        return {}
    warnings: dict[StepKey, str] = {}
    for key in source.failed_keys:
        step = source.step(key)
        if is_transient(session, step) or key not in current:
            continue
        recorded = StepFingerprint.from_text(step.fingerprint)
        if recorded is None or current[key].changes_since(recorded) is not None:
            continue
        ended = source.finished_at or source.last_event_at or 0.0
        if modified_after(fp.read_paths(key, fp.params(key)), ended):
            continue  # something the step reads was changed after the run: likely the fix
        ancestors_of = ancestors(session.spec, key)
        changed_upstream = [
            up
            for up in ancestors_of
            if not source.step(up).status.done or up in invalid or (up in stale and not request.reuse_stale)
        ]
        if changed_upstream:
            continue
        warnings[key] = (
            f"nothing changed since {key} failed in run {source.run_id} ({step.error_type}: "
            f"{_first_line(step.error_message)}): same code, parameters, inputs and settings, so the same "
            f"error is likely. Did you fix the root cause? (`flywheel logs {source.run_id} --step {key}`)"
        )
    return warnings


def _first_line(text: str | None, limit: int = 160) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# step processes left running by a runner that died


@dataclass(frozen=True)
class Orphan:
    pid: int
    group: int
    key: str


ORPHAN_WAIT_SECONDS = 6.0
"""How long a resume waits for a dead runner's steps to stop (the fork server stops them on its own)."""


def live_step_processes(home: Path, run_id: int) -> list[Orphan]:
    """Processes still writing an attempt log of `run_id` in this home (Linux `/proc`; else none).

    A step's output goes to its attempt's log, so a live process whose stdout or stderr is one of the
    run's logs is one of its steps (or a child of one), whether it was forked, exec'd or spawned by a
    shell command.
    """
    proc = Path("/proc")
    logs = str(home / "logs" / f"run-{run_id}") + os.sep
    found: dict[int, Orphan] = {}
    if not proc.is_dir():
        return []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for fd in ("1", "2"):
            try:
                target = os.readlink(entry / "fd" / fd)
                group = os.getpgid(int(entry.name))
            except OSError:
                continue
            if target.startswith(logs):
                key = Path(target).name.split(".attempt-")[0]
                found[int(entry.name)] = Orphan(int(entry.name), group, key)
                break
    return sorted(found.values(), key=lambda o: o.pid)


def _refuse_while_orphans_run(session: Session, source: RunState) -> None:
    """A runner killed with SIGKILL cannot stop its steps. Its fork server stops them when it notices,
    so wait a moment; a step still writing after that (its fork server died too) would race a rerun
    of the same outputs, so the resume is refused with the command that stops it."""
    if source.status is not RunStatus.INTERRUPTED or source.finished_at is not None:
        return  # a run that ended cleanly stopped its steps
    deadline = time.monotonic() + ORPHAN_WAIT_SECONDS
    orphans = live_step_processes(session.home, source.run_id)
    while orphans and time.monotonic() < deadline:
        time.sleep(0.1)
        orphans = live_step_processes(session.home, source.run_id)
    if orphans:
        groups = " ".join(f"-{g}" for g in sorted({o.group for o in orphans}))
        raise PlanRefused(
            f"run {source.run_id}'s runner died but {len(orphans)} of its step processes still run: "
            + ", ".join(f"{o.key} (pid {o.pid})" for o in orphans),
            fix=f"wait for them to end, or stop them with `kill -TERM -- {groups}`; then resume",
        )
