"""The one place where DuckDB (through SQLFrame) and Spark differ for the db-refresh jobs.

Jobs are written once against the PySpark DataFrame API. Locally that API is SQLFrame on a DuckDB
connection; on AWS Glue it is a real SparkSession. SQLFrame covers most of the API but not
`write.partitionBy`, `pmod`, `xxhash64` or `conv`, and its `hash()` is not Spark's, so anything that
must agree byte for byte across engines (the bucket of an id, the partition layout on disk) is defined
here, once per engine, and nowhere else.

Where SQLFrame falls short (partitioned writes, re-planning long lineages) this module drops to DuckDB
SQL on the session's own connection.

Spark (`engine: spark`, or `flywheel run --engine spark`) is a real JVM SparkSession: `local[2]` on this
machine, or whatever cluster launched the process (`spark-submit`, AWS Glue 5.0 = Spark 3.5). Its
Parquet is pinned to what DuckDB writes (microsecond UTC timestamps, not Spark's default INT96), so the
two engines' outputs have the same column types; `docs/spark.md` tells the local-to-cluster story.

Storage is a local directory tree or S3 (`storage.py`). Spark reads and writes `s3://` itself (Glue has
the S3 connector). DuckDB here has no S3 extension, so against `s3://` roots it stages through local
scratch: the objects a step reads are downloaded into a directory beside the session's scratch database
(removed with the session), the step computes locally, and a partitioned output is uploaded with the S3
commit protocol (`storage.S3Storage.commit`: data objects first, `_manifest.json` last, stale objects
after). Either way a partitioned output on S3 is read back only through what its manifest lists.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Any, TypeAlias

from flywheel.invocation import JobError
from flywheel.pipelines.db_refresh import storage

Session: TypeAlias = Any
"""A `pyspark.sql.SparkSession` or a SQLFrame `DuckDBSession`: both speak the PySpark API."""

DataFrame: TypeAlias = Any
Column: TypeAlias = Any

MANIFEST = "_manifest.json"
"""Written last into a partitioned output: its presence says the output is complete."""

BUCKET_HEX_DIGITS = 8

log = logging.getLogger(__name__)


class JobErrorType(StrEnum):
    """Stable names of the expected failures of the db-refresh jobs (`JobError.error_type`)."""

    MISSING_SOURCE = "missing-source"
    CORRUPT_FILE = "corrupt-file"
    SCHEMA_MISMATCH = "schema-mismatch"
    EMPTY_SOURCE = "empty-source"
    EMPTY_PARTITION = "empty-partition"
    PARTITION_MISMATCH = "partition-mismatch"
    DATABASE_MISSING = "database-missing"
    TABLE_NOT_REGISTERED = "tables-not-registered"
    TABLE_PREFIX_CONFLICT = "table-prefix-conflict"
    SCHEMA_INFERENCE_FAILED = "schema-inference-failed"
    CATALOG_BUSY = "catalog-busy"
    UNSUPPORTED = "unsupported"


def job_error(kind: JobErrorType, message: str) -> JobError:
    return JobError(message, error_type=str(kind))


# --------------------------------------------------------------------------- sessions


def engine_name(params: Mapping[str, Any]) -> str:
    """`duckdb` (local, the default) or `spark`."""
    name = str(params.get("engine") or "duckdb").lower()
    if name not in ("duckdb", "spark"):
        raise job_error(JobErrorType.UNSUPPORTED, f"unknown engine {name!r}: use duckdb or spark")
    return name


def open_session(params: Mapping[str, Any]) -> Session:
    """A session sized by `memory_limit` and `threads`, with UTC as the session time zone.

    DuckDB is capped per process so that steps 1 and 2 can run side by side on a small machine. Its
    database is a scratch file in `temp_directory` (default: the system temp dir), not memory, so
    what a job stores in it lives compressed on disk; the file goes with `close_session`
    (SQLFrame keeps one active session per process, so always close).
    """
    if engine_name(params) == "spark":
        return _open_spark(params)
    import duckdb
    from sqlframe.duckdb import DuckDBSession

    temp_dir = Path(str(params.get("temp_directory") or Path(tempfile.gettempdir()) / "flywheel-duckdb"))
    temp_dir.mkdir(parents=True, exist_ok=True)
    _remove_orphaned_scratch(temp_dir)
    # the file name becomes the catalog name, which SQLFrame needs to be a plain identifier
    scratch = temp_dir / f"session_{os.getpid()}_{uuid.uuid4().hex[:8]}.duckdb"
    conn = duckdb.connect(str(scratch), config={"threads": int(params.get("threads") or 1)})
    conn.execute(f"SET memory_limit = '{sql_text(str(params.get('memory_limit') or '4GB'))}'")
    conn.execute(f"SET temp_directory = '{sql_text(str(temp_dir))}'")
    conn.execute("SET preserve_insertion_order = false")
    # A partitioned COPY buffers this many rows per thread before it writes them out: DuckDB's default
    # (524,288) made staging ten million rows spill 2 GB under a 1.5 GB limit; 100,000 spilled 0.3 GB.
    conn.execute("SET partitioned_write_flush_threshold = 100000")
    conn.execute("SET TimeZone = 'UTC'")
    session = DuckDBSession(conn=conn)
    session._flywheel_scratch = scratch  # type: ignore[attr-defined]  # removed by close_session
    return session


SPARK_MASTER = "local[2]"
"""This machine has 2 cores; a cluster (spark-submit, Glue) brings its own master instead."""

SPARK_SQL_CONF: Mapping[str, str] = {
    # Instants, compared and printed in UTC, as the DuckDB session does.
    "spark.sql.session.timeZone": "UTC",
    # Spark 3.5 writes timestamps as INT96 by default; DuckDB (and Athena, Glue crawlers, pyarrow)
    # read and write INT64 microseconds. Pinned so both engines write the same Parquet types.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.parquet.compression.codec": "snappy",
    "spark.sql.sources.partitionOverwriteMode": "static",
}
"""Session settings that decide what the jobs compute and write: set on every session, ours or a cluster's."""


