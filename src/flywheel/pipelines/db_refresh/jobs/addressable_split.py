"""Step 1, addressable split and part: raw addressable-id CSVs to one deduplicated row per id, in parts.

Reads `{raw_root}/addressable_ids/*.csv.gz` with an explicit schema (a header that does not match it
fails the step rather than shifting columns), normalises the values, keeps one row per id and writes
`{split_root}/addressable_ids/id_part=<int>/` with `id_part = bucket(id, n_parts)`.

The dedupe rule is fixed so that every engine keeps the same row: the latest `last_seen` wins; among
rows with the same `last_seen`, the one whose remaining fields are smallest, compared in column order
with nulls last. `dropDuplicates` is not used: which row it keeps depends on the engine.

The source-checking and dedupe helpers here are shared with step 2 (infobase split).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from flywheel.invocation import JobError, JobResult, StepInvocation
from flywheel.pipelines.db_refresh import engine, storage
from flywheel.pipelines.db_refresh.canonical import LOWER, TRIMMED, canonical
from flywheel.pipelines.db_refresh.engine import JobErrorType, job_error
from flywheel.pipelines.db_refresh.glue_partitions import commit_options

SOURCE = "addressable_ids"
PARTITION_COL = "id_part"
SCHEMA: tuple[tuple[str, str], ...] = (
    ("id", "STRING"),
    ("hashed_email", "STRING"),
    ("hashed_phone", "STRING"),
    ("maid", "STRING"),
    ("ip", "STRING"),
    ("zip", "STRING"),
    ("household_id", "STRING"),
    ("last_seen", "TIMESTAMP"),
)
COLUMNS = tuple(name for name, _ in SCHEMA)
CANONICAL: dict[str, str] = {
    "id": LOWER,
    "hashed_email": LOWER,
    "hashed_phone": LOWER,
    "maid": LOWER,
    "ip": TRIMMED,
    "zip": TRIMMED,
    "household_id": TRIMMED,
}
"""The form each text column is written in; the manifest says so, for readers (step 5)."""
ID_PATTERN = "^[0-9a-f]{64}$"
REJECTED_PART = -1
"""Where a row without a valid id waits to be counted; it is never written."""


def run(invocation: StepInvocation) -> JobResult:
    params = invocation.params
    n_parts = parts_param(params)
    source = storage.join(str(params["raw_root"]), SOURCE)
    target = storage.join(str(params["split_root"]), SOURCE)
    files = source_files(source, (".csv.gz", ".csv"), "gzip CSV")
    for file in files:
        check_columns(file, engine.csv_header(file), COLUMNS)
    ddl = ", ".join(f"{name} {kind}" for name, kind in SCHEMA)
    with engine.session_scope(params) as session:
        reader = functools.partial(engine.read_csv, session, schema=ddl)
        with naming_unreadable_files(files, reader, source):
            staged = stage_in_parts(session, normalise(session, reader(files)), n_parts)
            valid, read, rejected = count_source(session, staged, source)
            output = engine.write_partitioned(
                valid,
                target,
                PARTITION_COL,
                parts=range(n_parts),
                within_part=lambda part: latest_per_id(session, part, "last_seen", COLUMNS[1:-1]),
                unique_key=("id",),
                canonical=CANONICAL,
                **commit_options(params, f"{params.get('table_prefix') or ''}{SOURCE}", target),
            )
    return split_result(target, output, files=len(files), read=read, rejected=rejected)


def normalise(session: engine.Session, raw: engine.DataFrame) -> engine.DataFrame:
    """Lower-case hex, trimmed text, empty strings as null (`CANONICAL`); zip stays text so leading
    zeros survive."""
    F = engine.functions(session)
    df = raw.select(*[canonical(F, name, form).alias(name) for name, form in CANONICAL.items()], F.col("last_seen"))
    return df.withColumn("_valid", F.coalesce(F.col("id").rlike(ID_PATTERN), F.lit(False)))


# --------------------------------------------------------------------------- shared with step 2


def parts_param(params: Mapping[str, Any]) -> int:
    try:
        n_parts = int(params.get("n_parts") or 0)
    except (TypeError, ValueError):
        n_parts = 0
    if n_parts < 1:
        raise job_error(JobErrorType.UNSUPPORTED, f"n_parts must be a positive integer, got {params.get('n_parts')!r}")
    return n_parts


def source_files(source: str, suffixes: Sequence[str], kind: str) -> list[str]:
    """The delivered files, or `missing-source` naming where they were expected."""
    files = engine.list_files(source, suffixes)
    if not files:
        state = "is empty" if storage.storage_for(source).is_dir(source) else "does not exist"
        raise job_error(
            JobErrorType.MISSING_SOURCE,
            f"no {kind} files ({', '.join('*' + s for s in suffixes)}) in {source}: the directory {state}. "
            "Wait for the delivery or fix raw_root (`flywheel data generate` makes sample data)",
        )
    return files


def check_columns(file: str, found: Sequence[str], expected: Sequence[str], *, ordered: bool = True) -> None:
    """`schema-mismatch` unless a file has exactly the expected columns (in order, for CSV)."""
    if list(found) == list(expected) or (not ordered and sorted(found) == sorted(expected)):
        return
    missing = [c for c in expected if c not in found]
    unexpected = [c for c in found if c not in expected]
    if missing or unexpected:
        detail = f"missing {missing or 'none'}, unexpected {unexpected or 'none'}"
    else:
        detail = f"columns in another order: {list(found)}"
    raise job_error(
        JobErrorType.SCHEMA_MISMATCH,
        f"{file}: columns do not match the agreed schema ({detail}). Ask for a re-delivery with "
        f"columns {list(expected)}, or rename the columns in the file",
    )


@contextlib.contextmanager
def naming_unreadable_files(
    files: Sequence[str], reader: Callable[[list[str]], engine.DataFrame], source: str
) -> Iterator[None]:
    """Turns the engine's read error into `corrupt-file` naming the files that break it.

    Everything that reads the source (staging it, or on Spark counting and then writing it) runs
    inside this; the culprits are found by reading each file on its own, every column parsed.
    """
    try:
        yield
    except JobError:
        raise
    except Exception as exc:  # the engine's own read error; find which file causes it
        bad = engine.find_unreadable(reader, files)
        if not bad:
            raise
        listing = "; ".join(f"{storage.name_of(path)}: {reason}" for path, reason in bad)
        raise job_error(
            JobErrorType.CORRUPT_FILE,
            f"{len(bad)} of {len(files)} files in {source} cannot be read ({listing}). "
            "Ask for a re-delivery of those files, or move them out of the source directory",
        ) from exc


def stage_in_parts(session: engine.Session, clean: engine.DataFrame, n_parts: int) -> engine.DataFrame:
    """The normalised source read once, with each row's part (-1 for a row without a valid id).

    The part is assigned before deduplicating: one id always lands in one part, so each part can then
    be deduplicated and written on its own (see `engine.stage_by_part`).
    """
    F = engine.functions(session)
    part = F.when(F.col("_valid"), engine.bucket(session, "id", n_parts)).otherwise(F.lit(REJECTED_PART))
    return engine.stage_by_part(clean.withColumn(PARTITION_COL, part), PARTITION_COL)


def count_source(session: engine.Session, clean: engine.DataFrame, source: str) -> tuple[engine.DataFrame, int, int]:
    """(rows with a valid id, rows read, rows rejected); `empty-source` when no row is usable."""
    F = engine.functions(session)
    row = clean.agg(
        F.count(F.lit(1)).alias("read"),
        F.sum(F.when(F.col("_valid"), F.lit(0)).otherwise(F.lit(1))).alias("rejected"),
    ).collect()[0]
    read, rejected = int(row["read"] or 0), int(row["rejected"] or 0)
    if read == rejected:
        raise job_error(
            JobErrorType.EMPTY_SOURCE,
            f"no usable rows in {source}: {read} rows read, none with a valid id (64 hex digits)",
        )
    return clean.where(F.col("_valid")).drop("_valid"), read, rejected


def latest_per_id(
    session: engine.Session,
    df: engine.DataFrame,
    recency: str,
    tiebreak: Sequence[str | Any],
) -> engine.DataFrame:
    """One row per id: latest `recency` first, then the smallest `tiebreak` values (nulls last).

    Only the rows of an id that repeats are ranked; the others are kept as they are. Ranking sorts by
    every tiebreak column, and a small share of ids repeat: ranking all of step 2's rows took 2.5 s of
    each part's 4.3 s at 10M rows (its tiebreak is 18 columns, one a list joined into text).
    """
    F, Window = engine.functions(session), engine.window(session)
    keys = [F.col(c) if isinstance(c, str) else c for c in tiebreak]
    order = [F.col(recency).desc_nulls_last(), *(k.asc_nulls_last() for k in keys)]
    # The part goes with the id (it is the id's bucket); naming it lets a part be ranked on its own.
    key = [PARTITION_COL, "id"]
    repeated = df.groupBy(*key).agg(F.count(F.lit(1)).alias("_rows")).where(F.col("_rows") > F.lit(1)).select(*key)
    once = df.join(repeated, on=key, how="left_anti")
    ranking = Window.partitionBy(*key).orderBy(*order)
    ranked = df.join(repeated, on=key, how="left_semi").withColumn("_rank", F.row_number().over(ranking))
    return once.unionByName(ranked.where(F.col("_rank") == F.lit(1)).drop("_rank"))


def split_result(target: str, output: engine.PartitionedOutput, *, files: int, read: int, rejected: int) -> JobResult:
    written = output.rows
    summary = {
        "uri": str(target),
        "kind": "path",
        "rows": written,
        "partitions": len(output.partitions),
        "partition_col": output.partition_col,
        "columns": [list(c) for c in output.columns],
    }
    metrics = {
        "files_read": files,
        "rows_read": read,
        "rows_rejected": rejected,
        "duplicates_removed": read - rejected - written,
        "rows_written": written,
        "partitions": len(output.partitions),
    }
    return JobResult(outputs=(summary,), metrics=metrics)
