"""Live progress in a terminal: the run's tree, redrawn as its events arrive and as time passes.

Only the CLI imports this, and only when its output is a terminal; piped output keeps the plain lines
of `flywheel.render.ProgressPrinter`. The view is the same fold of events that `flywheel status` shows.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.text import Text

from flywheel.durations import duration
from flywheel.events import Event, RunFinished, RunInterrupted, RunStarted
from flywheel.render import RUN_STYLE, status_tree
from flywheel.spec import PipelineSpec
from flywheel.state import RunState, RunStatus, as_running, fold


class LiveProgress:
    """An observer drawing the run as a tree that refreshes a few times a second (elapsed times tick).

    Use it as a context manager around the run: the view starts with the run's first event and is
    removed when the run ends or the block exits, so the final status printed after it is not doubled.
    """

    name = "console"

    def __init__(self, console: Console, spec: PipelineSpec) -> None:
        self.console = console
        self.spec = spec
        self._events: list[Event] = []
        self._state: RunState | None = None
        self._began = time.time()
        self._lock = threading.Lock()
        self._live: Live | None = None

    def __enter__(self) -> LiveProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
            state = fold(event.run_id, self._events)
            self._state = as_running(state) if state.status is RunStatus.UNFINISHED else state
            if isinstance(event, RunStarted):
                self._began = event.at
                self._live = Live(self, console=self.console, refresh_per_second=4, transient=True)
                self._live.start()
            elif self._live is not None:
                self._live.refresh()
        if isinstance(event, RunFinished | RunInterrupted):
            self._stop()

    def _stop(self) -> None:
        with self._lock:
            live, self._live = self._live, None
        if live is not None:
            live.stop()

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        state = self._state
        if state is None:
            return
        now = time.time()
        header = Text.assemble(
            (f"run {state.run_id}", "bold"),
            f"  {self.spec.pipeline} · {state.started.env if state.started else ''} · ",
            (state.status.value, RUN_STYLE[state.status]),
            f" · {duration(now - self._began)}",
        )
        yield Group(header, status_tree(self.spec, state, now=now, live=state.status is RunStatus.RUNNING))