def _remove_orphaned_scratch(temp_dir: Path) -> None:
    """Scratch databases and staged frames of processes killed before they could close their session."""
    for file in [*temp_dir.glob("session_*.duckdb*"), *temp_dir.glob("stage_*")]:
        try:
            pid = int(file.name.split("_")[1])
        except (IndexError, ValueError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            if file.is_dir():
                shutil.rmtree(file, ignore_errors=True)
            else:
                file.unlink(missing_ok=True)
        except PermissionError:  # alive, someone else's
            continue


def _open_spark(params: Mapping[str, Any]) -> Session:
    """The process's SparkSession, created on first use and reused afterwards.

    Launched by `spark-submit` or Glue (`PYSPARK_GATEWAY_PORT` is set), the cluster's own configuration
    stands and only `SPARK_SQL_CONF` is applied. Otherwise a local JVM is started: `spark_master`
    (default `local[2]`), a driver heap of `spark_driver_memory` (default: the step's `memory_limit`, as
    for DuckDB, so steps 1 and 2 side by side fit the machine), scratch under `temp_directory`, no UI.
    JVM settings only take effect when the JVM starts, so a reused session keeps the first ones.
    """
    try:
        from pyspark.sql import SparkSession  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise job_error(
            JobErrorType.UNSUPPORTED,
            "engine spark needs pyspark 3.5 (`uv sync --group spark`, or run on AWS Glue 5.0); or use engine duckdb",
        ) from exc
    session = SparkSession.getActiveSession()
    if session is None:
        builder = SparkSession.builder.appName(f"flywheel-{params.get('pipeline') or 'db-refresh'}")
        if not os.environ.get("PYSPARK_GATEWAY_PORT"):
            for key, value in _local_spark_conf(params).items():
                builder = builder.config(key, value)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel(str(params.get("spark_log_level") or "WARN"))
    for key, value in SPARK_SQL_CONF.items():
        session.conf.set(key, value)
    return session


def _local_spark_conf(params: Mapping[str, Any]) -> dict[str, str]:
    scratch = Path(str(params.get("temp_directory") or Path(tempfile.gettempdir()) / "flywheel-spark")) / "spark"
    scratch.mkdir(parents=True, exist_ok=True)
    return {
        "spark.master": str(params.get("spark_master") or SPARK_MASTER),
        "spark.driver.memory": spark_memory(
            str(params.get("spark_driver_memory") or params.get("memory_limit") or "4GB")
        ),
        "spark.local.dir": str(scratch),
        "spark.sql.warehouse.dir": str(scratch / "warehouse"),
        # A few shuffle partitions per core: 200 (the default) is for clusters, and costs tasks here.
        "spark.sql.shuffle.partitions": str(params.get("spark_shuffle_partitions") or 8),
        # The driver's ports on loopback only: local mode needs no other address.
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.host": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # No `_SUCCESS` marker: our own manifest, written last, is the commit marker.
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.driver.extraJavaOptions": f"-Djava.io.tmpdir={scratch}",
    }


def spark_memory(size: str) -> str:
    """A memory size as Spark writes it: `4GB` -> `4g`, `1536MB` -> `1536m` (at least 1g for the driver)."""
    text = size.strip().lower().replace(" ", "").removesuffix("ib").removesuffix("b")
    units = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
    try:
        megabytes = float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text) / 2**20
    except (ValueError, IndexError):
        raise job_error(JobErrorType.UNSUPPORTED, f"memory size {size!r} is not like 4GB or 1536MB") from None
    megabytes = max(megabytes, 1024)
    return f"{int(megabytes // 1024)}g" if megabytes % 1024 == 0 else f"{int(megabytes)}m"


def close_session(session: Session) -> None:
    """Ends a DuckDB session and removes its scratch file. A SparkSession is left running: on a cluster
    it belongs to the job (stopping it would end the job early), and locally the JVM ends with the step's
    process, so a step that opens a session twice starts the JVM once."""
    if _is_spark(session):
        return
    session.stop()
    storage.remove_scratch(getattr(session, "_flywheel_s3_scratch", None))
    scratch = getattr(session, "_flywheel_scratch", None)
    if scratch is not None:
        for leftover in (scratch, scratch.with_name(scratch.name + ".wal")):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(_stage_dir(scratch), ignore_errors=True)


