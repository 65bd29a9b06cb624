"""The Glue Data Catalog side of steps 3 and 4 (register part tables, prepare part tables) on AWS.

Two layers:

- `GlueCatalog`: plain Glue operations made idempotent: create or update a table with its partition
  keys, register partitions in batches of at most 100 (`BatchCreatePartition`; those already there
  are updated only when their location or statistics changed), drop partitions in batches of 25,
  check what is registered against what should be, and grant Lake Formation permissions.
- Nothing here knows a pipeline: db-refresh's seam over it (its tables and partitions on Glue and S3)
  lives with the pipeline, in `flywheel.pipelines.db_refresh.glue_catalog`.

Runbook causes this module reports with the same error types as the local catalog: a missing
database (`database-missing`), a table over another location (`table-prefix-conflict`), a partition
directory that is not there (`partition-mismatch`), nothing to infer a schema from
(`schema-inference-failed`). boto3 is imported lazily; on Glue the job's role and region are used.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flywheel.invocation import JobError

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

    def publish_commit(self, table: str, partitions: Sequence[PartitionSpec]) -> PartitionChanges:
        """Make a registered table's partitions exactly `partitions` (their new locations: one commit's
        prefixes), keeping the table's own columns and formats.

        Glue has no transaction over partitions: `BatchUpdatePartition` changes up to 100 at a time, so
        for a moment some partitions may name the new commit and some the previous one (both stay in S3
        for the grace period), and two publishers racing leave whichever wrote last ("BatchUpdatePartition
        (batch_update_partition)", Glue API reference: no condition parameter). Publishing again from the
        current manifest (step 3 or 4) settles it.
        """
        found = self.get_table(table)
        if found is None:
            raise _error("tables-not-registered", f"table {self.database}.{table} is not registered")
        descriptor = found.get("StorageDescriptor", {})
        definition = TableDefinition(
            name=table,
            location=str(descriptor.get("Location", "")),
            columns=tuple((c["Name"], c["Type"]) for c in descriptor.get("Columns", ())),
            partition_keys=tuple((c["Name"], c["Type"]) for c in found.get("PartitionKeys", ())),
        )
        return self.register_partitions(definition, partitions, exact=True)

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
