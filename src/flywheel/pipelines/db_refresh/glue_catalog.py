"""db-refresh's tables on the Glue Data Catalog and S3: the same functions as the local DuckDB catalog.

`register_table`, `sync_partitions`, `add_partitions`, `get_table`, `scan_partitions` and
`table_fingerprint` have the signatures of `flywheel.pipelines.db_refresh.catalog`'s functions and
return its `TableInfo` and `Partition`, so that module hands a call to this one when
`is_glue_catalog(params)`, and the jobs stay the same. Partitions are found by listing
`storage_root/id_part=N/` in S3; the schema comes from the `_manifest.json` the split step writes
(Spark types, which are Hive types) or from `columns`. Finding a commit's partitions and publishing a
commit to the catalog live in `glue_partitions` (the writing steps import only that); the Glue
operations themselves are generic and live in `flywheel.aws.catalog`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flywheel.aws.catalog import (
    DEFAULT_GRANT,
    GlueCatalog,
    TableDefinition,
    _error,
)
from flywheel.pipelines.db_refresh.glue_partitions import (
    _partition_specs,
    catalog_for,
    discover_partitions,
    read_manifest,
)
from flywheel.pipelines.db_refresh.tables import PARTITION_COL, Partition, TableInfo, fingerprint_of


def scan_partitions(storage_root: str, partition_col: str = PARTITION_COL, *, s3: Any = None) -> tuple[Partition, ...]:
    """The partitions in S3 now, described like the local catalog's `scan_partitions`.

    Row counts come from the split step's `_manifest.json` (S3 listings cannot count rows); a partition
    the manifest does not know gets `rows = -1` (unknown), never 0, so it is not taken for empty.
    """
    manifest = read_manifest(storage_root, s3=s3)
    rows = {int(k): int(v.get("rows", -1)) for k, v in ((manifest or {}).get("partitions") or {}).items()}
    return tuple(
        Partition(value=value, location=location, files=files, rows=rows.get(value, -1), bytes=size)
        for value, (location, files, size) in discover_partitions(storage_root, partition_col, s3=s3).items()
    )


def _definition(
    params: Mapping[str, Any],
    table: str,
    storage_root: str,
    partition_col: str,
    columns: Sequence[tuple[str, str]] | None,
    manifest: Mapping[str, Any] | None,
) -> TableDefinition:
    if columns is None and manifest is not None:
        columns = [(str(n), str(t)) for n, t in manifest.get("columns", ())]
    data = tuple((n, t) for n, t in (columns or ()) if n != partition_col)
    if not data:
        raise _error(
            "schema-inference-failed",
            f"cannot define {table}: no `_manifest.json` with columns under {storage_root}. "
            "Run the split steps (1 and 2) first, or fix storage_root",
        )
    return TableDefinition(
        name=table,
        location=storage_root.rstrip("/"),
        columns=data,
        partition_keys=((partition_col, "int"),),
        description=f"flywheel {params.get('pipeline', 'db-refresh')} part table",
        parameters={"flywheel:partition_col": partition_col, "flywheel:storage_root": storage_root.rstrip("/")},
    )


def _grant_configured(catalog: GlueCatalog, params: Mapping[str, Any], table: str) -> None:
    """Lake Formation grants from `lakeformation_principals` (and `lakeformation_permissions`)."""
    principals = params.get("lakeformation_principals") or ()
    if isinstance(principals, str):
        principals = [principals]
    permissions = params.get("lakeformation_permissions") or DEFAULT_GRANT
    for principal in principals:
        catalog.grant(str(principal), table, permissions)


def register_table(
    params: Mapping[str, Any],
    table: str,
    storage_root: str,
    *,
    partition_col: str = PARTITION_COL,
    columns: Sequence[tuple[str, str]] | None = None,
    client: Any = None,
    s3: Any = None,
) -> TableInfo:
    """Step 3 on AWS: create or update the table over `storage_root` with the partitions in S3 now.

    The database must exist unless `create_database` is true (on AWS Terraform creates it, so the
    default is false: a misspelt database must fail, not appear).
    """
    catalog = catalog_for(params, client=client)
    catalog.require_database(create=bool(params.get("create_database", False)))
    manifest = read_manifest(storage_root, s3=s3)
    definition = _definition(params, table, storage_root, partition_col, columns, manifest)
    catalog.ensure_table(definition)
    found = discover_partitions(storage_root, partition_col, s3=s3)
    catalog.register_partitions(definition, _partition_specs(found, manifest, found), exact=True)
    _grant_configured(catalog, params, table)
    return get_table(params, table, client=catalog.client)


def sync_partitions(
    params: Mapping[str, Any], table: str, values: Iterable[int], *, client: Any = None, s3: Any = None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Step 4 on AWS: make the registered partitions exactly `values`; returns (added, dropped)."""
    catalog = catalog_for(params, client=client)
    existing = catalog.get_table(table)
    if existing is None:
        raise _error(
            "tables-not-registered",
            f"table {catalog.database}.{table} is not registered: run step 3 (register-part-tables)",
        )
    root = str(existing["StorageDescriptor"]["Location"])
    partition_col = str((existing.get("PartitionKeys") or [{"Name": PARTITION_COL}])[0]["Name"])
    wanted = sorted(set(values))
    found = discover_partitions(root, partition_col, s3=s3)
    missing = [v for v in wanted if v not in found]
    if missing:
        raise _error(
            "partition-mismatch",
            f"cannot register partitions {missing} of {catalog.database}.{table}: no such directories under {root}",
        )
    definition = TableDefinition(
        name=table,
        location=root,
        columns=tuple((c["Name"], c["Type"]) for c in existing["StorageDescriptor"].get("Columns", ())),
        partition_keys=tuple((c["Name"], c["Type"]) for c in existing.get("PartitionKeys", ())),
    )
    before = {int(v[0]) for v in catalog.partitions(table)}
    catalog.register_partitions(definition, _partition_specs(found, read_manifest(root, s3=s3), wanted), exact=True)
    return tuple(v for v in wanted if v not in before), tuple(sorted(before - set(wanted)))


