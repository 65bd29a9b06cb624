"""The Spark engine is a real JVM SparkSession of the Glue 5.0 line, configured once, in one place."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flywheel.pipelines.db_refresh import engine

pytestmark = pytest.mark.spark


def test_the_spark_engine_is_a_real_jvm_session_of_spark_3_5(spark: Any) -> None:
    from pyspark.sql import SparkSession

    assert isinstance(spark, SparkSession)
    assert spark.sparkContext._jvm is not None  # py4j gateway to a running JVM, not a stand-in
    assert spark.sparkContext._jsc.version().startswith("3.5.")  # asked of the JVM itself
    assert spark.version.startswith("3.5.")
    assert spark.sparkContext.master == "local[2]"
    assert engine.engine_name({"engine": "spark"}) == "spark"
    assert engine.functions(spark).__name__ == "pyspark.sql.functions"


def test_the_session_is_reused_and_its_settings_pinned(spark: Any, tmp_path: Path) -> None:
    spark.conf.set("spark.sql.parquet.outputTimestampType", "INT96")  # as a cluster default might
    with engine.session_scope({"engine": "spark", "memory_limit": "8GB", "temp_directory": str(tmp_path)}) as again:
        assert again is spark  # one JVM per process: a step that opens twice starts it once
        for key, value in engine.SPARK_SQL_CONF.items():
            assert again.conf.get(key) == value
    assert spark.sparkContext._jsc.sc().isStopped() is False  # closing a scope never stops Spark
    heap_mb = spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory() / 2**20
    assert 700 < heap_mb <= 1024  # the first session's 1GB driver heap (JVM settings are fixed at start)


def test_spark_writes_microsecond_utc_timestamps_not_int96(spark: Any, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    df = spark.createDataFrame([("a", datetime(2024, 5, 1, 12, 30, tzinfo=UTC), 3)], "id string, seen timestamp, n int")
    target = engine.write_parquet(df, tmp_path / "one.parquet")
    rows = (
        duckdb.connect()
        .execute("SELECT name, type, converted_type FROM parquet_schema(?) WHERE name = 'seen'", [str(target)])
        .fetchall()
    )
    assert rows == [("seen", "INT64", "TIMESTAMP_MICROS")]
    value = duckdb.connect().execute("SELECT seen FROM read_parquet(?)", [str(target)]).fetchone()
    assert value is not None and value[0] == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize("n", [7, 16, 64])
def test_the_bucket_is_the_documented_formula_on_spark(spark: Any, n: int) -> None:
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(300)] + ["", "ü", "ffffffff"]
    df = spark.createDataFrame([(i,) for i in [*ids, None]], "id string")
    got = {r["id"]: r["part"] for r in df.select("id", engine.bucket(spark, "id", n).alias("part")).collect()}
    assert got == {**{i: engine.bucket_of(i, n) for i in ids}, None: None}


def test_a_partitioned_write_commits_one_file_per_part_and_a_manifest(spark: Any, tmp_path: Path) -> None:
    F = engine.functions(spark)
    df = spark.range(0, 500).select(F.col("id").cast("string").alias("id"))
    out = engine.write_partitioned(df.withColumn("id_part", engine.bucket(spark, "id", 7)), tmp_path / "t", "id_part")
    assert sorted(out.partitions) == list(range(7)) and out.rows == 500
    for value, stats in out.partitions.items():
        assert len(stats.files) == 1, f"part {value}: {stats.files}"
    names = sorted(p.name for p in (tmp_path / "t").rglob("*") if p.is_file())
    assert "_manifest.json" in names
    assert not [n for n in names if n.startswith(".") or n == "_SUCCESS"], names  # no .crc, no _SUCCESS
    assert engine.read_manifest(tmp_path / "t") == out
    assert not list(tmp_path.glob(".t.*")), "no staging directory is left behind"
