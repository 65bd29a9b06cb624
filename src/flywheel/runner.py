"""Carry out a plan: independent steps and contexts in parallel, retries with backoff, timeouts,
and a clean stop on Ctrl-C or SIGTERM. Every fact goes to the journal before anyone is told about it.

The runner never dies with a step: a crash, a kill or a timeout of a step is a failed attempt.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel.errors import BackendError
from flywheel.events import (
    ContextsResolved,
    Event,
    NotifierFailed,
    RunFinished,
    RunInterrupted,
    RunOutcome,
    RunStarted,
    StepAttached,
    StepFailed,
    StepReused,
    StepSkipped,
    StepStarted,
    StepSucceeded,
    masked,
)
from flywheel.executors.base import Attempt, Executor, Outcome
from flywheel.invocation import StepInvocation
from flywheel.journal import Journal
from flywheel.params import resolve_outputs, resolve_params
from flywheel.planner import Action, Plan
from flywheel.spec import EnvironmentSpec, PipelineSpec, StepKey
from flywheel.state import StepStatus, as_crashed, fold

log = logging.getLogger(__name__)

Observer = Callable[[Event], None]
RECORDING_ERROR = "RecordingError"
"""A step's error type when flywheel itself, not the step, failed around it."""


@dataclass(frozen=True)
class Overrides:
    """One-run overrides: resources from `--set STEP.timeout=...`, the engine from `--engine` (neither is
    part of a fingerprint: they change how a step computes, not what)."""

    timeouts: Mapping[str, float] = field(default_factory=dict)
    resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    engine: str | None = None


class Fingerprinter:
    """Hooks for what a step depends on and what it produced; the default records nothing."""

    def step_fingerprint(self, key: StepKey, params: Mapping[str, Any]) -> str | None:
        return None

    def output_records(
        self,
        key: StepKey,
        declared: Sequence[str],
        reported: Sequence[Mapping[str, Any]],
        params: Mapping[str, Any],
    ) -> tuple[Mapping[str, Any], ...]:
        return tuple({"uri": uri} for uri in declared) + tuple(reported)


LINEAGE_LOOKBACK = 20
"""How many runs up the lineage a step's unfinished backend runs are looked for."""