@contextlib.contextmanager
def session_scope(params: Mapping[str, Any]) -> Iterator[Session]:
    session = open_session(params)
    try:
        yield session
    finally:
        close_session(session)


def _is_spark(session: Session) -> bool:
    return type(session).__module__.startswith("pyspark")


def functions(session: Session) -> ModuleType:
    """The `pyspark.sql.functions` module of this session's engine."""
    if _is_spark(session):
        from pyspark.sql import functions as spark_functions  # type: ignore[import-not-found, unused-ignore]

        return spark_functions  # type: ignore[no-any-return, unused-ignore]
    from sqlframe.duckdb import functions as duckdb_functions

    return duckdb_functions


def window(session: Session) -> Any:
    """The `pyspark.sql.Window` class of this session's engine."""
    if _is_spark(session):
        from pyspark.sql import Window as SparkWindow  # type: ignore[import-not-found, unused-ignore]

        return SparkWindow
    from sqlframe.duckdb import Window as DuckDBWindow

    return DuckDBWindow


# --------------------------------------------------------------------------- the bucket


def bucket(session: Session, col: Column | str, n: int) -> Column:
    """The part (0..n-1) an id belongs to, identical on every engine and in plain Python.

    Defined as `int(sha256(id as UTF-8).hexdigest()[:8], 16) % n`: the first 8 hex digits of
    `sha2(id, 256)` read as an unsigned 32-bit integer, modulo n. Spark's `hash()`/`xxhash64` are not
    available (or not equal) on SQLFrame, so they must not be used for anything stored.
    A null id has a null bucket.
    """
    if n < 1:
        raise ValueError(f"n_parts must be at least 1, got {n}")
    F = functions(session)
    column = F.col(col) if isinstance(col, str) else col
    prefix = F.substring(F.sha2(column, 256), 1, BUCKET_HEX_DIGITS)
    if _is_spark(session):
        number = F.conv(prefix, 16, 10).cast("bigint")
    else:  # DuckDB reads '0x…' strings as hexadecimal integers
        number = F.concat(F.lit("0x"), prefix).cast("bigint")
    return (number % F.lit(n)).cast("int")


def bucket_of(value: str, n: int) -> int:
    """The plain-Python bucket, for oracles and spot checks."""
    import hashlib

    return int(hashlib.sha256(value.encode("utf-8")).hexdigest()[:BUCKET_HEX_DIGITS], 16) % n


# --------------------------------------------------------------------------- storage


def local_path(path: str | os.PathLike[str]) -> Path:
    """A local location as an absolute path (`s3://` ones go through `storage` and `_readable`)."""
    text = os.fspath(path)
    if "://" in text and not text.startswith("file://"):
        raise job_error(JobErrorType.UNSUPPORTED, f"{text}: only local paths and s3:// locations are supported")
    return Path(text.removeprefix("file://")).absolute()


def _readable(session: Session, path: str | os.PathLike[str]) -> str:
    """Where this session's engine reads `path` from: Spark reads `s3://` itself, DuckDB a local copy."""
    text = os.fspath(path)
    if not storage.is_remote(text):
        return str(local_path(text))
    if _is_spark(session):
        return text
    return str(storage.local_copy(_s3_scratch(session), text))


def _s3_scratch(session: Session) -> Path:
    """The session's directory for S3 objects staged locally; removed by `close_session`."""
    found: Path | None = getattr(session, "_flywheel_s3_scratch", None)
    if found is None:
        database = getattr(session, "_flywheel_scratch", None)
        found = storage.scratch_dir(database.parent if database is not None else None)
        session._flywheel_s3_scratch = found
    return found


def list_files(root: str | os.PathLike[str], suffixes: Sequence[str]) -> list[str]:
    """Data files directly under `root` whose names end with one of `suffixes`, sorted; hidden skipped."""
    return storage.storage_for(root).list_files(os.fspath(root), suffixes)


def csv_header(path: str | os.PathLike[str]) -> list[str]:
    """The column names in a CSV file's header line (gzip or plain), without reading the file
    (on S3: from the first bytes, by a ranged GET). `empty-source` for a file with no header line."""
    text = os.fspath(path)
    file: str | Path = text if storage.is_remote(text) else local_path(text)
    try:
        if isinstance(file, str):
            line = storage.S3Storage().read_csv_header(file)
        else:
            opener: Callable[..., Any] = gzip.open if file.name.endswith(".gz") else open
            with opener(file, "rt", encoding="utf-8", newline="") as handle:
                line = handle.readline()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise job_error(
            JobErrorType.CORRUPT_FILE, f"{file}: cannot read the header line ({exc}); re-deliver the file"
        ) from exc
    if not line.strip():  # neither a header nor rows: an empty delivery, whatever its columns were to be
        state = "is empty" if not line else "starts with a blank line instead of the header"
        raise job_error(
            JobErrorType.EMPTY_SOURCE,
            f"{file} {state}: no header line, so no columns and no rows. Ask for a re-delivery of the file, "
            "or move it out of the source directory",
        )
    return [name.strip().strip('"').strip() for name in line.rstrip("\r\n").split(",")]


