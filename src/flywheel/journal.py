"""The run journal: an append-only SQLite event store.

Only events are stored. A `runs` table allocates run ids and indexes a run's pipeline and environment
(both immutable); a run's status is always folded from its events. WAL mode lets readers (`status`,
the dashboard) read while a runner appends. Durability: see `_sync_mode`. The schema carries a
version (`PRAGMA user_version`) and migrates forward on open.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from flywheel import disk
from flywheel.disk import why_writes_fail
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


F = TypeVar("F", bound=Callable[..., Any])


def journal_error(path: Path, exc: sqlite3.Error) -> BackendError:
    """What a SQLite error means for the operator, with the fix: the journal is never left half-written
    (each append is one transaction), so every one of these ends with the journal as it was."""
    text = str(exc)
    low = text.lower()
    if "readonly" in low or "read-only" in low:
        return BackendError(
            f"the journal at {path} is read-only ({text}): nothing was recorded",
            fix="make it writable again (`chattr -i`, `chmod u+w`, a read-write mount), or work on a copy "
            "with --home; read-only commands (status, runs, logs) still work",
        )
    if _is_write_failure(exc):
        return BackendError(
            f"the journal at {path} cannot be written ({text}: {why_writes_fail(path.parent)}); "
            "it holds every event before this one",
            fix=f"{disk.FIX}, then `flywheel resume`",
        )
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return BackendError(
            f"the journal at {path} is damaged ({text})",
            fix="`flywheel journal check` says what is readable; `flywheel journal restore` puts back the "
            "latest backup (taken at the end of every run) and says which runs it lacks",
        )
    return BackendError(f"the journal at {path} failed: {text}", fix="check the disk and the file; then retry")


def _is_write_failure(exc: sqlite3.Error) -> bool:
    """A write refused by the disk: SQLITE_FULL, or an I/O error on writing or growing a file (a file-size
    limit gives EFBIG, which SQLite reports as a plain "disk I/O error")."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return "disk is full" in str(exc).lower() or name in _WRITE_ERRORS


_WRITE_ERRORS = frozenset({"SQLITE_FULL", "SQLITE_IOERR_WRITE", "SQLITE_IOERR_SHMSIZE", "SQLITE_IOERR_TRUNCATE"})


