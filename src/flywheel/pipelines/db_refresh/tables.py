"""What db-refresh's catalog says a part table is, whichever catalog holds it (DuckDB locally, Glue on AWS).

Shared by `catalog` (the local one) and `glue_catalog`, so that neither imports the other's module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

PARTITION_COL = "id_part"


@dataclass(frozen=True)
class Partition:
    value: int
    location: str
    files: tuple[str, ...]
    rows: int
    bytes: int


@dataclass(frozen=True)
class TableInfo:
    database: str
    name: str
    storage_root: str
    partition_col: str
    columns: tuple[tuple[str, str], ...]
    """(name, DuckDB type) of every column, the partition column last."""
    partitions: tuple[Partition, ...]

    @property
    def qualified_name(self) -> str:
        return f"{self.database}.{self.name}"

    @property
    def partition_values(self) -> tuple[int, ...]:
        return tuple(p.value for p in self.partitions)


def fingerprint_of(info: TableInfo) -> str:
    body = {
        "name": info.qualified_name,
        "storage_root": info.storage_root,
        "partition_col": info.partition_col,
        "columns": [list(c) for c in info.columns],
        "partitions": [[p.value, p.location, list(p.files), p.rows, p.bytes] for p in info.partitions],
    }
    return "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