def parquet_columns(session: Session, path: str | os.PathLike[str]) -> list[str]:
    """Top-level column names from a Parquet file's footer: cheap, and fails on a truncated file."""
    file = path if storage.is_remote(path) else local_path(path)
    try:
        readable = _readable(session, file)
        if _is_spark(session):
            return list(session.read.parquet(readable).columns)
        rows = session._conn.execute(f"DESCRIBE SELECT * FROM read_parquet('{sql_text(readable)}')")
        return [str(row[0]) for row in rows.fetchall()]
    except JobError:
        raise
    except Exception as exc:
        raise job_error(
            JobErrorType.CORRUPT_FILE,
            f"{file}: not a readable Parquet file ({first_line(exc)}); re-deliver it",
        ) from exc


# --------------------------------------------------------------------------- reading


_DUCKDB_TYPES = {
    "string": "VARCHAR",
    "timestamp": "TIMESTAMPTZ",  # Spark's TimestampType is an instant; with the session in UTC
    "int": "INTEGER",
    "bigint": "BIGINT",
    "boolean": "BOOLEAN",
    "double": "DOUBLE",
    "date": "DATE",
}


def read_csv(session: Session, paths: Sequence[str | os.PathLike[str]], schema: str) -> DataFrame:
    """CSV files with a header line, read with an explicit DDL schema (`"id STRING, seen TIMESTAMP"`).

    Columns are taken by position: check the header with `csv_header` first (DuckDB ignores the
    header's names when a schema is given). A value that does not parse as its type fails the read.
    """
    files = [_readable(session, p) for p in paths]
    if _is_spark(session):
        return session.read.schema(schema).option("header", True).option("mode", "FAILFAST").csv(files)
    columns = []
    for item in schema.split(","):
        name, kind = item.split()
        columns.append(f"'{sql_text(name)}': '{_DUCKDB_TYPES[kind.lower()]}'")
    listing = ", ".join(f"'{sql_text(f)}'" for f in files)
    return _duckdb_view(
        session,
        f"SELECT * FROM read_csv([{listing}], header = true, auto_detect = false, columns = {{{', '.join(columns)}}})",
    )


def read_parquet(session: Session, paths: Sequence[str | os.PathLike[str]]) -> DataFrame:
    """Plain Parquet files, columns matched by name (not partitioned directories: see `read_partitions`)."""
    files = [_readable(session, p) for p in paths]
    if _is_spark(session):
        return session.read.parquet(*files)
    listing = ", ".join(f"'{sql_text(f)}'" for f in files)
    return _duckdb_view(session, f"SELECT * FROM read_parquet([{listing}], union_by_name = true)")


def stage_by_part(df: DataFrame, partition_col: str) -> DataFrame:
    """Compute `df` once into local scratch, split by `partition_col`, and continue from there.

    Steps 1-2 read a source once this way, count it, then deduplicate and write it a part at a time
    (`write_partitioned(..., parts=...)`): a part's window fits in memory where the whole source's did
    not (at 10M rows under a 1.5 GB limit the single window spilled 6 GB and took twice as long), and
    the count reads one small column instead of the source again. The staged files go with the session.
    Spark shuffles and spills on its own: there the frame is returned as it is.
    """
    session = df.session if hasattr(df, "session") else df.sparkSession
    if _is_spark(session):
        return df
    database: Path = session._flywheel_scratch
    folder = _stage_dir(database) / uuid.uuid4().hex[:8]
    folder.parent.mkdir(parents=True, exist_ok=True)
    _duckdb_copy(df, folder, partition_col, scratch=True)
    values = sorted(storage.LocalStorage().partitions(str(folder), partition_col)) if folder.is_dir() else []
    if not values:
        return df.limit(0)
    return read_partitions(session, folder, partition_col, values)


def _stage_dir(database: Path) -> Path:
    """Beside the session's scratch database, named by process so an orphan can be recognised."""
    return database.with_name(f"stage_{database.stem.removeprefix('session_')}")


def partition_dir(root: str | os.PathLike[str], partition_col: str, value: int) -> Path:
    return local_path(root) / f"{partition_col}={value}"


def read_partitions(
    session: Session, root: str | os.PathLike[str], partition_col: str, values: Sequence[int]
) -> DataFrame:
    """Only the listed hive partitions of a partitioned output, with the partition column as `int`.

    This is how a part table reads only its registered partitions, whatever else is on disk. On S3 only
    the files the output's manifest lists are read (see `storage`); DuckDB reads local copies of them.
    """
    if storage.is_remote(root) and _is_spark(session):
        files = _committed_files(str(root), partition_col, values)
        uris = [storage.join(str(root), f"{partition_col}={v}", f) for v, names in files.items() for f in names]
        df = session.read.option("basePath", str(root)).parquet(*uris)
        return df.withColumn(partition_col, functions(session).col(partition_col).cast("int"))
    dirs = _local_partition_dirs(session, root, partition_col, values)
    if _is_spark(session):
        df = session.read.option("basePath", str(local_path(root))).parquet(*map(str, dirs))
        return df.withColumn(partition_col, functions(session).col(partition_col).cast("int"))
    # A view in the session's own in-memory database: SQLFrame's reader re-plans a long list of
    # globs expensively, while a view is planned once by DuckDB.
    globs = ", ".join(f"'{sql_text(str(d / '*.parquet'))}'" for d in dirs)
    types = f"{{'{sql_text(partition_col)}': INTEGER}}"
    return _duckdb_view(
        session, f"SELECT * FROM read_parquet([{globs}], hive_partitioning = true, hive_types = {types})"
    )


