"""The Glue Data Catalog side of steps 3 and 4 (register part tables, prepare part tables) on AWS.

Two layers:

- `GlueCatalog`: plain Glue operations made idempotent: create or update a table with its partition
  keys, register partitions in batches of at most 100 (`BatchCreatePartition`; those already there
  are updated only when their location or statistics changed), drop partitions in batches of 25,
  check what is registered against what should be, and grant Lake Formation permissions.
- The db-refresh seam: `register_table`, `sync_partitions`, `add_partitions`, `get_table`,
  `scan_partitions` and `table_fingerprint` have the signatures of the local DuckDB catalog's functions
  (`flywheel.pipelines.db_refresh.catalog`) and return its `TableInfo` and `Partition`, so that module
  can hand a call to this one when `is_glue_catalog(params)`, and the jobs stay the same.
  Partitions are found by listing `storage_root/id_part=N/` in S3; the schema comes from the
  `_manifest.json` the split step writes (Spark types, which are Hive types) or from `columns`.

Runbook causes this module reports with the same error types as the local catalog: a missing
database (`database-missing`), a table over another location (`table-prefix-conflict`), a partition
directory that is not there (`partition-mismatch`), nothing to infer a schema from
(`schema-inference-failed`). boto3 is imported lazily; on Glue the job's role and region are used.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flywheel.invocation import JobError

if TYPE_CHECKING:
    from flywheel.pipelines.db_refresh.catalog import Partition, TableInfo

PARTITION_COL = "id_part"
CREATE_BATCH = 100  # BatchCreatePartition / BatchUpdatePartition limit
DELETE_BATCH = 25  # BatchDeletePartition limit
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
DEFAULT_GRANT = ("SELECT", "DESCRIBE")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _error(kind: str, message: str) -> JobError:
    return JobError(message, error_type=kind)


@dataclass(frozen=True)
class TableDefinition:
    """A partitioned Parquet table: columns (name, Hive type) without the partition keys."""

    name: str
    location: str
    columns: tuple[tuple[str, str], ...]
    partition_keys: tuple[tuple[str, str], ...] = ((PARTITION_COL, "int"),)
    description: str = ""
    parameters: Mapping[str, str] = field(default_factory=dict)

    def storage_descriptor(self, location: str | None = None) -> dict[str, Any]:
        return {
            "Columns": [{"Name": n, "Type": t} for n, t in self.columns],
            "Location": location or self.location,
            "InputFormat": PARQUET_INPUT,
            "OutputFormat": PARQUET_OUTPUT,
            "SerdeInfo": {"SerializationLibrary": PARQUET_SERDE, "Parameters": {"serialization.format": "1"}},
            "Compressed": False,
            "StoredAsSubDirectories": False,
        }

    def table_input(self) -> dict[str, Any]:
        return {
            "Name": self.name,
            "Description": self.description,
            "TableType": "EXTERNAL_TABLE",
            "Parameters": {"classification": "parquet", "EXTERNAL": "TRUE", **self.parameters},
            "PartitionKeys": [{"Name": n, "Type": t} for n, t in self.partition_keys],
            "StorageDescriptor": self.storage_descriptor(),
        }


@dataclass(frozen=True)
class PartitionSpec:
    """One partition: its values (as strings, Glue's way), location and optional statistics."""

    values: tuple[str, ...]
    location: str
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PartitionChanges:
    created: tuple[tuple[str, ...], ...] = ()
    updated: tuple[tuple[str, ...], ...] = ()
    unchanged: tuple[tuple[str, ...], ...] = ()
    deleted: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class CatalogCheck:
    """Registered partitions against expected ones; `ok` when they agree exactly."""

    table: str
    missing: tuple[tuple[str, ...], ...] = ()
    unexpected: tuple[tuple[str, ...], ...] = ()
    mislocated: tuple[tuple[str, ...], ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mislocated)

    def describe(self) -> str:
        if self.ok:
            return f"{self.table}: partitions as expected"
        parts = []
        for label, values in (("missing", self.missing), ("unexpected", self.unexpected)):
            if values:
                parts.append(f"{label} {', '.join('/'.join(v) for v in values)}")
        if self.mislocated:
            parts.append(f"at another location {', '.join('/'.join(v) for v in self.mislocated)}")
        return f"{self.table}: " + "; ".join(parts)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class GlueCatalog:
    """Idempotent Glue Data Catalog operations on one database."""

    def __init__(self, database: str, *, client: Any = None, lakeformation: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("glue")
        self.database = database
        self.client = client
        self._lakeformation = lakeformation

    # -- database and tables ---------------------------------------------------------------------

    def database_exists(self) -> bool:
        try:
            self.client.get_database(Name=self.database)
        except self.client.exceptions.EntityNotFoundException:
            return False
        return True

    def require_database(self, *, create: bool = False, location: str | None = None) -> None:
        """The database must exist; it is created only when asked (Terraform owns it on AWS)."""
        if self.database_exists():
            return
        if not create:
            raise _error(
                "database-missing",
                f"Glue database {self.database} does not exist: apply the orchestration Terraform stack, "
                "or fix the `database` setting",
            )
        body: dict[str, Any] = {"Name": self.database}
        if location:
            body["LocationUri"] = location
        with contextlib.suppress(self.client.exceptions.AlreadyExistsException):  # created meanwhile
            self.client.create_database(DatabaseInput=body)

    def get_table(self, name: str) -> Mapping[str, Any] | None:
        try:
            table: Mapping[str, Any] = self.client.get_table(DatabaseName=self.database, Name=name)["Table"]
        except self.client.exceptions.EntityNotFoundException:
            return None
        return table

    def ensure_table(self, table: TableDefinition) -> str:
        """Create the table, or update it when its columns or partition keys changed.

        Returns `created`, `updated` or `unchanged`. A table of that name over another location is a
        `table-prefix-conflict`: two steps would otherwise share one name for two datasets.
        """
        existing = self.get_table(table.name)
        wanted = table.table_input()
        if existing is None:
            try:
                self.client.create_table(DatabaseName=self.database, TableInput=wanted)
                return "created"
            except self.client.exceptions.AlreadyExistsException:
                existing = self.get_table(table.name)
                if existing is None:
                    raise
        where = _norm(existing.get("StorageDescriptor", {}).get("Location", ""))
        if where != _norm(table.location):
            raise _error(
                "table-prefix-conflict",
                f"table {self.database}.{table.name} already exists over {where}, not {table.location}: "
                "choose another table_prefix, or drop the old table",
            )
        have_columns = [(c["Name"], c["Type"]) for c in existing.get("StorageDescriptor", {}).get("Columns", ())]
        have_keys = [(c["Name"], c["Type"]) for c in existing.get("PartitionKeys", ())]
        have_params = dict(existing.get("Parameters") or {})
        if (
            have_columns == list(table.columns)
            and have_keys == list(table.partition_keys)
            and all(have_params.get(k) == v for k, v in wanted["Parameters"].items())
        ):
            return "unchanged"
        self.client.update_table(DatabaseName=self.database, TableInput=wanted)
        return "updated"

    # -- partitions --------------------------------------------------------------------------------

    def partitions(self, table: str) -> dict[tuple[str, ...], Mapping[str, Any]]:
        """Every registered partition of a table, by its values."""
        out: dict[tuple[str, ...], Mapping[str, Any]] = {}
        paginator = self.client.get_paginator("get_partitions")
        for page in paginator.paginate(DatabaseName=self.database, TableName=table):
            for partition in page.get("Partitions", ()):
                out[tuple(partition["Values"])] = partition
        return out

    def register_partitions(
        self, table: TableDefinition, partitions: Sequence[PartitionSpec], *, exact: bool = False
    ) -> PartitionChanges:
        """Register partitions idempotently; with `exact`, also drop the registered ones not listed.

        Creates in batches of 100, updates (in batches of 100) those whose location or statistics
        changed, and leaves the rest alone, so running it twice changes nothing the second time.
        """
        existing = self.partitions(table.name)
        created: list[tuple[str, ...]] = []
        updated: list[tuple[str, ...]] = []
        unchanged: list[tuple[str, ...]] = []
        to_create: list[dict[str, Any]] = []
        to_update: list[dict[str, Any]] = []
        for spec in partitions:
            body = {
                "Values": list(spec.values),
                "StorageDescriptor": table.storage_descriptor(spec.location),
                "Parameters": dict(spec.parameters),
            }
            have = existing.get(spec.values)
            if have is None:
                to_create.append(body)
            elif _norm(have.get("StorageDescriptor", {}).get("Location", "")) != _norm(spec.location) or any(
                (have.get("Parameters") or {}).get(k) != v for k, v in spec.parameters.items()
            ):
                to_update.append({"PartitionValueList": list(spec.values), "PartitionInput": body})
            else:
                unchanged.append(spec.values)
        for batch in _chunks(to_create, CREATE_BATCH):
            answer = self.client.batch_create_partition(
                DatabaseName=self.database, TableName=table.name, PartitionInputList=list(batch)
            )
            failed = {tuple(e["PartitionValues"]): e["ErrorDetail"] for e in answer.get("Errors", ())}
            for body in batch:
                values = tuple(body["Values"])
                error = failed.get(values)
                if error is None:
                    created.append(values)
                elif error.get("ErrorCode") == "AlreadyExistsException":  # registered meanwhile: update it
                    to_update.append({"PartitionValueList": list(values), "PartitionInput": body})
                else:
                    raise _error(
                        "partition-mismatch",
                        f"cannot register partition {'/'.join(values)} of {self.database}.{table.name}: "
                        f"{error.get('ErrorCode')}: {error.get('ErrorMessage')}",
                    )
        for batch in _chunks(to_update, CREATE_BATCH):
            answer = self.client.batch_update_partition(DatabaseName=self.database, TableName=table.name, Entries=batch)
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise _error(
                    "partition-mismatch",
                    f"cannot update partition {'/'.join(first.get('PartitionValueList', []))} of "
                    f"{self.database}.{table.name}: {first.get('ErrorDetail', {}).get('ErrorMessage')}",
                )
            updated += [tuple(entry["PartitionValueList"]) for entry in batch]
        deleted: tuple[tuple[str, ...], ...] = ()
        if exact:
            wanted = {p.values for p in partitions}
            deleted = self.delete_partitions(table.name, [v for v in existing if v not in wanted])
        return PartitionChanges(tuple(created), tuple(updated), tuple(unchanged), deleted)

    def delete_partitions(self, table: str, values: Sequence[tuple[str, ...]]) -> tuple[tuple[str, ...], ...]:
        """Unregister partitions (their files stay), in batches of 25."""
        for batch in _chunks(list(values), DELETE_BATCH):
            self.client.batch_delete_partition(
                DatabaseName=self.database,
                TableName=table,
                PartitionsToDelete=[{"Values": list(v)} for v in batch],
            )
        return tuple(values)

    def check_partitions(self, table: str, expected: Sequence[PartitionSpec]) -> CatalogCheck:
        """Compare what is registered with what should be (values and locations)."""
        registered = self.partitions(table)
        wanted = {p.values: p for p in expected}
        return CatalogCheck(
            table=f"{self.database}.{table}",
            missing=tuple(sorted(v for v in wanted if v not in registered)),
            unexpected=tuple(sorted(v for v in registered if v not in wanted)),
            mislocated=tuple(
                sorted(
                    v
                    for v, p in wanted.items()
                    if v in registered
                    and _norm(registered[v].get("StorageDescriptor", {}).get("Location", "")) != _norm(p.location)
                )
            ),
        )

    # -- Lake Formation ---------------------------------------------------------------------------

    def grant(self, principal: str, table: str | None = None, permissions: Iterable[str] = DEFAULT_GRANT) -> None:
        """Grant Lake Formation permissions on a table (or the database); granting twice is harmless."""
        if self._lakeformation is None:
            import boto3

            self._lakeformation = boto3.client("lakeformation")
        resource: dict[str, Any] = (
            {"Table": {"DatabaseName": self.database, "Name": table}}
            if table
            else {"Database": {"Name": self.database}}
        )
        self._lakeformation.grant_permissions(
            Principal={"DataLakePrincipalIdentifier": principal},
            Resource=resource,
            Permissions=list(permissions),
        )


def _norm(location: str) -> str:
    return location.rstrip("/")


# ---------------------------------------------------------------------------------------------
# the db-refresh seam: same shapes as flywheel.pipelines.db_refresh.catalog, on Glue and S3


def is_glue_catalog(params: Mapping[str, Any]) -> bool:
    """Whether a step's catalog is the Glue Data Catalog (`catalog: glue`, set by the AWS environments).

    The engine does not decide it: Spark runs locally against the local catalog too."""
    return str(params.get("catalog") or "").lower() == "glue"


def _database(params: Mapping[str, Any]) -> str:
    name = str(params.get("glue_database") or params.get("database") or "")
    if not _IDENT.match(name):
        raise _error("database-missing", f"database name {name!r} is not a plain identifier: set `database`")
    return name


def catalog_for(params: Mapping[str, Any], *, client: Any = None, lakeformation: Any = None) -> GlueCatalog:
    return GlueCatalog(_database(params), client=client, lakeformation=lakeformation)


def _s3() -> Any:
    import boto3

    return boto3.client("s3")


def discover_partitions(
    storage_root: str, partition_col: str = PARTITION_COL, *, s3: Any = None
) -> dict[int, tuple[str, tuple[str, ...], int]]:
    """Every `partition_col=<int>/` directory under an S3 root: value -> (location, files, bytes).

    When the root holds a split step's `_manifest.json`, only the files it lists count (the commit
    marker: anything else is a leftover of a failed or unfinished commit)."""
    from flywheel.aws.s3 import manifest_files, parse_s3_uri

    root = parse_s3_uri(storage_root)
    prefix = root.key.rstrip("/") + "/" if root.key else ""
    client = s3 or _s3()
    listed = manifest_files(read_manifest(storage_root, s3=client))
    committed = set(listed) if listed is not None else None
    found: dict[int, tuple[str, list[str], int]] = {}
    pattern = re.compile(rf"^{re.escape(partition_col)}=(-?\d+)/([^/]+)$")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=root.bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            match = pattern.match(str(item["Key"])[len(prefix) :])
            if not match or match.group(2).startswith((".", "_")):
                continue
            if committed is not None and str(item["Key"])[len(prefix) :] not in committed:
                continue
            value = int(match.group(1))
            location = f"s3://{root.bucket}/{prefix}{partition_col}={value}"
            _, files, size = found.get(value, (location, [], 0))
            files.append(match.group(2))
            found[value] = (location, files, size + int(item["Size"]))
    return {v: (loc, tuple(sorted(files)), size) for v, (loc, files, size) in sorted(found.items())}


def scan_partitions(storage_root: str, partition_col: str = PARTITION_COL, *, s3: Any = None) -> tuple[Partition, ...]:
    """The partitions in S3 now, described like the local catalog's `scan_partitions`.

    Row counts come from the split step's `_manifest.json` (S3 listings cannot count rows); a partition
    the manifest does not know gets `rows = -1` (unknown), never 0, so it is not taken for empty.
    """
    from flywheel.pipelines.db_refresh.catalog import Partition

    manifest = read_manifest(storage_root, s3=s3)
    rows = {int(k): int(v.get("rows", -1)) for k, v in ((manifest or {}).get("partitions") or {}).items()}
    return tuple(
        Partition(value=value, location=location, files=files, rows=rows.get(value, -1), bytes=size)
        for value, (location, files, size) in discover_partitions(storage_root, partition_col, s3=s3).items()
    )


def read_manifest(storage_root: str, *, s3: Any = None) -> Mapping[str, Any] | None:
    """The `_manifest.json` a partitioned output carries (columns, per-partition rows), if any."""
    from flywheel.aws.s3 import read_json

    return read_json(storage_root.rstrip("/") + "/_manifest.json", client=s3 or _s3())


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


def _partition_specs(
    found: Mapping[int, tuple[str, tuple[str, ...], int]], manifest: Mapping[str, Any] | None, values: Iterable[int]
) -> list[PartitionSpec]:
    rows = {int(k): v.get("rows") for k, v in ((manifest or {}).get("partitions") or {}).items()}
    specs = []
    for value in sorted(values):
        location, files, size = found[value]
        parameters = {"numFiles": str(len(files)), "totalSize": str(size), "flywheel:files": json.dumps(files)}
        if rows.get(value) is not None:
            parameters["numRows"] = str(rows[value])
        specs.append(PartitionSpec(values=(str(value),), location=location, parameters=parameters))
    return specs


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
    from flywheel.pipelines.db_refresh.catalog import Partition, TableInfo

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
    from flywheel.pipelines.db_refresh.catalog import fingerprint_of

    return fingerprint_of(get_table(params, table, client=client))
