"""The whole db-refresh pipeline on DuckDB and on Spark, from the same raw files, gives the same results:
the same ids in the same parts (for several part counts), the same ER rows and schema mapping, the same
catalog, the same report numbers and the same Parquet column types. Both are also checked against the
plain-Python bucket, so "the same" cannot mean "the same mistake".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flywheel.pipelines.db_refresh.engine import bucket_of
from tests.spark.engine_runs import PARTITIONED, Produced, collect, run_pipeline

pytestmark = pytest.mark.spark

PART_COUNTS = (7, 16, 64)


@pytest.fixture(scope="module", params=PART_COUNTS, ids=lambda n: f"n{n}")
def runs(
    request: pytest.FixtureRequest, raw_root: Path, spark: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Produced]:
    n_parts = int(request.param)
    produced = {}
    for name in ("duckdb", "spark"):
        home = tmp_path_factory.mktemp(f"{name}-n{n_parts}")
        metrics = run_pipeline(home, raw_root, name, n_parts)
        produced[name] = collect(home, name, n_parts, metrics)
    return produced


def test_each_engine_really_wrote_its_own_files(runs: dict[str, Produced]) -> None:
    assert all(w.startswith("DuckDB") for w in runs["duckdb"].writers), runs["duckdb"].writers
    assert all("parquet-mr" in w for w in runs["spark"].writers), runs["spark"].writers


def test_the_same_ids_land_in_the_same_parts_as_plain_python_puts_them(runs: dict[str, Produced]) -> None:
    duck, spark = runs["duckdb"], runs["spark"]
    for output in PARTITIONED:
        assert spark.parts[output] == duck.parts[output], output
        n = duck.n_parts
        assert all(part == bucket_of(i, n) for i, part in duck.parts[output].items()), output
        assert set(duck.parts[output].values()) == set(range(n)), f"{output}: every part is used"
        assert spark.manifest_rows[output] == duck.manifest_rows[output], output


def test_the_same_rows_in_every_output(runs: dict[str, Produced]) -> None:
    duck, spark = runs["duckdb"], runs["spark"]
    for output in PARTITIONED:
        only_duck = duck.rows[output] - spark.rows[output]
        only_spark = spark.rows[output] - duck.rows[output]
        assert not only_duck and not only_spark, (
            f"{output}: {sum(only_duck.values())} rows only on duckdb, e.g. {next(iter(only_duck), None)}; "
            f"{sum(only_spark.values())} only on spark, e.g. {next(iter(only_spark), None)}"
        )


def test_the_same_parquet_column_types(runs: dict[str, Produced]) -> None:
    duck, spark = runs["duckdb"], runs["spark"]
    for output in PARTITIONED:
        assert spark.column_types[output] == duck.column_types[output], (
            output,
            sorted(spark.column_types[output] ^ duck.column_types[output]),
        )
    for run in (duck, spark):  # instants in UTC, microseconds: what Athena, Glue and pyarrow read alike
        (seen,) = [c for c in run.column_types["er/part_addressable_ids_er"] if c[0] == "last_seen"]
        assert seen[1] == "INT64" and seen[2].startswith("TIMESTAMP_MICROS/") and "isAdjustedToUTC=1" in seen[2]


def test_the_same_er_schema_mapping_and_catalog(runs: dict[str, Produced]) -> None:
    duck, spark = runs["duckdb"], runs["spark"]
    assert spark.schema_mapping == duck.schema_mapping
    assert spark.catalog == duck.catalog
    assert set(duck.catalog) == {"part_addressable_ids", "part_infobase_attributes", "part_addressable_ids_er"}


def test_the_same_report_numbers_exactly(runs: dict[str, Produced]) -> None:
    duck, spark = runs["duckdb"], runs["spark"]
    assert spark.monitor == duck.monitor
    assert spark.segments_csv == duck.segments_csv
    assert spark.segments_json == duck.segments_json
    assert duck.segments_json["published_segments"] > 0, "tiny data still publishes segments"
    assert spark.step_metrics == duck.step_metrics
