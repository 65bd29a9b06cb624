"""The local table catalog: a DuckDB file that plays the part of the Glue Data Catalog.

A user can open it with the `duckdb` CLI (`duckdb ~/.flywheel/catalog.duckdb`) and query
`SELECT count(*) FROM omc_flywheel_local.part_addressable_ids`. Like Glue, a table is registered with
a storage root and a schema, and partitions are registered explicitly: a part table is a view over the
registered partition directories only, re-created whenever they change, so a directory written after
registration stays invisible until it is registered (step 4, the MSCK REPAIR equivalent).

Two bookkeeping tables live beside the views in the database schema: `tables` (one row per registered
table: storage root, partition column, schema) and `partitions` (one row per registered partition).

Every call opens the file briefly and closes it: steps run in separate processes and DuckDB lets one
process write at a time, so a busy file is retried for `catalog_lock_timeout` seconds (default 60).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from flywheel.pipelines.db_refresh import engine
from flywheel.pipelines.db_refresh.engine import JobErrorType, job_error, sql_ident, sql_text
from flywheel.pipelines.db_refresh.glue_partitions import is_glue_catalog as is_glue_catalog
from flywheel.pipelines.db_refresh.tables import PARTITION_COL as PARTITION_COL
from flywheel.pipelines.db_refresh.tables import Partition as Partition
from flywheel.pipelines.db_refresh.tables import TableInfo as TableInfo
from flywheel.pipelines.db_refresh.tables import fingerprint_of as fingerprint_of

BOOKKEEPING = ("tables", "partitions")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- opening the file


def catalog_path(params: Mapping[str, Any]) -> Path:
    value = params.get("catalog")
    if not value:
        raise job_error(
            JobErrorType.DATABASE_MISSING,
            "no catalog configured: set `catalog` (a DuckDB file path) in the environment settings",
        )
    return engine.local_path(str(value))


def database_name(params: Mapping[str, Any]) -> str:
    name = str(params.get("database") or "")
    if not _IDENT.match(name):
        raise job_error(
            JobErrorType.DATABASE_MISSING,
            f"database name {name!r} is not a plain identifier: set `database` (e.g. omc_flywheel_local)",
        )
    return name


@contextlib.contextmanager
def _connect(params: Mapping[str, Any], *, create: bool = False, write: bool = True) -> Iterator[Any]:
    """A short-lived connection to the catalog, the database schema checked (or created) first."""
    import duckdb

    path, database = catalog_path(params), database_name(params)
    if not path.exists() and not create:
        raise job_error(
            JobErrorType.DATABASE_MISSING,
            f"database {database} does not exist: no catalog file at {path}. Run step 3 "
            "(register-part-tables) with create_database: true, or fix the `catalog` setting",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if create and not path.exists():
        _create_catalog_file(path)
    deadline = time.monotonic() + float(params.get("catalog_lock_timeout") or 60)
    delay = 0.05
    while True:
        try:
            conn = duckdb.connect(str(path), read_only=not write and not create)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise job_error(
                    JobErrorType.CATALOG_BUSY,
                    f"catalog {path} is held by another process ({engine.first_line(exc)}); "
                    "close any duckdb shell on it and retry",
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        conn.execute("SET TimeZone = 'UTC'")
        exists = conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?", [database]
        ).fetchone()
        if not (exists and exists[0]):
            if not create:
                raise job_error(
                    JobErrorType.DATABASE_MISSING,
                    f"database {database} does not exist in catalog {path}. Run step 3 "
                    "(register-part-tables) with create_database: true, or fix the `database` setting",
                )
            conn.execute(f"CREATE SCHEMA {database}")
        if write or create:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {database}.tables (name VARCHAR PRIMARY KEY, "
                "storage_root VARCHAR NOT NULL, partition_col VARCHAR NOT NULL, columns VARCHAR NOT NULL, "
                "registered_at TIMESTAMPTZ NOT NULL)"
            )
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {database}.partitions (table_name VARCHAR NOT NULL, "
                "value INTEGER NOT NULL, location VARCHAR NOT NULL, files VARCHAR[] NOT NULL, "
                "rows BIGINT NOT NULL, bytes BIGINT NOT NULL, added_at TIMESTAMPTZ NOT NULL, "
                "PRIMARY KEY (table_name, value))"
            )
        yield conn
    finally:
        conn.close()


def _create_catalog_file(path: Path) -> None:
    """Create an empty catalog file whole or not at all.

    DuckDB writes a new file's header in several writes; a process killed in between (a power cut, a
    runner killed with its steps) left a file DuckDB refuses ("not a valid DuckDB database file") and
    every later step 3 failed on it. The file is made under a private name and linked into place, which
    also lets the two contexts of step 3 race to create it: the second link fails and keeps the first.
    """
    import duckdb

    staging = path.with_name(f".{path.name}.creating-{os.getpid()}")
    staging.unlink(missing_ok=True)
    duckdb.connect(str(staging)).close()
    try:
        os.link(staging, path)
    except FileExistsError:
        pass
    finally:
        staging.unlink(missing_ok=True)


# --------------------------------------------------------------------------- reading the catalog


def _load_table(conn: Any, database: str, table: str) -> TableInfo | None:
    row = conn.execute(
        f"SELECT storage_root, partition_col, columns FROM {database}.tables WHERE name = ?", [table]
    ).fetchone()
    if row is None:
        return None
    parts = conn.execute(
        f"SELECT value, location, files, rows, bytes FROM {database}.partitions WHERE table_name = ? ORDER BY value",
        [table],
    ).fetchall()
    return TableInfo(
        database=database,
        name=table,
        storage_root=str(row[0]),
        partition_col=str(row[1]),
        columns=tuple((str(n), str(t)) for n, t in json.loads(row[2])),
        partitions=tuple(
            Partition(value=int(v), location=str(loc), files=tuple(files), rows=int(r), bytes=int(b))
            for v, loc, files, r, b in parts
        ),
    )


def _has_bookkeeping(conn: Any, database: str) -> bool:
    found = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = 'tables'",
        [database],
    ).fetchone()
    return bool(found and found[0])


def get_table(params: Mapping[str, Any], table: str) -> TableInfo:
    """A registered table with its partitions; `tables-not-registered` if it is not there."""
    if is_glue_catalog(params):
        from flywheel.pipelines.db_refresh import glue_catalog as glue

        return glue.get_table(params, table)
    database = database_name(params)
    with _connect(params, write=False) as conn:
        info = _load_table(conn, database, table) if _has_bookkeeping(conn, database) else None
    if info is None:
        raise job_error(
            JobErrorType.TABLE_NOT_REGISTERED,
            f"table {database}.{table} is not registered in the catalog: run step 3 (register-part-tables)",
        )
    return info


def list_tables(params: Mapping[str, Any]) -> tuple[TableInfo, ...]:
    database = database_name(params)
    with _connect(params, write=False) as conn:
        if not _has_bookkeeping(conn, database):
            return ()
        names = [r[0] for r in conn.execute(f"SELECT name FROM {database}.tables ORDER BY name").fetchall()]
        return tuple(t for t in (_load_table(conn, database, n) for n in names) if t is not None)


def list_partitions(params: Mapping[str, Any], table: str) -> tuple[Partition, ...]:
    return get_table(params, table).partitions


def table_fingerprint(params: Mapping[str, Any], table: str) -> str:
    """A digest of what the catalog says a table is: storage root, schema and registered partitions.

    Equal fingerprints mean a reader sees the same columns over the same partition files, so a
    step that only registers or repairs can be trusted as done.
    """
    return fingerprint_of(get_table(params, table))


def read_part_table(session: engine.Session, params: Mapping[str, Any], table: str) -> engine.DataFrame:
    """A registered part table as a DataFrame over its registered partitions only.

    `table` is the catalog name (e.g. `part_addressable_ids`). Fails with `tables-not-registered` when
    the table or its partitions have not been registered (steps 3 and 4).
    """
    if engine.engine_name(params) == "spark" and is_glue_catalog(params):
        # On Glue, Spark's own metastore is the Glue Data Catalog (--enable-glue-datacatalog).
        return session.table(f"{database_name(params)}.{table}")
    info = get_table(params, table)
    if not info.partitions:
        raise job_error(
            JobErrorType.TABLE_NOT_REGISTERED,
            f"table {info.qualified_name} has no registered partitions: run step 4 (prepare-part-tables)",
        )
    df = engine.read_partitions(session, info.storage_root, info.partition_col, info.partition_values)
    return df.select(*[name for name, _ in info.columns])


# --------------------------------------------------------------------------- disk


def discover_partitions(storage_root: str | Path, partition_col: str = PARTITION_COL) -> dict[int, Path]:
    """Every `partition_col=<int>` directory under a storage root, as it is on disk now."""
    root = engine.local_path(storage_root)
    prefix = f"{partition_col}="
    found: dict[int, Path] = {}
    if root.is_dir():
        for child in root.iterdir():
            if child.is_dir() and child.name.startswith(prefix):
                text = child.name[len(prefix) :]
                if re.fullmatch(r"-?\d+", text):
                    found[int(text)] = child
    return dict(sorted(found.items()))


def scan_partitions(storage_root: str | Path, partition_col: str = PARTITION_COL) -> tuple[Partition, ...]:
    """Every partition directory on disk with its files and row count (from Parquet footers only).

    For checking a storage root before the catalog is changed; the catalog file is not opened. A file
    that cannot be read is `corrupt-file`; files of different schemas are `schema-mismatch`.
    """
    if str(storage_root).startswith("s3://"):
        from flywheel.pipelines.db_refresh import glue_catalog as glue

        return glue.scan_partitions(str(storage_root), partition_col)
    import duckdb

    conn = duckdb.connect()
    try:
        found = discover_partitions(storage_root, partition_col)
        files = [f for d in found.values() for f in _data_files(d)]
        check_same_schema(conn, files, JobErrorType.CORRUPT_FILE, JobErrorType.SCHEMA_MISMATCH)
        return tuple(_describe_partition(conn, d, v) for v, d in found.items())
    finally:
        conn.close()


def check_same_schema(conn: Any, files: list[Path], unreadable: JobErrorType, mismatch: JobErrorType) -> None:
    """Every file readable and of one schema (column names and physical types, from the footers)."""
    if not files:
        return
    try:
        rows = conn.execute(
            "SELECT file_name, name, type, converted_type, num_children FROM parquet_schema(?)",
            [[str(f) for f in files]],
        ).fetchall()
    except Exception as exc:
        bad = []
        for file in files:
            try:
                conn.execute("SELECT count(*) FROM parquet_schema(?)", [str(file)]).fetchall()
            except Exception as single:
                bad.append(f"{file} ({engine.first_line(single)})")
        raise job_error(
            unreadable,
            f"not readable Parquet: {'; '.join(bad) or engine.first_line(exc)}. Re-run the split step that writes it",
        ) from exc
    schemas: dict[str, list[tuple[Any, ...]]] = {}
    for file_name, *element in rows:
        schemas.setdefault(str(file_name), []).append(tuple(element))
    shapes: dict[tuple[tuple[Any, ...], ...], list[str]] = {}
    for file_name, elements in schemas.items():
        shapes.setdefault(tuple(elements[1:]), []).append(file_name)  # the root's name depends on the writer
    if len(shapes) > 1:
        usual = max(shapes.values(), key=len)
        odd = sorted(f for group in shapes.values() if group is not usual for f in group)
        raise job_error(
            mismatch,
            f"{len(odd)} of {len(files)} files have another schema than the rest, e.g. {odd[0]}. "
            "Re-run the split step that writes them, so that every partition has the same columns",
        )


def _data_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.parquet") if p.is_file() and not p.name.startswith((".", "_")))


def _describe_partition(conn: Any, directory: Path, value: int) -> Partition:
    files = _data_files(directory)
    rows = 0
    if files:
        listing = ", ".join(f"'{sql_text(str(f))}'" for f in files)
        found = conn.execute(f"SELECT count(*) FROM read_parquet([{listing}])").fetchone()
        rows = int(found[0]) if found else 0
    return Partition(
        value=value,
        location=str(directory),
        files=tuple(f.name for f in files),
        rows=rows,
        bytes=sum(f.stat().st_size for f in files),
    )


def _infer_columns(conn: Any, root: Path, partition_col: str) -> tuple[tuple[str, str], ...]:
    pattern = f"{root}/{partition_col}=*/*.parquet"
    files = [f for d in discover_partitions(root, partition_col).values() for f in _data_files(d)]
    if not files:
        raise job_error(
            JobErrorType.SCHEMA_INFERENCE_FAILED,
            f"cannot infer a schema: no Parquet files under {root}/{partition_col}=*/. "
            "Run the split steps (1 and 2) first, or fix storage_root",
        )
    kind = JobErrorType.SCHEMA_INFERENCE_FAILED
    check_same_schema(conn, files, kind, kind)
    try:
        rows = conn.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{sql_text(pattern)}', hive_partitioning = true, "
            f"hive_types = {{'{sql_text(partition_col)}': INTEGER}})"
        ).fetchall()
    except Exception as exc:
        raise job_error(
            kind,
            f"cannot infer a schema from {pattern}: {engine.first_line(exc)}. Re-run the split step that writes it",
        ) from exc
    data = [(str(r[0]), str(r[1])) for r in rows if r[0] != partition_col]
    return (*data, (partition_col, "INTEGER"))


# --------------------------------------------------------------------------- changing the catalog


def register_table(
    params: Mapping[str, Any], table: str, storage_root: str | Path, *, partition_col: str = PARTITION_COL
) -> TableInfo:
    """Register (or re-register) a table over a storage root, with the partitions on disk right now.

    The schema comes from the data. Re-registering the same table over the same root replaces its
    schema and partitions; a table or view of that name over another root (or made by hand) is a
    `table-prefix-conflict`. The database is created only when `create_database` is true (default).
    """
    if is_glue_catalog(params):
        from flywheel.pipelines.db_refresh import glue_catalog as glue

        return glue.register_table(params, table, str(storage_root), partition_col=partition_col)
    if str(storage_root).startswith("s3://"):
        raise job_error(
            JobErrorType.UNSUPPORTED,
            f"{storage_root} is on S3 but the catalog is the local file {params.get('catalog')}, which cannot "
            "point at S3: set `catalog: glue` in the environment's settings for s3:// data roots",
        )
    if not _IDENT.match(table) or table in BOOKKEEPING:
        raise job_error(
            JobErrorType.TABLE_PREFIX_CONFLICT,
            f"{table!r} cannot be a table name here: use a plain identifier other than {BOOKKEEPING}",
        )
    root = engine.local_path(storage_root)
    database = database_name(params)
    create = bool(params.get("create_database", True))
    with _connect(params, create=create) as conn:
        _check_conflict(conn, database, table, root)
        columns = _infer_columns(conn, root, partition_col)
        partitions = [_describe_partition(conn, d, v) for v, d in discover_partitions(root, partition_col).items()]
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute(f"DELETE FROM {database}.tables WHERE name = ?", [table])
            conn.execute(
                f"INSERT INTO {database}.tables VALUES (?, ?, ?, ?, now())",
                [table, str(root), partition_col, json.dumps([list(c) for c in columns])],
            )
            conn.execute(f"DELETE FROM {database}.partitions WHERE table_name = ?", [table])
            _insert_partitions(conn, database, table, partitions)
            info = _load_table(conn, database, table)
            assert info is not None
            _create_view(conn, info)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return info


def add_partitions(params: Mapping[str, Any], table: str, values: Iterable[int]) -> tuple[int, ...]:
    """Register partitions found on disk; returns the values newly added (already there: ignored)."""
    wanted = set(values)
    current = set(get_table(params, table).partition_values)
    changed = sync_partitions(params, table, current | wanted)
    return changed[0]


def drop_partitions(params: Mapping[str, Any], table: str, values: Iterable[int]) -> tuple[int, ...]:
    """Unregister partitions (the files stay on disk); returns the values actually dropped."""
    current = set(get_table(params, table).partition_values)
    changed = sync_partitions(params, table, current - set(values))
    return changed[1]


def sync_partitions(
    params: Mapping[str, Any], table: str, values: Iterable[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Make the registered partitions exactly `values`, in one transaction; returns (added, dropped).

    Kept partitions are re-described from disk, so files rewritten since registration are picked up.
    """
    if is_glue_catalog(params):
        from flywheel.pipelines.db_refresh import glue_catalog as glue

        return glue.sync_partitions(params, table, values)
    database = database_name(params)
    wanted = sorted(set(values))
    with _connect(params) as conn:
        info = _load_table(conn, database, table) if _has_bookkeeping(conn, database) else None
        if info is None:
            raise job_error(
                JobErrorType.TABLE_NOT_REGISTERED,
                f"table {database}.{table} is not registered: run step 3 (register-part-tables)",
            )
        root = engine.local_path(info.storage_root)
        missing = [v for v in wanted if not engine.partition_dir(root, info.partition_col, v).is_dir()]
        if missing:
            raise job_error(
                JobErrorType.PARTITION_MISMATCH,
                f"cannot register partitions {missing} of {info.qualified_name}: no such directories under {root}",
            )
        before = set(info.partition_values)
        partitions = [_describe_partition(conn, engine.partition_dir(root, info.partition_col, v), v) for v in wanted]
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute(f"DELETE FROM {database}.partitions WHERE table_name = ?", [table])
            _insert_partitions(conn, database, table, partitions)
            updated = _load_table(conn, database, table)
            assert updated is not None
            _create_view(conn, updated)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return tuple(v for v in wanted if v not in before), tuple(sorted(before - set(wanted)))


