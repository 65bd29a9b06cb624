"""Overdue steps and stalled runs, and the ETA of running steps, from the history of step durations.

A step's usual duration is the median of its recent `StepSucceeded` durations in the same pipeline and
environment. A step is overdue when it has run longer than `factor` × that median and longer than
`minimum` seconds (short steps jitter; nobody wants an alert because a 4-second step took 7). A run has
stalled when no event arrived for `stall_seconds` while nothing running is within its usual time.

The watch is an observer with a daemon thread: it starts at `RunStarted`, wakes every `poll_seconds`,
and stops at the run's end event. No hook in the runner is needed, and the pure checks (`overdue_steps`,
`eta`) serve `flywheel status` and the dashboard too.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from flywheel.events import (
    Event,
    NotifierFailed,
    RunFinished,
    RunInterrupted,
    RunStarted,
    StepFailed,
    StepStarted,
    StepSucceeded,
)
from flywheel.journal import Journal
from flywheel.notify import (
    Composer,
    History,
    Message,
    MessageKind,
    Notifier,
    Redactor,
    duration_text,
)
from flywheel.spec import PipelineSpec, StepKey
from flywheel.state import RunState, StepStatus

log = logging.getLogger(__name__)

HISTORY_RUNS = 50


def duration_history(
    journal: Journal, pipeline: str, env: str, *, runs: int = HISTORY_RUNS, before_run: int | None = None
) -> dict[StepKey, list[float]]:
    """Measured durations of each step's successful attempts over the last `runs` runs, oldest first."""
    rows = [r for r in journal.runs(pipeline, env, limit=runs + 1) if before_run is None or r.run_id < before_run]
    ids = sorted(r.run_id for r in rows[:runs])
    out: dict[StepKey, list[float]] = {}
    for run_events in journal.events_of_runs(ids).values():
        for event in run_events:
            if isinstance(event, StepSucceeded):
                out.setdefault(event.key, []).append(event.duration)
    return out


def usual_durations(history: Mapping[StepKey, Sequence[float]]) -> dict[StepKey, float]:
    """The median is robust to the one run that waited an hour for capacity."""
    return {key: statistics.median(values) for key, values in history.items() if values}


def eta(journal: Journal, spec: PipelineSpec, state: RunState) -> dict[StepKey, float]:
    """When each running step of `state` should end (epoch seconds): its start plus its usual duration.

    Steps with no success in their history have no ETA. A time in the past means the step is late.
    """
    started = state.started
    if started is None:
        return {}
    running = {k: s for k, s in state.steps.items() if s.status is StepStatus.RUNNING and s.started_at is not None}
    if not running:
        return {}
    usual = usual_durations(duration_history(journal, started.pipeline, started.env, before_run=state.run_id))
    return {k: s.started_at + usual[k] for k, s in running.items() if k in usual and s.started_at is not None}


@dataclass(frozen=True)
class OverdueStep:
    key: StepKey
    elapsed: float
    usual: float


def overdue_steps(
    usual: Mapping[StepKey, float],
    running: Mapping[StepKey, float],
    now: float,
    *,
    factor: float = 1.5,
    minimum: float = 60.0,
) -> list[OverdueStep]:
    """Running steps (key -> start time) past `factor` × their usual duration and past `minimum` seconds."""
    out = []
    for key, began in running.items():
        elapsed = now - began
        typical = usual.get(key)
        if typical is not None and elapsed > max(minimum, factor * typical):
            out.append(OverdueStep(key, elapsed, typical))
    return out


