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
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from flywheel.incidents import Incident, RunFacts, incidents_from, run_facts
from flywheel.journal import Journal
from flywheel.notify.overdue import overdue_steps
from flywheel.spec import PipelineSpec, StepKey
from flywheel.state import RunStatus, StepStatus, fold

INDEX_FILE = "index.sqlite"
DIGEST_VERSION = 3
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
    contexts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # as resolved, in declared order

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
_FACTS = TypeAdapter(RunFacts)

_INCIDENT_RUNS = """
WITH ends AS (
    SELECT run_id, status, LAG(status) OVER (PARTITION BY pipeline, env ORDER BY run_id) AS before
    FROM digests WHERE status = 'failed' OR (status = 'succeeded' AND parent IS NULL)
)
SELECT d.facts FROM digests d
WHERE d.parent IS NOT NULL OR d.run_id IN (SELECT run_id FROM ends WHERE status = 'failed' OR before = 'failed')
ORDER BY d.run_id
"""
"""The runs the incident projection can use: failed runs (they open or join incidents), runs that
continue another (they join, resolve), and a fresh success right after a failure of its pipeline and
environment (it supersedes what is open). A fresh success after another fresh success finds nothing
open (the first closed it), so the other ~90% of a healthy journal is never read."""

_CACHED: dict[tuple[Path, int, int], tuple[PipelineSpec | None, list[Incident]]] = {}
_CACHED_LOCK = threading.Lock()


@dataclass(frozen=True)
class Head:
    """The indexed columns of a digest: enough to filter and page without reading the digest."""

    run_id: int
    pipeline: str
    env: str
    status: RunStatus


