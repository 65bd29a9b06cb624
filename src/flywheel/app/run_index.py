"""The run index: one digest per run, so pages over thousands of runs read rows instead of folding events.

The journal stays the one source of truth and only stores events; this is a cache of its fold, kept in
`<home>/index.sqlite` beside it. Deleting the file loses nothing: the next read rebuilds it.

It is brought up to date on every read, cheaply: the runs whose events have a `seq` above the index's
high-water mark (and runs created since, even with no event yet) are folded again, so an event appended
to an old run (an incident note) refreshes that run too. The index remembers the run and time of the
event at its mark; if the journal no longer holds that event (restored from a backup, replaced), the
index is rebuilt from scratch rather than trusted.

A digest holds what the run list, the runs grid and the incidents pages need: the folded status (a run
still unfinished is settled against its lock when read, never stored as crashed), its lineage, each
key's cell, and the incident facts (`incidents.RunFacts`).
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter

from flywheel.incidents import Incident, RunFacts, incidents_from, run_facts
from flywheel.journal import Journal
from flywheel.notify.overdue import overdue_steps
from flywheel.spec import PipelineSpec, StepKey
from flywheel.state import RunStatus, StepStatus, fold

INDEX_FILE = "index.sqlite"
DIGEST_VERSION = 1
"""Bumped whenever a digest's shape or meaning changes: an index of another version is rebuilt."""

HISTORY_RUNS = 50
"""How many recent runs of a pipeline and environment give a step its usual duration (as the overdue watch)."""


@dataclass(frozen=True)
class Cell:
    """One key of one run in the grid: its state, how many attempts, how long, and where a reuse came from."""

    key: StepKey
    status: StepStatus
    attempts: int = 0
    started_at: float | None = None
    duration: float | None = None
    produced_by: int | None = None


@dataclass(frozen=True)
class RunDigest:
    """A run, folded once: what every many-runs page shows of it."""

    run_id: int
    pipeline: str
    env: str
    created: float
    facts: RunFacts
    last_event_at: float | None
    failed: tuple[StepKey, ...] = ()
    cells: tuple[Cell, ...] = ()

    @property
    def status(self) -> RunStatus:
        return self.facts.status

    @property
    def parent_run(self) -> int | None:
        return self.facts.started.parent_run if self.facts.started else None

    @property
    def started_at(self) -> float:
        return self.facts.started.at if self.facts.started else self.created

    @property
    def duration(self) -> float | None:
        if self.facts.started is None:
            return None
        end = self.facts.finished_at or self.last_event_at
        return None if end is None else end - self.facts.started.at


