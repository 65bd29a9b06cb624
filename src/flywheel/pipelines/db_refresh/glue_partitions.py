"""Where a partitioned output's committed files are, and pointing the Glue Data Catalog at them.

Shared by the steps that write a table (1, 2 and 5: their commit is published to the catalog once its
manifest is written) and `glue_catalog` (steps 3 and 4 register what this finds). It is its own module
because a step's fingerprint covers the modules it imports and the settings named in them: were the
writing steps to import the whole catalog code, a setting only step 3 reads (`create_database`, Lake
Formation grants) would make the hour-long splits stale, and a resume would rerun them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from flywheel.aws.catalog import _IDENT, GlueCatalog, PartitionSpec, _error
from flywheel.pipelines.db_refresh import storage
from flywheel.pipelines.db_refresh.storage import commit_folder
from flywheel.pipelines.db_refresh.tables import PARTITION_COL


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
    """Every partition of an S3 root: value -> (location, files relative to it, bytes).

    When the root holds a split step's `_manifest.json`, only the files it lists count (the commit
    marker: anything else is a retired commit, or a commit in progress or killed), and a partition's
    location is the prefix its files are under: `id_part=N/commit-<id>`, never the partition directory
    that holds every commit's prefix. Without a manifest, the files directly under `id_part=N/`."""
    from flywheel.aws.s3 import manifest_files, parse_s3_uri

    root = parse_s3_uri(storage_root)
    prefix = root.key.rstrip("/") + "/" if root.key else ""
    client = s3 or _s3()
    listed = manifest_files(read_manifest(storage_root, s3=client))
    committed = set(listed) if listed is not None else None
    found: dict[int, tuple[str, list[str], int]] = {}
    pattern = re.compile(rf"^{re.escape(partition_col)}=(-?\d+)/(.+)$")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=root.bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            relative = str(item["Key"])[len(prefix) :]
            match = pattern.match(relative)
            if not match or commit_folder(relative) is None:
                continue
            if committed is not None:
                if relative not in committed:
                    continue
            elif "/" in match.group(2):
                continue
            value = int(match.group(1))
            folder, _, name = match.group(2).rpartition("/")
            location = f"s3://{root.bucket}/{prefix}{partition_col}={value}" + (f"/{folder}" if folder else "")
            _, files, size = found.get(value, (location, [], 0))
            files.append(name)
            found[value] = (location, files, size + int(item["Size"]))
    return {v: (loc, tuple(sorted(files)), size) for v, (loc, files, size) in sorted(found.items())}


def read_manifest(storage_root: str, *, s3: Any = None) -> Mapping[str, Any] | None:
    """The `_manifest.json` a partitioned output carries (columns, per-partition rows), if any."""
    from flywheel.aws.s3 import read_json

    return read_json(storage_root.rstrip("/") + "/_manifest.json", client=s3 or _s3())


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


def publish(
    params: Mapping[str, Any], table: str, storage_root: str, *, client: Any = None, s3: Any = None
) -> frozenset[str]:
    """Point a registered table's partitions at the commit the manifest under `storage_root` names now.

    Called right after a commit's manifest PUT, so catalog readers (Athena, Spark reading the table by
    name) switch from the previous commit's prefixes to the new ones. The partitions become exactly the
    manifest's (as step 3 registers them). A table not registered yet, or over another root, is left
    alone (step 3 registers it). Returns the commit ids the catalog's partitions name afterwards, which
    the sweep must keep (`""`: a partition directory itself).
    """
    catalog = catalog_for(params, client=client)
    existing = catalog.get_table(table)
    if existing is None:
        return frozenset()
    root = storage_root.rstrip("/")
    if str(existing.get("StorageDescriptor", {}).get("Location", "")).rstrip("/") != root:
        return frozenset()
    partition_col = str((existing.get("PartitionKeys") or [{"Name": PARTITION_COL}])[0]["Name"])
    found = discover_partitions(root, partition_col, s3=s3)
    catalog.publish_commit(table, _partition_specs(found, read_manifest(root, s3=s3), found))
    return commits_named(root, catalog.partitions(table).values())


def commits_named(storage_root: str, partitions: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """The commit ids Glue partitions' locations name under `storage_root` (`""`: a partition directory)."""
    root = storage_root.rstrip("/") + "/"
    named = set()
    for partition in partitions:
        location = str(partition.get("StorageDescriptor", {}).get("Location", "")).rstrip("/")
        if location.startswith(root):
            parts = location[len(root) :].split("/")
            named.add(parts[1] if len(parts) > 1 else "")
    return frozenset(named)


def commit_options(params: Mapping[str, Any], table: str, storage_root: str) -> dict[str, Any]:
    """The keyword arguments of `engine.write_partitioned` for a table's output: the grace period of
    replaced commits (`commit_grace`), and on the Glue catalog the publish that points the table's
    partitions at the new commit once its manifest is written (and says which commits are still named)."""
    options: dict[str, Any] = {"commit_grace": storage.commit_grace(params.get("commit_grace"))}
    if is_glue_catalog(params) and storage.is_remote(storage_root):
        options["after_commit"] = lambda: publish(params, table, storage_root)
    return options
