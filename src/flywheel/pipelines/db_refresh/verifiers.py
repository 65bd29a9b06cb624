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
from collections.abc import Mapping
from typing import Any

from flywheel.invocation import JobError
from flywheel.pipelines.db_refresh import catalog
from flywheel.pipelines.db_refresh.engine import JobErrorType

_ABSENT = (str(JobErrorType.TABLE_NOT_REGISTERED), str(JobErrorType.DATABASE_MISSING))


_TABLES: dict[tuple[str, str, int, int], dict[str, catalog.TableInfo]] = {}


def _tables(params: Mapping[str, Any]) -> dict[str, catalog.TableInfo]:
    """Every registered table, read in one connection and kept while the catalog file is unchanged:
    a resume checks several catalog outputs, and opening the file is most of the cost."""
    path = catalog.catalog_path(params)
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    key = (str(path), catalog.database_name(params), st.st_size, st.st_mtime_ns)
    if key not in _TABLES:
        try:
            found = catalog.list_tables(params)
        except JobError as exc:
            if exc.error_type not in _ABSENT:
                raise
            found = ()
        _TABLES.clear()
        _TABLES[key] = {info.name: info for info in found}
    return _TABLES[key]


def fingerprint(uri: str, params: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The fingerprint of `table:NAME` or `partitions:NAME` as the catalog has it now; None if absent."""
    scheme, _, name = uri.partition(":")
    info = _tables(params).get(name)
    if info is None:
        return None
    if scheme == "table":
        return {
            "table": info.qualified_name,
            "storage_root": info.storage_root,
            "partition_col": info.partition_col,
            "columns": [list(c) for c in info.columns],
        }
    if scheme == "partitions":
        files = [[p.value, p.location, list(p.files), p.rows, p.bytes] for p in info.partitions]
        return {
            "table": info.qualified_name,
            "partitions": [str(p.value) for p in info.partitions],
            "rows": sum(p.rows for p in info.partitions),
            "files": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:20],
        }
    raise ValueError(f"{uri}: the db-refresh catalog verifies table: and partitions: outputs only")