class OverdueWatch:
    """An observer that alerts through the given channels when a step is overdue or the run stalls."""

    name = "overdue"

    def __init__(
        self,
        spec: PipelineSpec,
        history: History,
        composer: Composer,
        targets: Sequence[Notifier],
        *,
        redactor: Redactor | None = None,
        factor: float = 1.5,
        minimum: float = 60.0,
        stall_seconds: float = 1800.0,
        poll_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.history = history
        self.composer = composer
        self.targets = list(targets)
        self.redactor = redactor or Redactor()
        self.factor = factor
        self.minimum = minimum
        self.stall_seconds = stall_seconds
        self.poll_seconds = poll_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started: RunStarted | None = None
        self._usual: dict[StepKey, float] = {}
        self._running: dict[StepKey, float] = {}
        self._alerted: set[StepKey] = set()
        self._last_event = 0.0
        self._stall_alerted = False
        self.sent: list[Message] = []

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._last_event = event.at
            self._stall_alerted = False
            match event:
                case RunStarted():
                    self._begin(event)
                case StepStarted():
                    self._running[event.key] = event.at
                case RunFinished() | RunInterrupted():
                    self._running.clear()
                    self._stop.set()
                case StepSucceeded() | StepFailed():
                    self._running.pop(event.key, None)

    def _begin(self, started: RunStarted) -> None:
        self._started = started
        try:
            with self.history.journal() as journal:
                history = duration_history(journal, started.pipeline, started.env, before_run=started.run_id)
        except Exception:
            log.warning("overdue watch: cannot read step history; only stalls will be reported", exc_info=True)
            history = {}
        self._usual = usual_durations(history)
        self._stop.clear()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="flywheel-overdue", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check()
            except Exception:  # the watch must never take anything down with it
                log.warning("overdue watch failed", exc_info=True)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def check(self, now: float | None = None) -> list[Message]:
        """Look once; send and return the alerts due now (each step and each quiet period alerts once)."""
        now = self._clock() if now is None else now
        messages: list[Message] = []
        with self._lock:
            started = self._started
            if started is None:
                return []
            late = overdue_steps(self._usual, self._running, now, factor=self.factor, minimum=self.minimum)
            for item in late:
                if item.key not in self._alerted:
                    self._alerted.add(item.key)
                    messages.append(self._step_message(started, item))
            quiet = now - self._last_event
            all_late = all(k in {i.key for i in late} or k not in self._usual for k in self._running)
            if quiet > self.stall_seconds and all_late and not self._stall_alerted:
                self._stall_alerted = True
                messages.append(self._stall_message(started, quiet))
        for message in messages:
            self._deliver(message)
        return messages

    def _step_message(self, started: RunStarted, item: OverdueStep) -> Message:
        step = self.spec.by_id.get(item.key.step)
        number = f"step {step.number} " if step else "step "
        timeout = f"; it times out at {duration_text(step.timeout)}" if step and step.timeout else ""
        return Message(
            kind=MessageKind.OVERDUE,
            title=f"⏰ {started.pipeline} · {started.env} · run {started.run_id}: {number}{item.key} is overdue",
            lines=(
                f"{number}{item.key} has run {duration_text(item.elapsed)}; it usually takes "
                f"{duration_text(item.usual)}{timeout}",
                f"watch it: flywheel status {started.run_id}  ·  flywheel logs {started.run_id} --step "
                f"'{item.key}' --follow",
            ),
            pipeline=started.pipeline,
            env=started.env,
            run_id=started.run_id,
            step=str(item.key),
        )

    def _stall_message(self, started: RunStarted, quiet: float) -> Message:
        running = ", ".join(str(k) for k in self._running) or "nothing"
        return Message(
            kind=MessageKind.OVERDUE,
            title=f"⏰ {started.pipeline} · {started.env} · run {started.run_id} has made no progress",
            lines=(
                f"no step started or ended for {duration_text(quiet)} (running: {running})",
                f"check it: flywheel status {started.run_id}; stop it with Ctrl-C and "
                f"{self.composer.resume_command(started.run_id)} if it is stuck",
            ),
            pipeline=started.pipeline,
            env=started.env,
            run_id=started.run_id,
        )

    def _deliver(self, message: Message) -> None:
        self.sent.append(message)
        for target in self.targets:
            try:
                target.send(message)
            except Exception as exc:  # like runner.emit: log it, journal it, carry on
                error = self.redactor(str(exc))
                log.warning("notifier %s failed: %s", target.name, error)
                try:
                    with self.history.journal() as journal:
                        journal.append(
                            NotifierFailed(run_id=message.run_id, at=time.time(), notifier=target.name, error=error)
                        )
                except Exception:
                    log.warning("cannot journal the failure of notifier %s", target.name, exc_info=True)


def running_since(state: RunState) -> dict[StepKey, float]:
    """Running steps of a folded run and when each started (for `overdue_steps` outside a runner)."""
    return {k: s.started_at for k, s in state.steps.items() if s.status is StepStatus.RUNNING and s.started_at}