def add_partitions(
    params: Mapping[str, Any], table: str, values: Iterable[int], *, client: Any = None, s3: Any = None
) -> tuple[int, ...]:
    """Register more partitions found in S3; returns the values newly added."""
    current = get_table(params, table, client=client).partition_values
    return sync_partitions(params, table, set(current) | set(values), client=client, s3=s3)[0]


def get_table(params: Mapping[str, Any], table: str, *, client: Any = None) -> TableInfo:
    """A registered table with its partitions, as the local catalog's `TableInfo`."""
    catalog = catalog_for(params, client=client)
    found = catalog.get_table(table)
    if found is None:
        raise _error(
            "tables-not-registered",
            f"table {catalog.database}.{table} is not registered in the Glue catalog: "
            "run step 3 (register-part-tables)",
        )
    keys = [(c["Name"], c["Type"]) for c in found.get("PartitionKeys", ())]
    columns = [(c["Name"], c["Type"]) for c in found["StorageDescriptor"].get("Columns", ())]
    partitions = []
    for values, body in sorted(catalog.partitions(table).items(), key=lambda kv: int(kv[0][0])):
        parameters = body.get("Parameters") or {}
        partitions.append(
            Partition(
                value=int(values[0]),
                location=str(body.get("StorageDescriptor", {}).get("Location", "")),
                files=tuple(json.loads(parameters.get("flywheel:files", "[]"))),
                rows=int(parameters.get("numRows", 0)),
                bytes=int(parameters.get("totalSize", 0)),
            )
        )
    return TableInfo(
        database=catalog.database,
        name=table,
        storage_root=str(found["StorageDescriptor"].get("Location", "")),
        partition_col=keys[0][0] if keys else PARTITION_COL,
        columns=(*columns, *keys),
        partitions=tuple(partitions),
    )


def table_fingerprint(params: Mapping[str, Any], table: str, *, client: Any = None) -> str:
    """The same digest as the local catalog's, over what Glue says the table is."""
    return fingerprint_of(get_table(params, table, client=client))
