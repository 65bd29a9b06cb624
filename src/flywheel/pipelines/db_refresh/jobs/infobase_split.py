"""Step 2, infobase split and part: raw infobase Parquet files to one attribute row per id, in parts.

Reads `{raw_root}/infobase_attributes/*.parquet`. Every file must carry exactly the agreed columns
(checked from each file's footer, which also catches a truncated file before any data is read); the
values are then cast to the agreed types, so a file with a column of another type fails here and not
in a report three steps later. Writes `{split_root}/infobase_attributes/id_part=<int>/` with the same
`bucket(id, n_parts)` as step 1, so part k of both tables holds the same ids.

Dedupe: the latest `updated_at` wins; ties go to the row whose attributes are smallest, compared in
column order with nulls last (interests compared as their `|`-joined text).
"""

from __future__ import annotations

import functools
from typing import Any

from flywheel.invocation import JobResult, StepInvocation
from flywheel.pipelines.db_refresh import engine, storage
from flywheel.pipelines.db_refresh.canonical import LOWER, TRIMMED, UPPER, canonical
from flywheel.pipelines.db_refresh.glue_partitions import commit_options
from flywheel.pipelines.db_refresh.jobs.addressable_split import (
    ID_PATTERN,
    PARTITION_COL,
    check_columns,
    count_source,
    latest_per_id,
    naming_unreadable_files,
    parts_param,
    source_files,
    split_result,
    stage_in_parts,
)

SOURCE = "infobase_attributes"
SCHEMA: tuple[tuple[str, str], ...] = (
    ("id", "string"),
    ("updated_at", "timestamp"),
    ("age_range", "string"),
    ("income_range", "string"),
    ("gender", "string"),
    ("homeowner", "boolean"),
    ("children_present", "boolean"),
    ("state", "string"),
    ("interests", "array<string>"),
    ("marital_status", "string"),
    ("education", "string"),
    ("occupation", "string"),
    ("net_worth", "string"),
    ("home_value", "string"),
    ("vehicle_owner", "boolean"),
    ("pet_owner", "boolean"),
    ("length_of_residence", "int"),
    ("credit_card_holder", "boolean"),
    ("language", "string"),
)
COLUMNS = tuple(name for name, _ in SCHEMA)
_UPPER = ("gender", "state")
_LOWER = ("id", "language")


def run(invocation: StepInvocation) -> JobResult:
    params = invocation.params
    n_parts = parts_param(params)
    source = storage.join(str(params["raw_root"]), SOURCE)
    target = storage.join(str(params["split_root"]), SOURCE)
    files = source_files(source, (".parquet",), "Parquet")
    with engine.session_scope(params) as session:
        for file in files:
            check_columns(file, engine.parquet_columns(session, file), COLUMNS, ordered=False)
        reader = functools.partial(engine.read_parquet, session)
        with naming_unreadable_files(files, reader, source):
            staged = stage_in_parts(session, normalise(session, reader(files)), n_parts)
            valid, read, rejected = count_source(session, staged, source)
            F = engine.functions(session)
            tiebreak: list[Any] = [c for c in COLUMNS[2:] if c != "interests"]
            tiebreak += [F.col("interests").isNull(), F.array_join(F.col("interests"), "|")]
            output = engine.write_partitioned(
                valid,
                target,
                PARTITION_COL,
                parts=range(n_parts),
                within_part=lambda part: latest_per_id(session, part, "updated_at", tiebreak),
                unique_key=("id",),
                **commit_options(params, f"{params.get('table_prefix') or ''}{SOURCE}", target),
            )
    return split_result(target, output, files=len(files), read=read, rejected=rejected)


def normalise(session: engine.Session, raw: engine.DataFrame) -> engine.DataFrame:
    """The agreed types; trimmed text with empty strings as null; codes in one case."""
    F = engine.functions(session)
    columns = []
    for name, kind in SCHEMA:
        value = F.col(name).cast(kind)
        if kind == "string":
            value = canonical(F, value, UPPER if name in _UPPER else LOWER if name in _LOWER else TRIMMED)
        columns.append(value.alias(name))
    df = raw.select(*columns)
    return df.withColumn("_valid", F.coalesce(F.col("id").rlike(ID_PATTERN), F.lit(False)))
