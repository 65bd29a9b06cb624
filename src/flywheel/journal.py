"""The run journal: an append-only SQLite event store.

Only events are stored. A `runs` table allocates run ids and indexes a run's pipeline and environment
(both immutable); a run's status is always folded from its events. WAL mode lets readers (`status`,
the dashboard) read while a runner appends. Durability: see `_sync_mode`. The schema carries a
version (`PRAGMA user_version`) and migrates forward on open.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flywheel.errors import BackendError, NotFound
from flywheel.events import Event, EventKind, RunStarted, event_from_body
from flywheel.killswitch import KillSwitch

SCHEMA_VERSION = 2

_MIGRATIONS: dict[int, str] = {
    1: """
        CREATE TABLE runs (
            run_id    INTEGER PRIMARY KEY AUTOINCREMENT,
            pipeline  TEXT NOT NULL,
            env       TEXT NOT NULL,
            created   REAL NOT NULL
        );
        CREATE INDEX runs_by_pipeline ON runs(pipeline, env, run_id);
        CREATE TABLE events (
            seq     INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id  INTEGER NOT NULL REFERENCES runs(run_id),
            kind    TEXT NOT NULL,
            step    TEXT,
            context TEXT,
            at      REAL NOT NULL,
            body    TEXT NOT NULL
        );
        CREATE INDEX events_by_run ON events(run_id, seq);
    """,
    2: """
        CREATE INDEX events_by_kind_step ON events(kind, step);
    """,
}


def _sync_mode() -> str:
    """NORMAL by default: in WAL mode a killed flywheel loses nothing, and a power loss can only drop the
    last events (their steps then look interrupted and rerun: never a false success). FULL adds an
    fsync per event for those who want every event to survive a power cut."""
    mode = os.environ.get("FLYWHEEL_JOURNAL_SYNC", "normal").upper()
    return mode if mode in ("NORMAL", "FULL", "EXTRA") else "NORMAL"


@dataclass(frozen=True)
class RunRow:
    run_id: int
    pipeline: str
    env: str
    created: float


class Journal:
    """Append and read events. Safe to share between threads of one process (writes are serialised)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={_sync_mode()}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise BackendError(
                f"the journal at {path} cannot be opened: {exc}",
                fix="check the file is a flywheel journal; restore it from backup or move it aside",
            ) from None
        self._lock = threading.Lock()
        self._kill = KillSwitch.from_environment()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        """Bring the schema up to date. The version is read inside the write transaction, so two
        processes opening a new journal at once migrate it once, not twice."""
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise BackendError(
                    f"the journal at {self.path} has schema version {version}, newer than this flywheel "
                    f"({SCHEMA_VERSION})",
                    fix="upgrade flywheel",
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in filter(str.strip, _MIGRATIONS[target].split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={target}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- writing -----------------------------------------------------------------------------

    def new_run(self, pipeline: str, env: str) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs(pipeline, env, created) VALUES (?, ?, ?)", (pipeline, env, time.time())
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def append(self, *events: Event) -> None:
        """Append events atomically, in order. Once this returns they are on disk."""
        rows = [
            (
                e.run_id,
                e.kind.value,
                e.key.step if e.key else None,
                e.key.context if e.key else None,
                e.at,
                json.dumps(e.to_body(), default=str, separators=(",", ":")),
            )
            for e in events
        ]
        if self._kill is not None:
            self._kill.before(events)
        with self._transaction() as db:
            db.executemany("INSERT INTO events(run_id, kind, step, context, at, body) VALUES (?, ?, ?, ?, ?, ?)", rows)
        if self._kill is not None:
            self._kill.after()

    # -- reading -----------------------------------------------------------------------------

    def events(self, run_id: int) -> list[Event]:
        rows = self._db.execute(
            "SELECT kind, run_id, at, body FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
        return [event_from_body(kind, rid, at, json.loads(body)) for kind, rid, at, body in rows]

    def events_of_runs(self, run_ids: Sequence[int]) -> dict[int, list[Event]]:
        out: dict[int, list[Event]] = {rid: [] for rid in run_ids}
        if not run_ids:
            return out
        marks = ",".join("?" * len(run_ids))
        rows = self._db.execute(
            f"SELECT kind, run_id, at, body FROM events WHERE run_id IN ({marks}) ORDER BY seq",
            tuple(run_ids),
        )
        for kind, rid, at, body in rows:
            out[rid].append(event_from_body(kind, rid, at, json.loads(body)))
        return out

    def run(self, run_id: int) -> RunRow:
        row = self._db.execute("SELECT run_id, pipeline, env, created FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(f"no run {run_id} in the journal at {self.path}", fix="list runs with `flywheel runs`")
        return RunRow(*row)

    def runs(self, pipeline: str | None = None, env: str | None = None, *, limit: int | None = None) -> list[RunRow]:
        """Runs, newest first."""
        clauses, args = [], []
        if pipeline is not None:
            clauses.append("pipeline = ?")
            args.append(pipeline)
        if env is not None:
            clauses.append("env = ?")
            args.append(env)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        tail = f"LIMIT {int(limit)}" if limit else ""
        rows = self._db.execute(
            f"SELECT run_id, pipeline, env, created FROM runs {where} ORDER BY run_id DESC {tail}", args
        ).fetchall()
        return [RunRow(*r) for r in rows]

    def latest_successes(self, pipeline: str, env: str) -> dict[tuple[str, str | None], tuple[int, Event]]:
        """The newest success-like event (succeeded, reused, marked) of every step key."""
        rows = self._db.execute(
            """
            SELECT e.kind, e.run_id, e.at, e.body, e.step, e.context FROM events e
            JOIN runs r ON r.run_id = e.run_id
            WHERE r.pipeline = ? AND r.env = ? AND e.kind IN (?, ?, ?)
            ORDER BY e.seq
            """,
            (pipeline, env, EventKind.STEP_SUCCEEDED, EventKind.STEP_REUSED, EventKind.STEP_MARKED),
        )
        out: dict[tuple[str, str | None], tuple[int, Event]] = {}
        for kind, rid, at, body, step, context in rows:
            out[(step, context)] = (rid, event_from_body(kind, rid, at, json.loads(body)))
        return out

    def run_started(self, run_id: int) -> RunStarted | None:
        row = self._db.execute(
            "SELECT kind, run_id, at, body FROM events WHERE run_id = ? AND kind = ? ORDER BY seq LIMIT 1",
            (run_id, EventKind.RUN_STARTED),
        ).fetchone()
        if row is None:
            return None
        event = event_from_body(row[0], row[1], row[2], json.loads(row[3]))
        assert isinstance(event, RunStarted)
        return event

    def descendants(self, run_id: int) -> list[tuple[int, int]]:
        """Every run that continues `run_id`, directly or through resumes of resumes, as (run, parent),
        in run order. Lineage lives in each `RunStarted`; no cap on how many runs came since."""
        rows = self._db.execute(
            """
            WITH RECURSIVE lineage(run_id, parent) AS (
                SELECT run_id, json_extract(body, '$.parent_run') FROM events
                WHERE kind = :kind AND json_extract(body, '$.parent_run') = :root
                UNION
                SELECT e.run_id, json_extract(e.body, '$.parent_run') FROM events e
                JOIN lineage l ON json_extract(e.body, '$.parent_run') = l.run_id
                WHERE e.kind = :kind
            )
            SELECT run_id, parent FROM lineage ORDER BY run_id
            """,
            {"kind": EventKind.RUN_STARTED, "root": run_id},
        ).fetchall()
        return [(int(r), int(p)) for r, p in rows]

    def find_run_by_external_id(self, external_id: str) -> int | None:
        row = self._db.execute(
            "SELECT run_id FROM events WHERE kind = ? AND json_extract(body, '$.external_id') = ? LIMIT 1",
            (EventKind.RUN_STARTED, external_id),
        ).fetchone()
        return None if row is None else int(row[0])


def open_journal(home: Path) -> Journal:
    return Journal(home / "journal.sqlite")
