"""The journal: append-only typed events in SQLite, migrated forward, never silently misread."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flywheel.errors import BackendError, NotFound
from flywheel.events import (
    EVENT_TYPES,
    RunFinished,
    RunOutcome,
    RunStarted,
    StepFailed,
    StepReused,
    StepStarted,
    StepSucceeded,
    event_from_body,
)
from flywheel.journal import SCHEMA_VERSION, Journal
from flywheel.state import RunStatus, StepStatus, as_crashed, fold


def test_events_round_trip_through_the_journal_exactly(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        run = journal.new_run("db-refresh", "local")
        now = time.time()
        written = [
            RunStarted(
                run_id=run, at=now, pipeline="db-refresh", env="local", user="ana", host="laptop", parent_run=None
            ),
            StepReused(run_id=run, at=now, step="split", source_run=3, duration=3600.0, outputs=({"uri": "x"},)),
            StepStarted(run_id=run, at=now, step="register", context="addressable_ids", attempt=1),
            StepFailed(run_id=run, at=now, step="register", context="addressable_ids", error_type="E", exit_code=1),
            RunFinished(run_id=run, at=now, outcome=RunOutcome.FAILED),
        ]
        journal.append(*written)
        assert journal.events(run) == written


def test_every_event_kind_decodes_from_its_own_body() -> None:
    for kind, cls in EVENT_TYPES.items():
        assert cls.kind is kind
    event = StepSucceeded(run_id=1, at=1.0, step="s", context="c", outputs=({"uri": "u"},), duration=2.0)
    assert event_from_body(event.kind.value, 1, 1.0, event.to_body()) == event


def test_an_unfinished_run_whose_runner_died_reads_as_interrupted(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        run = journal.new_run("p", "local")
        journal.append(
            RunStarted(run_id=run, at=1, pipeline="p", env="local"),
            StepStarted(run_id=run, at=2, step="a"),
        )
        state = fold(run, journal.events(run))
    assert state.status is RunStatus.UNFINISHED
    crashed = as_crashed(state)
    assert crashed.status is RunStatus.INTERRUPTED
    assert crashed.steps[next(iter(crashed.steps))].status is StepStatus.INTERRUPTED


def test_an_old_journal_is_migrated_forward_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        run = journal.new_run("p", "local")
        journal.append(RunStarted(run_id=run, at=1, pipeline="p", env="local"))
    db = sqlite3.connect(path)
    db.execute("DROP INDEX events_by_kind_step")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    with Journal(path) as journal:
        assert journal.runs()[0].run_id == run
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_a_journal_from_a_newer_flywheel_is_refused_not_misread(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(BackendError) as caught:
        Journal(path)
    assert "newer than this flywheel" in caught.value.message and caught.value.fix == "upgrade flywheel"


def test_a_file_that_is_not_a_journal_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BackendError) as caught:
        Journal(path)
    assert "cannot be opened" in caught.value.message
    assert path.read_bytes() == b"this is not sqlite" * 100  # left intact


def test_an_unknown_run_is_not_found_with_a_hint(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal, pytest.raises(NotFound) as caught:
        journal.run(99)
    assert caught.value.fix == "list runs with `flywheel runs`"


def test_processes_opening_a_new_journal_at_once_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    code = f"from pathlib import Path; from flywheel.journal import Journal; Journal(Path({str(path)!r})).close()"
    openers = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(6)]
    errors = [p.communicate(timeout=60)[1] for p in openers]
    assert [p.returncode for p in openers] == [0] * 6, errors
    with Journal(path) as journal:
        assert journal.runs() == []