def _local_partition_dirs(
    session: Session, root: str | os.PathLike[str], partition_col: str, values: Sequence[int]
) -> list[Path]:
    """The listed partitions' directories; on S3, of local copies of the files the manifest lists."""
    if storage.is_remote(root):
        scratch, s3 = _s3_scratch(session), storage.S3Storage()
        folders: dict[int, str] = {}
        for value, names in _committed_files(str(root), partition_col, values).items():
            for name in names:
                storage.local_copy(scratch, storage.join(str(root), f"{partition_col}={value}", name), client=s3)
            # one commit writes a partition's files under one prefix (`commit-<id>/`)
            folders[value] = posixpath.dirname(names[0]) if names else ""
        bucket, key = storage.split_uri(str(root))
        local = scratch / bucket / key
        return [partition_dir(local, partition_col, v) / folders.get(v, "") for v in sorted(values)]
    return [partition_dir(root, partition_col, v) for v in sorted(values)]


FooterRow = tuple[int, str, int, int, str, int | None, str | None]
"""(part, file, row group, rows in the row group, column path, null count, smallest value as text)."""


def parquet_footers(
    session: Session, root: str | os.PathLike[str], partition_col: str, values: Sequence[int]
) -> list[FooterRow] | None:
    """The footer statistics of the listed partitions' files, a row per row group and column (nested
    columns' paths are joined with ", "); None on Spark, which has no reader for them (see `footers`)."""
    if _is_spark(session):
        return None
    files = [
        (v, f)
        for v, d in zip(sorted(values), _local_partition_dirs(session, root, partition_col, values), strict=True)
        for f in sorted(d.glob("*.parquet"))
    ]
    if not files:
        return []
    part_of = {str(f): v for v, f in files}
    listing = ", ".join(f"'{sql_text(str(f))}'" for _, f in files)
    found = session._conn.execute(
        "SELECT file_name, row_group_id, row_group_num_rows, path_in_schema, stats_null_count, stats_min_value "
        f"FROM parquet_metadata([{listing}])"
    ).fetchall()
    return [
        (part_of[str(file)], str(file), int(group), int(rows), str(column), nulls, smallest)
        for file, group, rows, column, nulls, smallest in found
    ]


def _committed_files(root: str, partition_col: str, values: Sequence[int]) -> dict[int, tuple[str, ...]]:
    """The data files of the wanted partitions: those the manifest lists, or (no manifest) those listed."""
    manifest = read_manifest(root)
    if manifest is not None:
        return {v: manifest.partitions[v].files for v in sorted(values) if v in manifest.partitions}
    found = storage.storage_for(root).partitions(root, partition_col)
    return {v: tuple(f.name for f in found[v]) for v in sorted(values) if v in found}


def _duckdb_view(session: Session, sql: str) -> DataFrame:
    name = f"_flywheel_view_{uuid.uuid4().hex[:12]}"
    session._conn.execute(f"CREATE VIEW {name} AS {sql}")
    return session.table(name)


def schema_of(df: DataFrame) -> tuple[tuple[str, str], ...]:
    """(name, Spark simple type) pairs, e.g. `("interests", "array<string>")`, the same on both engines."""
    return tuple((f.name, f.dataType.simpleString()) for f in df.schema.fields)


def find_unreadable(reader: Callable[[list[str]], DataFrame], files: Sequence[str]) -> list[tuple[str, str]]:
    """Which of `files` cannot be read on its own: called after a failed read, to name the culprit."""
    bad: list[tuple[str, str]] = []
    for file in files:
        try:
            df = reader([str(file)])
            # every column counted, so every value is parsed: a bare count() may skip unread columns
            F = functions(df.session if hasattr(df, "session") else df.sparkSession)
            df.agg(*(F.count(F.col(name)) for name in df.columns)).collect()
        except Exception as exc:  # any engine error means the file is unusable as it is
            bad.append((file, first_line(exc)))
    return bad


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class PartitionStats:
    rows: int
    files: tuple[str, ...]
    bytes: int
    etags: tuple[str, ...] = ()
    """S3 ETags of `files`, in the same order (none for local files)."""