def _insert_partitions(conn: Any, database: str, table: str, partitions: Iterable[Partition]) -> None:
    for p in partitions:
        conn.execute(
            f"INSERT INTO {database}.partitions VALUES (?, ?, ?, ?, ?, ?, now())",
            [table, p.value, p.location, list(p.files), p.rows, p.bytes],
        )


def _check_conflict(conn: Any, database: str, table: str, root: Path) -> None:
    existing = _load_table(conn, database, table)
    if existing is not None:
        if existing.storage_root != str(root):
            raise job_error(
                JobErrorType.TABLE_PREFIX_CONFLICT,
                f"table {database}.{table} is already registered over {existing.storage_root}, not {root}: "
                "choose another table_prefix, or drop the old table",
            )
        return
    found = conn.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [database, table],
    ).fetchone()
    if found is not None:
        raise job_error(
            JobErrorType.TABLE_PREFIX_CONFLICT,
            f"{database}.{table} already exists ({str(found[0]).lower()}) and was not registered by "
            f"flywheel over {root}: choose another table_prefix, or drop it",
        )


def _create_view(conn: Any, info: TableInfo) -> None:
    """Point the table's view at its registered partition directories, and nothing else."""
    select = ", ".join(sql_ident(name) for name, _ in info.columns)
    if info.partitions:
        dirs = ", ".join(f"'{sql_text(p.location)}/*.parquet'" for p in info.partitions)
        types = f"{{'{sql_text(info.partition_col)}': INTEGER}}"
        source = f"read_parquet([{dirs}], hive_partitioning = true, hive_types = {types})"
        body = f"SELECT {select} FROM {source}"
    else:
        nulls = ", ".join(f"CAST(NULL AS {kind}) AS {sql_ident(name)}" for name, kind in info.columns)
        body = f"SELECT {nulls} WHERE false"
    conn.execute(f"CREATE OR REPLACE VIEW {info.database}.{sql_ident(info.name)} AS {body}")
