"""A running run as server-sent events: its sections re-rendered when its state changes, and its logs' new lines.

The journal is the only source: every tick folds the run's events again (a run has tens of events, so
this costs well under a millisecond) and tails the log files its `StepStarted` events name. Sections
are rendered by the same code as the page (the report's graph and timeline, the page's step table),
so a live page and a reloaded page cannot disagree. The first message of every connection carries the
whole state and the tail of every log, so a reconnecting browser (EventSource retries by itself)
never misses or repeats a line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flywheel.journal import Journal, open_journal
from flywheel.notify import Redactor
from flywheel.reports import badge, dur
from flywheel.reports.run_charts import attempts, graph_svg, timeline_svg
from flywheel.state import RunStatus
from flywheel.ui.views import Catalog, load_run, read_tail, step_rows

MAX_CHUNK = 64 * 1024


def sse(event: str, data: Any) -> str:
    """One server-sent event; the JSON is on one line, so it is one `data:` field."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class LiveRun:
    """Follows one run for one connection: what was last sent, and how far each log was read."""

    def __init__(
        self,
        catalog: Catalog,
        run_id: int,
        *,
        render_steps: Callable[[list[Any]], str],
        redact: Redactor,
    ) -> None:
        self.catalog = catalog
        self.run_id = run_id
        self.render_steps = render_steps
        self.redact = redact
        self.journal: Journal = open_journal(catalog.home)
        try:
            self.session = catalog.session(self.journal, run_id)  # NotFound for a run that does not exist
        except BaseException:
            self.journal.close()
            raise
        self._last: tuple[Any, ...] | None = None
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, bytes] = {}

    def close(self) -> None:
        self.journal.close()

    def poll(self) -> tuple[list[str], bool]:
        """The events to send now, and whether the run is over (then the stream ends)."""
        state, events = load_run(self.journal, self.catalog.home, self.run_id)
        out: list[str] = []
        signature = (
            state.status,
            tuple(sorted((str(k), s.status, s.attempts, s.duration) for k, s in state.steps.items())),
        )
        spans = attempts(events, state)
        if signature != self._last:
            self._last = signature
            body: dict[str, Any] = {
                "status": state.status.value,
                "badge": badge(state.status.value),
                "took_text": dur(state.duration),
                "now": time.time(),
            }
            spec = self.session.spec if self.session else None
            if spec is not None:
                body["graph"] = graph_svg(spec, state, now=time.time())
                body["steps"] = self.render_steps(step_rows(spec, state))
                body["timeline"] = timeline_svg(spec, state, spans, time.time())
            body["attempts"] = [
                {"name": Path(s.log_path).name, "key": str(s.key), "attempt": s.attempt, "badge": badge(s.outcome)}
                for s in spans
                if s.log_path
            ]
            out.append(sse("state", body))
        for span in spans:
            if span.log_path:
                out += self._log(span.log_path, str(span.key), span.attempt, span.outcome)
        finished = state.status not in (RunStatus.RUNNING, RunStatus.UNFINISHED)
        if finished:
            out.append(sse("done", {"status": state.status.value}))
        return out, finished

    def _log(self, path: str, key: str, attempt: int, outcome: str) -> list[str]:
        name = Path(path).name
        if name not in self._offsets:
            lines, _, end = read_tail(path)
            self._offsets[name] = end
            text = [self.redact(line) for line in lines]
            return [sse("log", {"name": name, "key": key, "attempt": attempt, "reset": True, "lines": text})]
        try:
            with open(path, "rb") as handle:
                handle.seek(self._offsets[name])
                chunk = handle.read(MAX_CHUNK)
        except OSError:
            return []
        if not chunk:
            return []
        self._offsets[name] += len(chunk)
        data = self._partial.pop(name, b"") + chunk
        complete, _, rest = data.rpartition(b"\n")
        if rest:
            self._partial[name] = rest  # the rest of that line comes with the next read
        if not complete and not data.endswith(b"\n"):
            return []
        lines = [self.redact(line) for line in complete.decode("utf-8", "replace").split("\n")]
        return [sse("log", {"name": name, "key": key, "attempt": attempt, "reset": False, "lines": lines})]