@dataclass(frozen=True)
class PartitionedOutput:
    """The manifest of a partitioned output: what was committed, read back from the files themselves."""

    path: str
    partition_col: str
    columns: tuple[tuple[str, str], ...]
    partitions: Mapping[int, PartitionStats] = field(default_factory=dict)
    unique_key: tuple[str, ...] = ()
    """Columns the writer guarantees hold no repeated value within a partition (steps 1-2: `id`)."""
    canonical: Mapping[str, str] = field(default_factory=dict)
    """Column -> the form (`canonical.FORMS`) the writer put every value of it in."""
    commit: Mapping[str, Any] | None = None
    """On S3, the commit record (`storage.Commit.record`): the current commit prefix and the retired ones."""

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions.values())

    def to_json(self) -> str:
        body = asdict(self)
        body["partitions"] = {
            str(k): {name: value for name, value in asdict(v).items() if name != "etags" or v.etags}
            for k, v in sorted(self.partitions.items())
        }
        body["rows"] = self.rows
        if body["commit"] is None:
            del body["commit"]
        return json.dumps(body, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PartitionedOutput:
        body = json.loads(text)
        parts = {
            int(k): PartitionStats(
                rows=v["rows"], files=tuple(v["files"]), bytes=v["bytes"], etags=tuple(v.get("etags") or ())
            )
            for k, v in body["partitions"].items()
        }
        columns = tuple((str(name), str(kind)) for name, kind in body["columns"])
        unique_key = tuple(str(c) for c in body.get("unique_key") or ())
        return cls(
            path=body["path"],
            partition_col=body["partition_col"],
            columns=columns,
            partitions=parts,
            unique_key=unique_key,
            canonical={str(k): str(v) for k, v in (body.get("canonical") or {}).items()},
            commit=body.get("commit") if isinstance(body.get("commit"), dict) else None,
        )


def read_manifest(path: str | os.PathLike[str]) -> PartitionedOutput | None:
    """The committed output at `path` (local or `s3://`), or None when nothing was committed there."""
    text = storage.storage_for(path).read_text(storage.join(path, MANIFEST))
    return PartitionedOutput.from_json(text) if text is not None else None


def intact_manifest(root: str, partition_col: str, values: Sequence[int]) -> PartitionedOutput | None:
    """The manifest of the output at `root` when the partitions `values` still hold exactly the files
    it lists (same names and sizes): what its writer declared about them (`unique_key`, `canonical`)
    then still holds, since nothing was written there since, not even a file the manifest does not
    list. None otherwise, and readers then check for themselves.
    """
    manifest = read_manifest(root)
    if manifest is None:
        return None
    present = storage.storage_for(root).partitions(root, partition_col)
    for value in values:
        committed, files = manifest.partitions.get(value), present.get(value, ())
        # files of other commit prefixes (retired ones in their grace period) are not this output's
        folders = {posixpath.dirname(name) for name in committed.files} if committed else set()
        files = tuple(f for f in files if posixpath.dirname(f.name) in folders)
        if committed is None or sorted(committed.files) != sorted(f.name for f in files):
            return None
        if committed.bytes != sum(f.size for f in files):
            return None
    return manifest


def write_partitioned(
    df: DataFrame,
    path: str | os.PathLike[str],
    partition_col: str,
    *,
    parts: Sequence[int] | None = None,
    unique_key: Sequence[str] = (),
    canonical: Mapping[str, str] | None = None,
    within_part: Callable[[DataFrame], DataFrame] | None = None,
    commit_grace: timedelta = storage.COMMIT_GRACE,
    after_commit: Callable[[], Collection[str]] | None = None,
) -> PartitionedOutput:
    """Replace `path` with hive-style `partition_col=<int>/` Parquet directories, all or nothing.

    `parts`, when the caller knows every value the partition column takes (the ER table's parts are the
    registered parts of its inputs), makes DuckDB compute and write one part at a time: a join of two
    ten-million-row tables then never holds more than a part in memory (written whole, it spilled
    11 GB at 10M rows and took twice as long). Rows of a value not listed are not written.

    Writes into a hidden staging directory beside `path`, reads row counts back from what was written,
    writes `_manifest.json` last, then swaps the staging directory into place. A reader never sees a
    half-written output: either the old directory or the new one. The partition column is stored only
    in directory names (as Spark and Hive do), not inside the files. An `s3://` path is committed with
    the protocol in `storage` instead (`_write_partitioned_s3`).

    `unique_key` (those columns repeat no value within a partition) and `canonical` (the form each named
    column is in) are the caller's guarantees, recorded in the manifest; readers take them from
    `intact_manifest` instead of counting or normalising again.

    `within_part` is work that never crosses a partition (deduplicating by a key that includes the
    partition column, say): DuckDB applies it to one part's rows at a time, Spark to the whole frame.
    Written after the part filter, a plan that reads its input more than once (a self-join) still reads
    one part: over the whole frame, DuckDB materialised the input once, all of it, for every part.

    On S3 only: `after_commit` runs once the manifest is written (the caller points the Glue catalog at
    the new commit there) and returns the commit ids still in use (what the catalog names); then
    retired commit prefixes older than `commit_grace` are swept (`storage.S3Storage.sweep`).
    """
    if storage.is_remote(path):
        return _write_partitioned_s3(
            df,
            os.fspath(path),
            partition_col,
            parts,
            tuple(unique_key),
            dict(canonical or {}),
            within_part,
            commit_grace,
            after_commit,
        )
    target = local_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.staging-{uuid.uuid4().hex[:8]}"
    session = df.session if hasattr(df, "session") else df.sparkSession
    try:
        if _is_spark(session):
            _spark_write_partitioned(within_part(df) if within_part else df, staging, partition_col)
        else:
            _duckdb_copy(df, staging, partition_col, parts, within_part=within_part)
        staging.mkdir(parents=True, exist_ok=True)  # an empty frame writes nothing
        written = _describe_written(session, staging, target, partition_col)
        output = replace(written, unique_key=tuple(unique_key), canonical=dict(canonical or {}))
        (staging / MANIFEST).write_text(output.to_json())
        _swap_into_place(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return output


def write_parquet(df: DataFrame, path: str | os.PathLike[str]) -> Path:
    """One Parquet file at `path` (replaced atomically): for small outputs such as reports."""
    target = local_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.staging-{uuid.uuid4().hex[:8]}"
    session = df.session if hasattr(df, "session") else df.sparkSession
    try:
        if _is_spark(session):
            df.coalesce(1).write.mode("overwrite").parquet(str(staging))
            part = next(p for p in staging.glob("part-*.parquet") if p.is_file())
            part.replace(target)
        else:
            sql = _duckdb_sql(df)
            session._conn.execute(f"COPY ({sql}) TO '{sql_text(str(staging))}' (FORMAT parquet)")
            staging.replace(target)
    finally:
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        elif staging.exists():
            staging.unlink()
    return target


SPARK_MAX_RECORDS_PER_FILE = 5_000_000
"""Spark writes each part from one task (see `_spark_write_partitioned`); this caps a file's size."""


def _spark_write_partitioned(df: DataFrame, staging: Path | str, partition_col: str) -> None:
    """`partitionBy` after a shuffle on the partition column, so each part is written by one task into
    one file (up to `SPARK_MAX_RECORDS_PER_FILE` rows), not one small file per task per part.

    Hadoop's local file system leaves a `.crc` beside every file; they are removed so the committed
    output holds the data files and the manifest only, as DuckDB's does.
    """
    (
        df.repartition(partition_col)
        .write.mode("overwrite")
        .option("maxRecordsPerFile", SPARK_MAX_RECORDS_PER_FILE)
        .partitionBy(partition_col)
        .parquet(str(staging))
    )
    if isinstance(staging, Path):  # the S3 connector writes no checksum files
        for checksum in staging.rglob(".*.crc"):
            checksum.unlink(missing_ok=True)


def _duckdb_sql(df: DataFrame) -> str:
    """The DuckDB SQL of a SQLFrame DataFrame (its writer lacks partitionBy, so COPY is done here)."""
    session = df.session
    *before, last = df._get_expressions()
    for expression in before:  # e.g. cached frames materialised as temp tables
        session._conn.execute(session._to_sql(expression))
    return str(session._to_sql(last))


SCRATCH_PARQUET = "COMPRESSION uncompressed, DICTIONARY_SIZE_LIMIT 0"
"""For files read once by the same process: no compression or dictionaries to build (at 10M rows,
staging step 1's source took 46 s of CPU instead of 50 s; the disk holds them either way)."""


_PART_STAND_IN = 2_147_480_001
"""No partition number is this large, and no query here holds this literal otherwise."""


def _duckdb_copy(
    df: DataFrame,
    staging: Path,
    partition_col: str,
    parts: Sequence[int] | None = None,
    *,
    scratch: bool = False,
    within_part: Callable[[DataFrame], DataFrame] | None = None,
) -> None:
    conn = df.session._conn
    if parts is None or within_part is None:
        whole = _duckdb_sql(within_part(df) if within_part else df)

        def sql_of(value: int) -> str:
            return whole

    else:
        # Planned once, with a stand-in for the part's value: SQLFrame planned this query in ~0.8 s,
        # which for every part of a small input was most of the step.
        F = functions(df.session)
        template = _duckdb_sql(within_part(df.where(F.col(partition_col) == F.lit(_PART_STAND_IN))))
        if str(_PART_STAND_IN) not in template:
            raise RuntimeError(f"the planned part query lost its stand-in partition value: {template[:200]}")

        def sql_of(value: int) -> str:
            return template.replace(str(_PART_STAND_IN), str(int(value)))

    if scratch:
        _duckdb_copy_to(conn, sql_of, staging, partition_col, parts, scratch=True)
        return
    # DuckDB writes a column it can prove has no nulls (from a staged file's statistics, say) as a
    # REQUIRED Parquet field, so the schema would depend on the data; Spark writes OPTIONAL always.
    conn.execute("SET disabled_optimizers = 'statistics_propagation'")
    try:
        _duckdb_copy_to(conn, sql_of, staging, partition_col, parts, scratch=False)
    finally:
        conn.execute("RESET disabled_optimizers")


def _duckdb_copy_to(
    conn: Any,
    sql_of: Callable[[int], str],
    staging: Path,
    partition_col: str,
    parts: Sequence[int] | None,
    *,
    scratch: bool,
) -> None:
    """`sql_of(value)`: the query whose rows of partition `value` are written (for a partitioned COPY of
    every partition at once, any value gives the query)."""
    column = sql_ident(partition_col)
    if parts is None:
        options = f", {SCRATCH_PARQUET}" if scratch else ""
        conn.execute(
            f"COPY ({sql_of(0)}) TO '{sql_text(str(staging))}' "
            f"(FORMAT parquet, PARTITION_BY ({column}), FILENAME_PATTERN 'part-{{i}}'{options})"
        )
        return
    for value in sorted(set(parts)):
        # the filter reaches the scans (hive partition pruning), so only this part is read
        folder = staging / f"{partition_col}={int(value)}"
        folder.mkdir(parents=True, exist_ok=True)
        written = conn.execute(
            f"COPY (SELECT * EXCLUDE ({column}) FROM ({sql_of(int(value))}) WHERE {column} = {int(value)}) "
            f"TO '{sql_text(str(folder / 'part-0.parquet'))}' (FORMAT parquet)"
        ).fetchone()
        if not written or not written[0]:
            shutil.rmtree(folder)  # as a partitioned COPY does: no folder for a part without rows


def _describe_written(
    session: Session, staging: Path | str, target: Path | str, partition_col: str
) -> PartitionedOutput:
    found = storage.storage_for(staging).partitions(str(staging), partition_col)
    if not found:
        return PartitionedOutput(path=str(target), partition_col=partition_col, columns=())
    df = read_partitions(session, staging, partition_col, list(found))
    columns = schema_of(df)
    counts = {int(row[0]): int(row[1]) for row in df.groupBy(partition_col).count().collect()}
    parts = {
        value: PartitionStats(
            rows=counts.get(value, 0), files=tuple(f.name for f in files), bytes=sum(f.size for f in files)
        )
        for value, files in found.items()
    }
    return PartitionedOutput(path=str(target), partition_col=partition_col, columns=columns, partitions=parts)


def _write_partitioned_s3(
    df: DataFrame,
    target: str,
    partition_col: str,
    parts: Sequence[int] | None,
    unique_key: tuple[str, ...],
    canonical: Mapping[str, str],
    within_part: Callable[[DataFrame], DataFrame] | None,
    grace: timedelta,
    after_commit: Callable[[], Collection[str]] | None,
) -> PartitionedOutput:
    """`write_partitioned` to S3: the engine writes a staging copy, `storage.S3Storage.commit` publishes it.

    Spark writes the staging copy to a hidden sibling prefix (`.<name>.staging-<commit>/`) and the commit
    copies it server-side; DuckDB writes it to local scratch and the commit uploads it. Files are
    published under the commit's own prefix, `<partition>/commit-<stamp>-<hex>/<name>`, so no file of an
    earlier commit is overwritten or mixed with the new ones; the manifest names them by that path.
    """
    session = df.session if hasattr(df, "session") else df.sparkSession
    commit = storage.new_commit_id()
    s3 = storage.S3Storage()
    parent, _, name = target.rstrip("/").rpartition("/")
    spark = _is_spark(session)
    staging: Path | str = f"{parent}/.{name}.staging-{commit}" if spark else _s3_scratch(session) / f"out-{commit}"
    try:
        if isinstance(staging, str):
            _spark_write_partitioned(within_part(df) if within_part else df, staging, partition_col)
        else:
            _duckdb_copy(df, staging, partition_col, parts, within_part=within_part)
        written = _describe_written(session, staging, target, partition_col)
        sources: dict[str, Path | str] = {}
        for value, stats in written.partitions.items():
            for file in stats.files:
                relative = f"{partition_col}={value}/{file}"
                source = f"{staging}/{relative}" if isinstance(staging, str) else staging / relative
                sources[f"{partition_col}={value}/{commit}/{file}"] = source

        def manifest(stored: Mapping[str, storage.StoredFile], record: storage.Commit) -> str:
            parts = {}
            for value, stats in written.partitions.items():
                keys = [f"{partition_col}={value}/{commit}/{file}" for file in stats.files]
                parts[value] = PartitionStats(
                    rows=stats.rows,
                    files=tuple(f"{commit}/{file}" for file in stats.files),
                    bytes=sum(stored[k].size for k in keys),
                    etags=tuple(stored[k].etag or "" for k in keys),
                )
            committed = PartitionedOutput(
                target, partition_col, written.columns, parts, unique_key, canonical, record.record()
            )
            outputs.append(committed)
            return committed.to_json()

        outputs: list[PartitionedOutput] = []
        s3.commit(target, commit, sources, manifest, grace=grace)
        keep = after_commit() if after_commit is not None else ()
        try:
            s3.sweep(target, grace=grace, keep=keep)
        except JobError as exc:  # committed all the same: the next commit sweeps again
            log.warning("the commit of %s stands, but old commit prefixes were not swept: %s", target, exc)
        return outputs[-1]
    finally:
        if isinstance(staging, str):
            with contextlib.suppress(JobError):
                s3.delete_prefix(staging)
        else:
            shutil.rmtree(staging, ignore_errors=True)


def _swap_into_place(staging: Path, target: Path) -> None:
    retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    if retired.exists():
        shutil.rmtree(retired, ignore_errors=True)


# --------------------------------------------------------------------------- helpers


def sql_text(value: str) -> str:
    """`value` for use inside a single-quoted DuckDB string: a path may hold a quote (`/srv/it's`).

    Paths end up in views (`CREATE VIEW ... AS SELECT * FROM read_parquet([...])`), which cannot hold
    bound parameters; so every path that meets SQL is quoted here, in one way.
    """
    return value.replace("'", "''")


def sql_ident(name: str) -> str:
    """`name` as a double-quoted DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def first_line(exc: BaseException) -> str:
    """The headline of an engine error, naming S3 objects by their `s3://` location, not a local copy."""
    text = storage.as_stored(str(exc).strip())
    return text.splitlines()[0] if text else type(exc).__name__