@dataclass
class Runner:
    spec: PipelineSpec
    env_name: str
    env: EnvironmentSpec
    home: Path
    journal: Journal
    executor: Executor
    observers: Sequence[Observer] = ()
    fingerprinter: Fingerprinter = field(default_factory=Fingerprinter)
    overrides: Overrides = field(default_factory=Overrides)
    max_parallel: int | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    redact: Callable[[str], str] | None = None
    """Masks secret values in what is journaled (and so in what observers see): see `flywheel.redaction`."""
    _sleep: Callable[[float], bool] | None = None
    _parents: dict[int, int | None] = field(default_factory=dict)  # run -> the run it continues

    @property
    def _pythonpath(self) -> tuple[str, ...]:
        source = self.spec.source_path
        return (str(Path(source).resolve().parent),) if source else ()

    def _unfinished_backend_runs(self, run_id: int, key: StepKey) -> tuple[str, ...]:
        """The backend run ids of `key` journaled by the runs this one continues, in attempts that never
        ended (newest first); the walk up the lineage stops at the first run where `key` ended."""
        found: list[str] = []
        if run_id not in self._parents:  # once per run, not once per key
            started = self.journal.run_started(run_id)
            self._parents[run_id] = started.parent_run if started else None
        parent = self._parents[run_id]
        for _ in range(LINEAGE_LOOKBACK):
            if parent is None:
                break
            state = as_crashed(fold(parent, self.journal.events(parent)))
            step = state.steps.get(key)
            if step is not None and step.status in (StepStatus.SUCCEEDED, StepStatus.FAILED):
                break
            if step is not None and step.status is StepStatus.INTERRUPTED and step.external_id:
                found.append(step.external_id)
            parent = state.started.parent_run if state.started else None
        return tuple(found)

    def emit(self, *events: Event) -> None:
        """Journal first, then observers; a failing observer is journaled and never fails the run.

        Secret values are masked before either sees an event."""
        if self.redact:  # a redactor with no secret to mask (none configured or set) costs nothing
            events = tuple(masked(event, self.redact) for event in events)
        try:
            self.journal.append(*events)
        except BackendError:
            # a journal that cannot record (a full disk): stop the other steps now rather than wait for
            # work nobody could know finished; they show as interrupted and a resume reruns them
            self.cancel.set()
            raise
        for event in events:
            for observer in self.observers:
                try:
                    observer(event)
                except Exception as exc:  # observers are plug-ins: never let one break a run
                    name = getattr(observer, "name", type(observer).__name__)
                    log.warning("notifier %s failed: %s", name, exc)
                    if not isinstance(event, NotifierFailed):
                        failed = NotifierFailed(run_id=event.run_id, at=time.time(), notifier=str(name), error=str(exc))
                        self.journal.append(failed if self.redact is None else masked(failed, self.redact))

    def execute(self, plan: Plan, started: RunStarted) -> RunOutcome | None:
        """Run the plan under `started.run_id`; return the outcome, or None when interrupted."""
        run_id = started.run_id
        now = time.time()
        first: list[Event] = [started]
        first += [
            ContextsResolved(run_id=run_id, at=now, step=s.id, contexts=tuple(s.contexts))
            for s in self.spec.steps
            if s.contexts
        ]
        for decision in plan.decisions:
            key = decision.key
            if decision.action is Action.REUSE and decision.source is not None:
                src = decision.source
                first.append(
                    StepReused(
                        run_id=run_id,
                        at=now,
                        step=key.step,
                        context=key.context,
                        source_run=src.produced_by,
                        reason=decision.reason,
                        duration=src.duration,
                        outputs=src.outputs,
                        fingerprint=src.fingerprint,
                        stale_kept=decision.stale_kept,
                        dpu_hours=src.dpu_hours,
                    )
                )
            elif decision.action is Action.SKIP:
                first.append(
                    StepSkipped(
                        run_id=run_id,
                        at=now,
                        step=key.step,
                        context=key.context,
                        reason=decision.reason,
                        forced=plan.request.force,
                    )
                )
        self.emit(*first)
        try:
            return self._schedule(plan, run_id)
        finally:
            self.executor.close()

    # -- scheduling ----------------------------------------------------------------------------

    def _schedule(self, plan: Plan, run_id: int) -> RunOutcome | None:
        """Start each key once all its upstream keys that run in this plan have succeeded.

        Dependency counters keep this linear in the size of the graph; a failure blocks only its own
        downstream, so independent work (the other split job, the other context) still finishes.
        """
        to_run = plan.keys(Action.RUN)
        order = {key: i for i, key in enumerate(to_run)}
        waiting_on = {key: {u for u in self.spec.upstream_keys(key) if u in order} for key in to_run}
        children: dict[StepKey, list[StepKey]] = {key: [] for key in to_run}
        for key, ups in waiting_on.items():
            for up in ups:
                children[up].append(key)
        ready = sorted((k for k, ups in waiting_on.items() if not ups), key=order.__getitem__)
        failed: set[StepKey] = set()
        blocked: set[StepKey] = set()
        limit = max(1, self.max_parallel or self.env.max_parallel)
        running: dict[Future[Outcome | None], StepKey] = {}

        def block_downstream(key: StepKey) -> None:
            stack = list(children[key])
            while stack:
                child = stack.pop()
                if child not in blocked:
                    blocked.add(child)
                    stack.extend(children[child])

        with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="flywheel-step") as pool:
            while ready or running:
                while ready and len(running) < limit and not self.cancel.is_set():
                    key = ready.pop(0)
                    running[pool.submit(self._run_key, key, run_id)] = key
                if not running:
                    break
                done, _ = wait(running, timeout=0.25, return_when=FIRST_COMPLETED)
                for future in done:
                    key = running.pop(future)
                    outcome = future.result()
                    if outcome is not None and outcome.succeeded:
                        for child in children[key]:
                            waiting_on[child].discard(key)
                            if not waiting_on[child] and child not in blocked:
                                ready.append(child)
                        ready.sort(key=order.__getitem__)
                    elif outcome is not None:
                        failed.add(key)
                        block_downstream(key)
                if self.cancel.is_set():
                    ready.clear()
        if self.cancel.is_set():
            self.emit(RunInterrupted(run_id=run_id, at=time.time(), reason="stopped by signal"))
            return None
        if failed or blocked:
            result = RunOutcome.FAILED
        else:
            result = RunOutcome.SUCCEEDED if plan.complete else RunOutcome.PARTIAL
        self.emit(RunFinished(run_id=run_id, at=time.time(), outcome=result))
        return result

    def _wait(self, seconds: float) -> bool:
        """Sleep between attempts; False when cancelled meanwhile."""
        if self._sleep is not None:
            return self._sleep(seconds)
        return not self.cancel.wait(seconds)

    def _run_key(self, key: StepKey, run_id: int) -> Outcome | None:
        """Run one key. When flywheel's own work around the step fails (reading its code for the
        fingerprint, checking what it wrote), that step fails with the cause; the run goes on with
        the independent work and ends failed and resumable, as for any failed step."""
        progress: dict[str, Any] = {"attempt": 1, "doing": "prepare this step"}
        try:
            return self._attempt_key(key, run_id, progress)
        except Exception as exc:
            log.debug("flywheel failed around step %s", key, exc_info=True)
            message = (
                f"flywheel could not {progress['doing']}: {type(exc).__name__}: {exc}. "
                "Fix the cause, then resume the run"
            )
            self.emit(
                StepFailed(
                    run_id=run_id,
                    at=time.time(),
                    step=key.step,
                    context=key.context,
                    attempt=progress["attempt"],
                    error_type=RECORDING_ERROR,
                    error_message=message,
                )
            )
            return Outcome(succeeded=False, error_type=RECORDING_ERROR, error_message=message)

    def _attempt_key(self, key: StepKey, run_id: int, progress: dict[str, Any]) -> Outcome | None:
        step = self.spec.step(key.step)
        params = resolve_params(self.spec, key, self.env_name, self.env, str(self.home), engine=self.overrides.engine)
        resources = dict(step.resources.model_dump(exclude_none=True))
        resources.update(self.overrides.resources.get(step.id, {}))
        if "memory" in resources:
            params["memory_limit"] = resources["memory"]
        if "threads" in resources:
            params["threads"] = resources["threads"]
        timeout = self.overrides.timeouts.get(step.id, step.timeout)
        fingerprint = self.fingerprinter.step_fingerprint(key, params)
        declared = resolve_outputs(self.spec, key, params)
        policy = step.retry
        outcome: Outcome | None = None
        for attempt_no in range(1, policy.attempts + 1):
            if self.cancel.is_set():
                return None
            progress.update(attempt=attempt_no, doing="run this step")
            log_path = self.home / "logs" / f"run-{run_id}" / f"{key}.attempt-{attempt_no}.log"
            invocation = StepInvocation(
                pipeline=self.spec.pipeline,
                step=key.step,
                context=key.context,
                run_id=run_id,
                attempt=attempt_no,
                env=self.env_name,
                job=step.job or "",
                params=params,
            )
            began = time.time()
            self.emit(
                StepStarted(
                    run_id=run_id,
                    at=began,
                    step=key.step,
                    context=key.context,
                    attempt=attempt_no,
                    log_path=str(log_path),
                    fingerprint=fingerprint,
                )
            )

            def attached(external_id: str, _attempt: int = attempt_no) -> None:
                self.emit(
                    StepAttached(
                        run_id=run_id,
                        at=time.time(),
                        step=key.step,
                        context=key.context,
                        attempt=_attempt,
                        external_id=external_id,
                    )
                )

            outcome = self.executor.execute(
                Attempt(
                    invocation=invocation,
                    log_path=log_path,
                    timeout=timeout,
                    command=step.command,
                    resources=resources,
                    on_attached=attached,
                    pythonpath=self._pythonpath,
                    journaled_runs=self._unfinished_backend_runs(run_id, key) if attempt_no == 1 else (),
                ),
                self.cancel,
            )
            ended = time.time()
            if outcome.cancelled:
                return None  # the run-level interruption event closes it; the step stays interrupted
            if outcome.succeeded:
                progress["doing"] = "record the outputs of this step (it finished)"
                records = self.fingerprinter.output_records(key, declared, outcome.outputs, params)
                self.emit(
                    StepSucceeded(
                        run_id=run_id,
                        at=ended,
                        step=key.step,
                        context=key.context,
                        attempt=attempt_no,
                        started_at=began,
                        duration=ended - began,
                        outputs=records,
                        fingerprint=fingerprint,
                        dpu_hours=outcome.dpu_hours,
                    )
                )
                return outcome
            retry = attempt_no < policy.attempts and not self.cancel.is_set()
            self.emit(
                StepFailed(
                    run_id=run_id,
                    at=ended,
                    step=key.step,
                    context=key.context,
                    attempt=attempt_no,
                    started_at=began,
                    duration=ended - began,
                    error_type=outcome.error_type or "Error",
                    error_message=outcome.error_message or "",
                    exit_code=outcome.exit_code,
                    will_retry=retry,
                )
            )
            if not retry:
                break
            delay = policy.backoff_seconds * policy.backoff_multiplier ** (attempt_no - 1)
            delay *= 1 + random.uniform(-policy.jitter, policy.jitter)
            if not self._wait(max(0.0, delay)):
                return None
        return outcome
