"""Fingerprints of db-refresh's catalog outputs, for flywheel's verification before a resume reuses a step.

`pipeline.yaml` names this function for the `table:` and `partitions:` output schemes (its `verifiers`
parameter), so the core imports it only when it checks such an output, and never knows the catalog.

The two schemes cover different steps, so each fingerprint covers only what its step is responsible
for: step 3 registers a table (`table:NAME`: storage root, partition column, schema), step 4 repairs its
partitions (`partitions:NAME`: the registered partitions and their files). Were the table fingerprint
to include partitions, step 4 adding a late partition would make step 3's outputs look changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flywheel.invocation import JobError
from flywheel.pipelines.db_refresh import catalog
from flywheel.pipelines.db_refresh.engine import JobErrorType

_ABSENT = (str(JobErrorType.TABLE_NOT_REGISTERED), str(JobErrorType.DATABASE_MISSING))


_MEMO: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}


def _stamp(path: Path) -> list[Any]:
    """The catalog file and its write-ahead log, by size and modification time."""
    stamp: list[Any] = [str(path)]
    for file in (path, path.with_name(path.name + ".wal")):
        try:
            st = file.stat()
            stamp += [st.st_size, st.st_mtime_ns]
        except FileNotFoundError:
            stamp += [None, None]
    return stamp


def _describe(info: catalog.TableInfo) -> dict[str, Any]:
    files = [[p.value, p.location, list(p.files), p.rows, p.bytes] for p in info.partitions]
    return {
        "table": {
            "table": info.qualified_name,
            "storage_root": info.storage_root,
            "partition_col": info.partition_col,
            "columns": [list(c) for c in info.columns],
        },
        "partitions": {
            "table": info.qualified_name,
            "partitions": [str(p.value) for p in info.partitions],
            "rows": sum(p.rows for p in info.partitions),
            "files": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:20],
        },
    }


def _tables(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """What every registered table looks like, read once per state of the catalog file.

    Opening the catalog means importing DuckDB, most of a check's cost. The runner reads the catalog
    when steps 3 and 4 succeed; what it read is kept beside the catalog (`*.fingerprints.json`) with
    the file's size and modification time, so a resume finds an unchanged catalog checked already.
    """
    path = catalog.catalog_path(params)
    if not path.exists():
        return {}
    stamp = [*_stamp(path), catalog.database_name(params)]
    key = tuple(stamp)
    if key in _MEMO:
        return _MEMO[key]
    sidecar = path.with_name(path.name + ".fingerprints.json")
    try:
        kept = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        kept = {}
    if kept.get("stamp") == stamp:
        tables: dict[str, dict[str, Any]] = kept["tables"]
    else:
        try:
            tables = {info.name: _describe(info) for info in catalog.list_tables(params)}
        except JobError as exc:
            if exc.error_type not in _ABSENT:
                raise
            tables = {}
        if [*_stamp(path), stamp[-1]] == stamp:  # nobody wrote the catalog while it was read
            staging = sidecar.with_name(f".{sidecar.name}.{os.getpid()}")
            staging.write_text(json.dumps({"stamp": stamp, "tables": tables}))
            staging.replace(sidecar)
    _MEMO.clear()
    _MEMO[key] = tables
    return tables


def fingerprint(uri: str, params: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The fingerprint of `table:NAME` or `partitions:NAME` as the catalog has it now; None if absent."""
    scheme, _, name = uri.partition(":")
    if scheme not in ("table", "partitions"):
        raise ValueError(f"{uri}: the db-refresh catalog verifies table: and partitions: outputs only")
    described = _tables(params).get(name)
    return None if described is None else described[scheme]
