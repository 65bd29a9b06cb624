"""Helpers for the crash tests: run the real CLI in a home, snapshot what db-refresh produced.

A snapshot is the *content* of every output, independent of where the home is and of which run wrote
it: the rows of each Parquet output (sorted), the catalog's tables, schemas and partitions, the ER
schema mapping, the data monitor's metrics and verdict, the clean-rooms segments.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flywheel.events import Event
from flywheel.journal import Journal

REPO = Path(__file__).resolve().parents[2]
PARQUET_OUTPUTS = ("split_part/addressable_ids", "split_part/infobase_attributes", "er/part_addressable_ids_er")


def flywheel(
    home: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The real CLI in its own session (so a test can kill its whole tree), in `home`."""
    full = {
        **os.environ,
        "FLYWHEEL_HOME": str(home),
        "PYTHONPATH": str(REPO),
        "NO_COLOR": "1",
        "COLUMNS": "200",
        **(env or {}),
    }
    full.pop("FLYWHEEL_ENV", None)
    return subprocess.run(
        [sys.executable, "-m", "flywheel", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=home.parent,
        timeout=timeout,
        start_new_session=True,
    )


def start(home: Path, *args: str) -> subprocess.Popen[str]:
    full = {**os.environ, "FLYWHEEL_HOME": str(home), "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    full.pop("FLYWHEEL_ENV", None)
    return subprocess.Popen(
        [sys.executable, "-m", "flywheel", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=full,
        cwd=home.parent,
        start_new_session=True,
    )


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (steps run in their own sessions, so process groups miss them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            found.append(child)
            frontier.append(child)
    return found


def kill_tree(pid: int) -> None:
    """A power cut, as far as processes go: freeze the runner and everything it started, then kill all."""
    tree = [pid, *descendants(pid)]
    for each in tree:
        _signal(each, signal.SIGSTOP)
    for each in tree:
        _signal(each, signal.SIGKILL)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def events(home: Path) -> dict[int, list[Event]]:
    with Journal(home / "journal.sqlite") as journal:
        runs = [r.run_id for r in journal.runs()]
        return journal.events_of_runs(runs)


def _rows(directory: Path, home: Path) -> dict[str, Any]:
    import duckdb

    if not directory.is_dir() or not any(directory.glob("*/*.parquet")):
        return {"missing": True}
    rows = duckdb.sql(
        f"SELECT * FROM read_parquet('{directory}/*/*.parquet', hive_partitioning = true) ORDER BY ALL"
    ).fetchall()
    digest = hashlib.sha256(repr(rows).replace(str(home), "<home>").encode()).hexdigest()
    return {"rows": len(rows), "digest": digest}


def _catalog(home: Path) -> list[Any]:
    import duckdb

    path = home / "catalog.duckdb"
    if not path.exists():
        return []
    with duckdb.connect(str(path), read_only=True) as db:
        tables = db.execute(
            "SELECT name, storage_root, partition_col, columns FROM omc_flywheel_local.tables"
        ).fetchall()
        parts = db.execute(
            "SELECT table_name, value, rows, len(files) FROM omc_flywheel_local.partitions ORDER BY ALL"
        ).fetchall()
    return [sorted((n, r.replace(str(home), "<home>"), p, c) for n, r, p, c in tables), parts]


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def snapshot(home: Path) -> dict[str, Any]:
    data = home / "data"
    monitor = _json(data / "reports" / "data_monitor" / "metrics.json") or {}
    segments = _json(data / "reports" / "cleanrooms" / "segments.json") or {}
    return {
        **{name: _rows(data / name, home) for name in PARQUET_OUTPUTS},
        "catalog": _catalog(home),
        "schema_mapping": _json(data / "er" / "schema_mapping.json"),
        "monitor": {k: monitor.get(k) for k in ("status", "metrics", "thresholds", "n_parts")},
        "monitor_html": (data / "reports" / "data_monitor" / "report.html").exists(),
        "segments": {k: segments.get(k) for k in ("dimensions", "min_k", "segments", "published_total")},
        "segments_csv": (data / "reports" / "cleanrooms" / "segments.csv").read_text()
        if (data / "reports" / "cleanrooms" / "segments.csv").exists()
        else None,
    }