def _translated(method: F) -> F:
    """SQLite errors leave a journal method as a `BackendError` naming the problem and the fix."""

    @functools.wraps(method)
    def wrapper(self: Journal, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise journal_error(self.path, exc) from None

    return wrapper  # type: ignore[return-value]


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
        if path.parent.exists() and not path.parent.is_dir():
            raise BackendError(
                f"the flywheel home {path.parent} is a file, not a folder",
                fix="point --home or $FLYWHEEL_HOME at a folder (or move that file aside)",
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(
                f"the flywheel home {path.parent} cannot be created: {exc.strerror}",
                fix="point --home or $FLYWHEEL_HOME at a folder you can write",
            ) from None
        try:
            self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={_sync_mode()}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            if "malformed" in str(exc).lower() or "readonly" in str(exc).lower() or _is_write_failure(exc):
                raise journal_error(path, exc) from None
            raise BackendError(
                f"the journal at {path} cannot be opened: {exc}",
                fix="check the file is a flywheel journal; `flywheel journal restore` puts back the latest "
                "backup, or move it aside",
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
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    # -- writing -----------------------------------------------------------------------------

    @_translated
    def new_run(self, pipeline: str, env: str) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs(pipeline, env, created) VALUES (?, ?, ?)", (pipeline, env, time.time())
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    @_translated
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

    @_translated
    def events(self, run_id: int) -> list[Event]:
        rows = self._db.execute(
            "SELECT kind, run_id, at, body FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
        return [event_from_body(kind, rid, at, json.loads(body)) for kind, rid, at, body in rows]

    @_translated
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

    @_translated
    def run(self, run_id: int) -> RunRow:
        row = self._db.execute("SELECT run_id, pipeline, env, created FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(f"no run {run_id} in the journal at {self.path}", fix="list runs with `flywheel runs`")
        return RunRow(*row)

    @_translated
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

    @_translated
    def runs_by_id(self, run_ids: Sequence[int]) -> list[RunRow]:
        """These runs' rows, in run-id order (the ones that exist)."""
        out: list[RunRow] = []
        for start in range(0, len(run_ids), 500):
            chunk = list(run_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            out.extend(
                RunRow(*r)
                for r in self._db.execute(
                    f"SELECT run_id, pipeline, env, created FROM runs WHERE run_id IN ({marks}) ORDER BY run_id", chunk
                )
            )
        return out

    @_translated
    def runs_changed_after(self, seq: int, *, after_run: int = 0) -> tuple[list[int], tuple[int, int, float] | None]:
        """The runs with an event after `seq` or created after run `after_run`, and the last event as
        (seq, run, at): what a cache of the fold must fold again to catch up (`app.run_index`)."""
        touched = {r for (r,) in self._db.execute("SELECT DISTINCT run_id FROM events WHERE seq > ?", (seq,))}
        touched |= {r for (r,) in self._db.execute("SELECT run_id FROM runs WHERE run_id > ?", (after_run,))}
        last = self._db.execute("SELECT seq, run_id, at FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return sorted(touched), (
            None if last is None or last[0] <= seq else (int(last[0]), int(last[1]), float(last[2]))
        )

    @_translated
    def event_at(self, seq: int) -> tuple[int, float] | None:
        """The run and time of the event numbered `seq`, if the journal holds it."""
        row = self._db.execute("SELECT run_id, at FROM events WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else (int(row[0]), float(row[1]))

    @_translated
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

    @_translated
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

    @_translated
    def lineage(self, *, after: int = 0) -> dict[int, int]:
        """Every run after `after` that continues another, as {run: parent}: one read of their start
        events (a run's descendants always come after it, so a page of recent runs reads only those)."""
        (last,) = self._db.execute("SELECT coalesce(max(run_id), 0) FROM runs").fetchone()
        # a few recent runs: walk their events by run id; most of the journal: read only start events
        index = "events_by_run" if last - after < 2000 else "events_by_kind_step"
        rows = self._db.execute(
            f"SELECT run_id, json_extract(body, '$.parent_run') FROM events INDEXED BY {index} "
            "WHERE run_id > ? AND kind = ? AND json_extract(body, '$.parent_run') IS NOT NULL",
            (after, EventKind.RUN_STARTED),
        ).fetchall()
        return {int(run): int(parent) for run, parent in rows}

    @_translated
    def find_run_by_external_id(self, external_id: str) -> int | None:
        row = self._db.execute(
            "SELECT run_id FROM events WHERE kind = ? AND json_extract(body, '$.external_id') = ? LIMIT 1",
            (EventKind.RUN_STARTED, external_id),
        ).fetchone()
        return None if row is None else int(row[0])


def open_journal(home: Path, *, create: bool = True) -> Journal:
    """The journal of a home. Read-only commands pass `create=False`: a mistyped home then says that
    no journal is there instead of silently making an empty one."""
    path = home / "journal.sqlite"
    if not create and not path.exists():
        if home.exists() and not home.is_dir():
            raise BackendError(
                f"the flywheel home {home} is a file, not a folder",
                fix="point --home or $FLYWHEEL_HOME at a folder (or move that file aside)",
            )
        raise NotFound(
            f"no flywheel journal at {home}",
            fix="check --home / $FLYWHEEL_HOME (runs are journaled in the home they ran in), "
            "or start a run with `flywheel run`",
        )
    return Journal(path)


# ---------------------------------------------------------------------------------------------
# the safety net: integrity check, rotating backups, restore

BACKUPS = "backups"
KEEP_BACKUPS = 3


def check_journal(path: Path) -> tuple[str, ...]:
    """SQLite's `quick_check` of a journal file: () when it is sound, else what is wrong (read-only)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute("PRAGMA quick_check").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return (str(exc),)
    return tuple(str(r[0]) for r in rows if r[0] != "ok")


def backup_journal(home: Path, *, keep: int = KEEP_BACKUPS) -> Path:
    """Copy the journal with SQLite's online backup API (consistent while others read or append) into
    `home/backups/`, keeping the newest `keep` copies.

    The copy is written under a temporary name and renamed when complete: a backup cut short (a full
    disk) is removed and never taken for the newest, and no older backup is dropped for it."""
    folder = home / BACKUPS
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"journal-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 1_000_000_000:09d}.sqlite"
    partial = target.with_suffix(".partial")
    source = sqlite3.connect(home / "journal.sqlite")
    try:
        copy = sqlite3.connect(partial)
        try:
            # no fsync for the copy (tens of ms per run on a busy disk): a copy torn by a crash fails
            # its check at restore, which then names the older backups to use instead
            copy.execute("PRAGMA synchronous=OFF")
            copy.execute("PRAGMA journal_mode=OFF")
            source.backup(copy)
        finally:
            copy.close()
        os.replace(partial, target)
    finally:
        source.close()
        partial.unlink(missing_ok=True)
    for old in list_backups(home)[keep:]:
        old.unlink(missing_ok=True)
    return target


def list_backups(home: Path) -> list[Path]:
    """Backups of a home's journal, newest first."""
    folder = home / BACKUPS
    return sorted(folder.glob("journal-*.sqlite"), reverse=True) if folder.is_dir() else []


@dataclass(frozen=True)
class Restored:
    backup: Path
    moved_aside: Path | None
    runs_in_backup: tuple[int, ...]
    runs_lost: tuple[int, ...]  # in the damaged journal (as far as it could be read) but not in the backup
    unreadable: bool  # the damaged journal's runs could not be listed at all


def _run_ids(path: Path) -> tuple[int, ...] | None:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return tuple(int(r[0]) for r in db.execute("SELECT run_id FROM runs ORDER BY run_id"))
        finally:
            db.close()
    except sqlite3.Error:
        return None


def restore_journal(home: Path, backup: Path | None = None) -> Restored:
    """Put a backup in place of the journal (the current file is moved aside, never deleted) and say
    which runs the backup lacks."""
    backups = list_backups(home)
    chosen = backup or (backups[0] if backups else None)
    if chosen is None or not chosen.exists():
        raise NotFound(
            f"no journal backup in {home / BACKUPS}" if chosen is None else f"no backup at {chosen}",
            fix="backups are taken at the end of every run; without one, move the damaged journal aside "
            "and start again with `flywheel run`",
        )
    if check_journal(chosen):
        raise BackendError(f"the backup {chosen} is damaged too", fix="name an older one with --from")
    path = home / "journal.sqlite"
    current = _run_ids(path) if path.exists() else ()
    kept = _run_ids(chosen) or ()
    aside = None
    if path.exists():
        aside = path.with_name(f"journal.sqlite.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
    source = sqlite3.connect(chosen)
    try:
        copy = sqlite3.connect(path)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()
    return Restored(
        backup=chosen,
        moved_aside=aside,
        runs_in_backup=kept,
        runs_lost=tuple(r for r in (current or ()) if r not in kept),
        unreadable=current is None,
    )
