"""Steps 1 and 2 split the raw deliveries into parts: every id lands in exactly one part, the part is
the same bucket plain Python computes, no row is lost or duplicated, duplicates are resolved by a rule
anyone can check by hand, and a broken delivery fails the right step with a message naming the cause.
The expected results are computed here in plain Python (csv, gzip, hashlib), not with the engine."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from conftest import Lake
from flywheel.invocation import JobError
from flywheel.pipelines.db_refresh import engine
from flywheel.pipelines.db_refresh.canonical import LOWER, TRIMMED, UPPER, canonical
from flywheel.pipelines.db_refresh.jobs.addressable_split import COLUMNS as ADDRESSABLE
from flywheel.pipelines.db_refresh.jobs.infobase_split import COLUMNS as INFOBASE
from flywheel.pipelines.db_refresh.sample_data import Fault, generate

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def part_of(identifier: str, n: int) -> int:
    """The documented bucket: the first 8 hex digits of sha256(id), as an integer, modulo n."""
    return int(hashlib.sha256(identifier.encode()).hexdigest()[:8], 16) % n


def text(value: Any, case: str = "") -> Any:
    if value is None or not isinstance(value, str):
        return value
    value = value.strip(" ")  # spaces only, as Spark's trim
    value = value.lower() if case == "lower" else value.upper() if case == "upper" else value
    return value or None


def utc(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return stamp.astimezone(UTC).replace(tzinfo=None) if stamp.tzinfo else stamp


def asc_nulls_last(values: Iterable[Any]) -> tuple[Any, ...]:
    return tuple((v is None, v if v is not None else 0) for v in values)


def keep_latest(rows: Iterable[Mapping[str, Any]], recency: str, tiebreak: Sequence[str]) -> dict[str, Any]:
    """The documented dedupe rule: latest first, then the smallest remaining fields, nulls last."""

    def rank(row: Mapping[str, Any]) -> tuple[Any, ...]:
        stamp = row[recency]
        return ((stamp is None, -stamp.timestamp() if stamp else 0), *asc_nulls_last(row[c] for c in tiebreak))

    kept: dict[str, Any] = {}
    for row in rows:
        if row["id"] not in kept or rank(row) < rank(kept[row["id"]]):
            kept[row["id"]] = row
    return kept


def expected_addressable(raw_root: Path) -> dict[str, dict[str, Any]]:
    rows = []
    for path in sorted((raw_root / "addressable_ids").glob("*.csv.gz")):
        with gzip.open(path, "rt", newline="") as handle:
            for raw in csv.DictReader(handle):
                row = {
                    c: text(raw[c], "lower" if c in ("id", "hashed_email", "hashed_phone", "maid") else "")
                    for c in ADDRESSABLE
                }
                row["last_seen"] = utc(raw["last_seen"] or None)
                if row["id"] and HEX64.match(row["id"]):
                    rows.append(row)
    return keep_latest(rows, "last_seen", ADDRESSABLE[1:-1])


def expected_infobase(raw_root: Path) -> dict[str, dict[str, Any]]:
    cursor = duckdb.connect().execute(f"SELECT * FROM read_parquet('{raw_root}/infobase_attributes/*.parquet')")
    names = [d[0] for d in cursor.description]
    rows = []
    for values in cursor.fetchall():
        raw = dict(zip(names, values, strict=True))
        case = {"id": "lower", "language": "lower", "gender": "upper", "state": "upper"}
        row = {c: text(raw[c], case.get(c, "")) for c in INFOBASE}
        row["updated_at"] = utc(raw["updated_at"])
        row["_interests_null"] = row["interests"] is None
        row["_interests_text"] = "|".join(row["interests"]) if row["interests"] is not None else None
        if row["id"] and HEX64.match(row["id"]):
            rows.append(row)
    tiebreak = [c for c in INFOBASE[2:] if c != "interests"] + ["_interests_null", "_interests_text"]
    return keep_latest(rows, "updated_at", tiebreak)


def written(split_root: Path, table: str) -> list[dict[str, Any]]:
    glob = f"{split_root}/{table}/*/*.parquet"
    cursor = duckdb.connect().execute(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def check_split(lake: Lake, table: str, expected: Mapping[str, Mapping[str, Any]], columns: Sequence[str]) -> None:
    rows = written(lake.split_root, table)
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "every id is written once"
    assert set(ids) == set(expected), "no id is lost or invented"
    for row in rows:
        assert row["id_part"] == part_of(row["id"], lake.n_parts)
        want = expected[row["id"]]
        for column in columns:
            got = utc(row[column]) if isinstance(row[column], datetime) else row[column]
            assert got == want[column], (row["id"], column)
    directories = sorted(p.name for p in (lake.split_root / table).iterdir() if p.is_dir())
    assert directories == [f"id_part={k}" for k in range(lake.n_parts)]
    manifest = json.loads((lake.split_root / table / "_manifest.json").read_text())
    assert manifest["rows"] == len(rows)
    assert sorted(int(k) for k in manifest["partitions"]) == list(range(lake.n_parts))


def test_step_1_writes_each_addressable_id_once_in_its_bucket_with_the_latest_row(split_lake: Lake) -> None:
    check_split(split_lake, "addressable_ids", expected_addressable(split_lake.raw_root), ADDRESSABLE)


def test_step_2_writes_each_infobase_id_once_in_the_same_bucket_as_step_1(split_lake: Lake) -> None:
    check_split(split_lake, "infobase_attributes", expected_infobase(split_lake.raw_root), INFOBASE)


def test_every_written_column_may_hold_nulls_whatever_this_delivery_held(split_lake: Lake) -> None:
    """A column without nulls in one delivery must not become a REQUIRED Parquet field: the schema of
    a part would then change from one refresh to the next, and differ from what Spark writes."""
    for table in ("addressable_ids", "infobase_attributes"):
        files = sorted((split_lake.split_root / table).glob("id_part=*/*.parquet"))
        assert files
        for file in files:
            fields = duckdb.connect().execute(
                "SELECT name, repetition_type FROM parquet_schema(?) WHERE num_children IS NULL OR num_children = 0",
                [str(file)],
            )
            required = [name for name, repetition in fields.fetchall() if repetition == "REQUIRED"]
            assert required == [], f"{file}: {required} written as REQUIRED"


def test_normalisation_lowers_ids_and_keeps_zip_codes_as_text(split_lake: Lake) -> None:
    rows = written(split_lake.split_root, "addressable_ids")
    assert all(HEX64.match(r["id"]) for r in rows)
    zips = [r["zip"] for r in rows if r["zip"] is not None]
    assert any(z.startswith("0") for z in zips) and all(len(z) == 5 for z in zips)


def test_canonical_forms_cut_surrounding_spaces_only_and_make_blanks_null() -> None:
    """A tab or a space inside a value is data; a value only trimmed when a space starts or ends it."""
    values = [" AbC ", "abc", "ABC", "  ", "", None, "\tabc", "a b", " \tx ", "x\u00a0"]
    with engine.session_scope({"threads": 1, "memory_limit": "512MB"}) as session:
        F = engine.functions(session)
        df = session.createDataFrame([(i, v) for i, v in enumerate(values)], "i int, v string")
        forms = {"lower": LOWER, "trimmed": TRIMMED, "upper": UPPER}
        rows = df.select("i", *[canonical(F, "v", form).alias(name) for name, form in forms.items()])
        got = {r["i"]: (r["lower"], r["trimmed"], r["upper"]) for r in rows.collect()}
    assert got == {i: (text(v, "lower"), text(v), text(v, "upper")) for i, v in enumerate(values)}


@pytest.mark.parametrize("n", [7, 16, 64])
def test_the_engine_bucket_is_the_documented_formula(n: int) -> None:
    ids = [hashlib.sha256(f"person-{i}".encode()).hexdigest() for i in range(300)]
    with engine.session_scope({"threads": 1, "memory_limit": "512MB"}) as session:
        df = session.createDataFrame([(i,) for i in ids], ["id"])
        rows = df.select("id", engine.bucket(session, "id", n).alias("part")).collect()
    assert {r["id"]: r["part"] for r in rows} == {i: part_of(i, n) for i in ids}
    assert {engine.bucket_of(i, n) for i in ids} == set(range(n)), "every bucket is used"


def write_csv_gz(path: Path, rows: Sequence[Sequence[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(ADDRESSABLE)
        writer.writerows(rows)


def test_duplicates_keep_the_latest_row_and_ties_go_to_the_smallest_fields(lake: Lake) -> None:
    a, b, c, d = (hashlib.sha256(name.encode()).hexdigest() for name in "abcd")
    write_csv_gz(
        lake.raw_root / "addressable_ids" / "delivery.csv.gz",
        [
            (f" {a.upper()} ", "e2", "", "", "", "", "", "2024-01-01 00:00:00"),
            (a, "e9", "", "", "", "", "", "2024-03-01 00:00:00"),  # latest wins
            (b, "bb", "p2", "", "", "", "", "2024-02-02 00:00:00"),
            (b, "ba", "p9", "", "", "", "", "2024-02-02 00:00:00"),  # same time: smaller email wins
            (c, "", "p1", "", "", "", "", "2024-02-02 00:00:00"),
            (c, "zz", "p9", "", "", "", "", "2024-02-02 00:00:00"),  # a value beats a null
            (d, "a", "", "", "", "", "", ""),
            (d, "z", "", "", "", "", "", "2020-01-01 00:00:00"),  # any time beats no time
            ("not-an-id", "x", "", "", "", "", "", "2024-01-01 00:00:00"),  # rejected
        ],
    )
    result = lake.run("addressable-split-and-part")
    kept = {r["id"]: (r["hashed_email"], r["hashed_phone"]) for r in written(lake.split_root, "addressable_ids")}
    assert kept == {a: ("e9", None), b: ("ba", "p9"), c: ("zz", "p9"), d: ("z", None)}
    assert result.metrics == {
        "files_read": 1,
        "rows_read": 9,
        "rows_rejected": 1,
        "duplicates_removed": 4,
        "rows_written": 4,
        "partitions": len({part_of(i, lake.n_parts) for i in (a, b, c, d)}),
    }
    assert result.outputs[0]["uri"] == str(lake.split_root / "addressable_ids")

    lake.n_parts = 2  # a re-run replaces the whole output: no part of the old layout survives
    lake.run("addressable-split-and-part")
    parts = {r["id_part"] for r in written(lake.split_root, "addressable_ids")}
    assert parts <= {0, 1}
    assert sorted(p.name for p in (lake.split_root / "addressable_ids").iterdir() if p.is_dir()) == sorted(
        f"id_part={k}" for k in parts
    )


@pytest.mark.parametrize(
    ("fault", "step", "error_type", "named"),
    [
        (Fault.MISSING_SOURCE, "addressable-split-and-part", "missing-source", ["addressable_ids", "is empty"]),
        (Fault.CORRUPT_FILE, "addressable-split-and-part", "corrupt-file", ["addressable_ids_0001.csv.gz"]),
        (Fault.EMPTY_FILE, "addressable-split-and-part", "empty-source", ["addressable_ids_0001.csv.gz is empty"]),
        (Fault.RENAMED_COLUMN, "addressable-split-and-part", "schema-mismatch", ["email_sha256", "hashed_email"]),
        (Fault.INFOBASE_MISSING, "infobase-split-and-part", "missing-source", ["infobase_attributes"]),
        (Fault.INFOBASE_CORRUPT, "infobase-split-and-part", "corrupt-file", ["infobase_attributes_0001.parquet"]),
        (Fault.INFOBASE_RENAMED_COLUMN, "infobase-split-and-part", "schema-mismatch", ["income_band"]),
    ],
)
def test_a_broken_delivery_fails_its_split_step_with_the_cause_and_commits_nothing(
    lake: Lake, fault: Fault, step: str, error_type: str, named: list[str]
) -> None:
    generate(lake.raw_root, rows=150, seed=4, files=3, fault=fault)
    with pytest.raises(JobError) as failure:
        lake.run(step)
    assert failure.value.error_type == error_type
    for word in named:
        assert word in str(failure.value)
    assert not lake.split_root.exists() or not any(lake.split_root.iterdir())