_DIGEST = TypeAdapter(RunDigest)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS digests (
    run_id   INTEGER PRIMARY KEY,
    pipeline TEXT NOT NULL,
    env      TEXT NOT NULL,
    status   TEXT NOT NULL,
    parent   INTEGER,
    body     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS digests_by_pipeline ON digests(pipeline, env, run_id);
CREATE INDEX IF NOT EXISTS digests_by_status ON digests(status, run_id);
CREATE INDEX IF NOT EXISTS digests_by_parent ON digests(parent);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def digest_of(journal: Journal, run_ids: Sequence[int]) -> list[RunDigest]:
    """Fold these runs into digests (one read of their events)."""
    rows = {r.run_id: r for r in journal.runs_by_id(run_ids)}
    events = journal.events_of_runs(list(rows))
    out = []
    for run_id, row in rows.items():
        state = fold(run_id, events[run_id])
        cells = tuple(
            Cell(
                key=key,
                status=step.status,
                attempts=step.attempts,
                started_at=step.started_at,
                duration=step.duration,
                produced_by=step.produced_by if step.produced_by != run_id else None,
            )
            for key, step in state.steps.items()
        )
        out.append(
            RunDigest(
                run_id=run_id,
                pipeline=row.pipeline,
                env=row.env,
                created=row.created,
                facts=run_facts(run_id, events[run_id], state),
                last_event_at=state.last_event_at,
                failed=state.failed_keys,
                cells=cells,
            )
        )
    return out


class RunIndex:
    """The index of one home's journal. Open it per request, like the journal; `refresh` before reading."""

    def __init__(self, home: Path, journal: Journal) -> None:
        self.path = home / INDEX_FILE
        self.journal = journal
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RunIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT name, value FROM meta").fetchall())

    def refresh(self) -> int:
        """Bring the index up to the journal's last event; returns how many runs were folded again."""
        with self._writing() as db:
            meta = self._meta()
            mark = int(meta.get("seq", "0"))
            if meta.get("version") != str(DIGEST_VERSION) or not self._mark_still_in_journal(meta):
                db.execute("DELETE FROM digests")
                mark = 0
            (known_runs,) = db.execute("SELECT coalesce(max(run_id), 0) FROM digests").fetchone()
            changed, last = self.journal.runs_changed_after(mark, after_run=int(known_runs))
            if not changed and last is None:
                return 0
            for start in range(0, len(changed), 500):
                batch = digest_of(self.journal, changed[start : start + 500])
                db.executemany(
                    "INSERT OR REPLACE INTO digests (run_id, pipeline, env, status, parent, body) VALUES (?,?,?,?,?,?)",
                    [
                        (d.run_id, d.pipeline, d.env, d.status.value, d.parent_run, _DIGEST.dump_json(d).decode())
                        for d in batch
                    ],
                )
            if last is not None:
                seq, run_id, at = last
                db.executemany(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                    [("version", str(DIGEST_VERSION)), ("seq", str(seq)), ("mark", json.dumps([run_id, at]))],
                )
            return len(changed)

    def _mark_still_in_journal(self, meta: Mapping[str, str]) -> bool:
        if "seq" not in meta:
            return True
        run_id, at = json.loads(meta["mark"])
        return self.journal.event_at(int(meta["seq"])) == (run_id, at)

    # -- reading -------------------------------------------------------------------------------------

    def digests(
        self,
        *,
        pipeline: str | None = None,
        env: str | None = None,
        statuses: Sequence[RunStatus] = (),
        before: int | None = None,
        limit: int | None = None,
        ascending: bool = False,
    ) -> list[RunDigest]:
        """Digests, newest first (or oldest first), filtered in SQL."""
        clauses: list[str] = []
        args: list[object] = []
        for column, value in (("pipeline", pipeline), ("env", env)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if statuses:
            clauses.append(f"status IN ({','.join('?' * len(statuses))})")
            args.extend(s.value for s in statuses)
        if before is not None:
            clauses.append("run_id < ?")
            args.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "ASC" if ascending else "DESC"
        tail = f"LIMIT {int(limit)}" if limit else ""
        rows = self._db.execute(f"SELECT body FROM digests {where} ORDER BY run_id {order} {tail}", args)
        return [_DIGEST.validate_json(body) for (body,) in rows]

    def names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Every pipeline and every environment that has a run."""
        pipelines = tuple(r for (r,) in self._db.execute("SELECT DISTINCT pipeline FROM digests ORDER BY 1"))
        envs = tuple(r for (r,) in self._db.execute("SELECT DISTINCT env FROM digests ORDER BY 1"))
        return pipelines, envs

    def lineage(self, after: int = 0) -> dict[int, int]:
        """{run: parent} of every run after `after` that continues another (the index's copy of `Journal.lineage`)."""
        rows = self._db.execute("SELECT run_id, parent FROM digests WHERE parent IS NOT NULL AND run_id > ?", (after,))
        return {int(run): int(parent) for run, parent in rows}

    def statuses(self, run_ids: Sequence[int]) -> dict[int, RunStatus]:
        found: dict[int, RunStatus] = {}
        for start in range(0, len(run_ids), 500):
            chunk = list(run_ids[start : start + 500])
            rows = self._db.execute(
                f"SELECT run_id, status FROM digests WHERE run_id IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update({int(r): RunStatus(s) for r, s in rows})
        return found

    def incidents(self, spec: PipelineSpec | None = None) -> list[Incident]:
        """Every incident of every pipeline, oldest first: the incident projection over the stored facts."""
        return incidents_from((d.facts for d in self.digests(ascending=True)), spec)

    def usual_durations(self, pipeline: str, env: str, *, before_run: int) -> dict[StepKey, float]:
        """Each key's median successful duration over the last runs before `before_run` (as the overdue watch)."""
        seen: dict[StepKey, list[float]] = {}
        for digest in self.digests(pipeline=pipeline, env=env, before=before_run, limit=HISTORY_RUNS):
            for cell in digest.cells:
                if cell.status is StepStatus.SUCCEEDED and cell.produced_by is None and cell.duration is not None:
                    seen.setdefault(cell.key, []).append(cell.duration)
        return {key: statistics.median(values) for key, values in seen.items()}

    def overdue(self, digest: RunDigest, now: float | None = None) -> bool:
        """Is a running step of this run past 1.5x its usual time (the overdue watch's own rule)?"""
        running = {c.key: c.started_at for c in digest.cells if c.status is StepStatus.RUNNING and c.started_at}
        if not running:
            return False
        usual = self.usual_durations(digest.pipeline, digest.env, before_run=digest.run_id)
        clock = time.time() if now is None else now
        return bool(overdue_steps(usual, {k: v for k, v in running.items() if v is not None}, clock))