_SCHEMA = """
CREATE TABLE IF NOT EXISTS digests (
    run_id   INTEGER PRIMARY KEY,
    pipeline TEXT NOT NULL,
    env      TEXT NOT NULL,
    status   TEXT NOT NULL,
    parent   INTEGER,
    notes    INTEGER NOT NULL,
    body     TEXT NOT NULL,
    facts    TEXT NOT NULL
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
                cells=_in_declared_order(cells, state.contexts),
                contexts=dict(state.contexts),
            )
        )
    return out


def _in_declared_order(cells: Sequence[Cell], contexts: Mapping[str, tuple[str, ...]]) -> tuple[Cell, ...]:
    """Steps in the order the run met them, a step's contexts in their resolved (declared) order, not in
    the order their parallel attempts happened to start."""
    steps = {step: i for i, step in enumerate(dict.fromkeys(c.key.step for c in cells))}

    def place(cell: Cell) -> tuple[int, int]:
        order = contexts.get(cell.key.step, ())
        return steps[cell.key.step], order.index(cell.key.context) if cell.key.context in order else len(order)

    return tuple(sorted(cells, key=place))


class RunIndex:
    """The index of one home's journal. Open it per request, like the journal; `refresh` before reading."""

    def __init__(self, home: Path, journal: Journal) -> None:
        self.path = home / INDEX_FILE
        self.journal = journal
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);")
        if self._meta().get("version") != str(DIGEST_VERSION):  # another shape: start again
            self._db.executescript("DROP TABLE IF EXISTS digests; DELETE FROM meta WHERE name IN ('seq', 'mark');")
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
        """Bring the index up to the journal's last event; returns how many runs were folded again.

        When a run's status, lineage or notes change, the incident generation goes up: the incident
        projection (cached per generation) is computed again only then, not for every step event."""
        with self._writing() as db:
            meta = self._meta()
            mark = int(meta.get("seq", "0"))
            generation = int(meta.get("incidents", "0"))
            if meta.get("version") != str(DIGEST_VERSION) or not self._mark_still_in_journal(meta):
                db.execute("DELETE FROM digests")
                mark, generation = 0, generation + 1
            (known_runs,) = db.execute("SELECT coalesce(max(run_id), 0) FROM digests").fetchone()
            changed, last = self.journal.runs_changed_after(mark, after_run=int(known_runs))
            if not changed and last is None:
                return 0
            for start in range(0, len(changed), 500):
                batch = digest_of(self.journal, changed[start : start + 500])
                marks = ",".join("?" * len(batch))
                before = {
                    int(r): (st, p, n)
                    for r, st, p, n in db.execute(
                        f"SELECT run_id, status, parent, notes FROM digests WHERE run_id IN ({marks})",
                        [d.run_id for d in batch],
                    )
                }
                rows = [
                    (
                        d.run_id,
                        d.pipeline,
                        d.env,
                        d.status.value,
                        d.parent_run,
                        len(d.facts.notes),
                        _DIGEST.dump_json(d).decode(),
                        _FACTS.dump_json(d.facts).decode(),
                    )
                    for d in batch
                ]
                if any(before.get(r[0]) != (r[3], r[4], r[5]) for r in rows):
                    generation += 1
                db.executemany(
                    "INSERT OR REPLACE INTO digests (run_id, pipeline, env, status, parent, notes, body, facts) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    rows,
                )
            settings = [("version", str(DIGEST_VERSION)), ("incidents", str(generation))]
            if last is not None:
                seq, run_id, at = last
                settings += [("seq", str(seq)), ("mark", json.dumps([run_id, at]))]
            db.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", settings)
            return len(changed)

    def _mark_still_in_journal(self, meta: Mapping[str, str]) -> bool:
        if "seq" not in meta:
            return True
        run_id, at = json.loads(meta["mark"])
        return self.journal.event_at(int(meta["seq"])) == (run_id, at)

    # -- reading -------------------------------------------------------------------------------------

    def digests(self, *, ascending: bool = False, **filters: Any) -> list[RunDigest]:
        """Digests, newest first (or oldest first), filtered in SQL (`pipeline`, `env`, `statuses`,
        `before`, `limit`)."""
        rows = self._select("body", ascending=ascending, **filters)
        return [_DIGEST.validate_json(body) for (body,) in rows]

    def heads(self, **filters: Any) -> list[Head]:
        """The indexed columns of the matching runs, newest first (no digest is read)."""
        rows = self._select("run_id, pipeline, env, status", **filters)
        return [Head(int(r), p, e, RunStatus(st)) for r, p, e, st in rows]

    def _select(
        self,
        columns: str,
        *,
        pipeline: str | None = None,
        env: str | None = None,
        statuses: Sequence[RunStatus] = (),
        before: int | None = None,
        limit: int | None = None,
        ascending: bool = False,
    ) -> list[tuple[Any, ...]]:
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
        return self._db.execute(
            f"SELECT {columns} FROM digests {where} ORDER BY run_id {order} {tail}", args
        ).fetchall()

    def digests_by_id(self, run_ids: Sequence[int]) -> dict[int, RunDigest]:
        found: dict[int, RunDigest] = {}
        for start in range(0, len(run_ids), 500):
            chunk = list(run_ids[start : start + 500])
            rows = self._db.execute(
                f"SELECT run_id, body FROM digests WHERE run_id IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update({int(r): _DIGEST.validate_json(body) for r, body in rows})
        return found

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
        """Every incident of every pipeline, oldest first: the incident projection over the stored facts
        of the runs it can use, computed once per incident generation (see `refresh`) in this process."""
        key = (self.path, int(self._meta().get("incidents", "0")), id(spec))
        with _CACHED_LOCK:
            cached = _CACHED.get(key)
        if cached is not None:
            return list(cached[1])
        rows = self._db.execute(_INCIDENT_RUNS)
        found = incidents_from((_FACTS.validate_json(facts) for (facts,) in rows), spec)
        with _CACHED_LOCK:
            for old in [k for k in _CACHED if k[0] == self.path and k[1] != key[1]]:
                del _CACHED[old]
            _CACHED[key] = (spec, found)  # the spec is held so that its id is not reused while cached
        return list(found)

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
