"""Steps 3 and 4 make the split outputs queryable as part tables in the local catalog, a DuckDB file a
user opens with the duckdb CLI. Like Glue, a part table shows only its registered partitions: a
directory that arrives after step 3 stays invisible until step 4 repairs the partitions. Each way the
catalog can be wrong stops the step with a message naming the cause."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from conftest import CONTEXTS, DATABASE, Lake
from flywheel.invocation import JobError
from flywheel.pipelines.db_refresh import catalog, engine

REPO = Path(__file__).resolve().parents[2]


def query(lake: Lake, sql: str) -> list[tuple[object, ...]]:
    """What a user sees with `duckdb catalog.duckdb`."""
    with duckdb.connect(str(lake.catalog), read_only=True) as conn:
        return conn.execute(sql).fetchall()


def part_rows(lake: Lake, table: str) -> dict[int, int]:
    rows = query(lake, f"SELECT id_part, count(*) FROM {DATABASE}.part_{table} GROUP BY 1")
    return {int(str(k)): int(str(v)) for k, v in rows}


def on_disk(lake: Lake, table: str) -> dict[int, int]:
    with duckdb.connect() as conn:
        rows = conn.execute(
            f"SELECT id_part, count(*) FROM read_parquet('{lake.split_root}/{table}/*/*.parquet', "
            "hive_partitioning = true) GROUP BY 1"
        ).fetchall()
    return {int(k): int(v) for k, v in rows}


def failure(lake: Lake, step: str, context: str | None = None, **params: object) -> JobError:
    with pytest.raises(JobError) as caught:
        lake.run(step, context, **params)
    return caught.value


def test_registered_part_tables_can_be_queried_with_plain_duckdb(fresh_lake: Lake) -> None:
    fresh_lake.register()
    for table in CONTEXTS:
        assert part_rows(fresh_lake, table) == on_disk(fresh_lake, table)
        registered = catalog.list_partitions(fresh_lake.params(), f"part_{table}")
        directories = sorted(p for p in (fresh_lake.split_root / table).iterdir() if p.is_dir())
        assert [Path(p.location) for p in registered] == directories
    tables = query(fresh_lake, f"SELECT name, storage_root FROM {DATABASE}.tables ORDER BY name")
    assert tables == [(f"part_{t}", str(fresh_lake.split_root / t)) for t in CONTEXTS]
    columns = [c for c, _ in catalog.get_table(fresh_lake.params(), "part_infobase_attributes").columns]
    assert columns[0] == "id" and "interests" in columns and columns[-1] == "id_part"


def test_a_partition_that_arrives_after_step_3_is_invisible_until_step_4(fresh_lake: Lake) -> None:
    late = fresh_lake.split_root / "addressable_ids" / "id_part=3"
    parked = fresh_lake.root / "parked"
    shutil.move(late, parked)
    fresh_lake.register()
    shutil.move(parked, late)  # the late partition lands on disk
    params = fresh_lake.params()
    before = catalog.table_fingerprint(params, "part_addressable_ids")

    assert 3 not in part_rows(fresh_lake, "addressable_ids")
    with engine.session_scope(params) as session:
        seen = catalog.read_part_table(session, params, "part_addressable_ids")
        assert {r["id_part"] for r in seen.select("id_part").distinct().collect()} == {0, 1, 2}

    result = fresh_lake.run("prepare-part-tables")
    assert result.outputs[0]["uri"] == "partitions:part_addressable_ids"
    assert result.outputs[0]["added"] == [3] and result.outputs[0]["dropped"] == []
    assert part_rows(fresh_lake, "addressable_ids") == on_disk(fresh_lake, "addressable_ids")
    with engine.session_scope(params) as session:
        seen = catalog.read_part_table(session, params, "part_addressable_ids")
        assert seen.count() == sum(on_disk(fresh_lake, "addressable_ids").values())
    after = catalog.table_fingerprint(params, "part_addressable_ids")
    assert after != before

    fresh_lake.run("prepare-part-tables")  # nothing left to repair
    assert catalog.table_fingerprint(params, "part_addressable_ids") == after


def test_step_4_drops_a_registered_partition_whose_directory_is_gone(fresh_lake: Lake) -> None:
    stale = fresh_lake.split_root / "infobase_attributes" / "id_part=4"
    shutil.copytree(fresh_lake.split_root / "infobase_attributes" / "id_part=0", stale)
    fresh_lake.register()
    assert 4 in part_rows(fresh_lake, "infobase_attributes")
    shutil.rmtree(stale)

    result = fresh_lake.run("prepare-part-tables")
    assert result.outputs[1]["dropped"] == [4]
    assert set(part_rows(fresh_lake, "infobase_attributes")) == {0, 1, 2, 3}


def test_step_4_before_step_3_names_the_tables_that_are_not_registered(fresh_lake: Lake) -> None:
    assert failure(fresh_lake, "prepare-part-tables").error_type == "database-missing"
    fresh_lake.run("register-part-tables", "addressable_ids")
    error = failure(fresh_lake, "prepare-part-tables")
    assert error.error_type == "tables-not-registered"
    assert "part_infobase_attributes" in str(error) and "part_addressable_ids" not in str(error)


def test_a_missing_database_fails_step_3_when_it_may_not_be_created(fresh_lake: Lake) -> None:
    error = failure(fresh_lake, "register-part-tables", "addressable_ids", create_database=False)
    assert error.error_type == "database-missing"
    assert DATABASE in str(error) and "create_database" in str(error)
    assert not fresh_lake.catalog.exists()

    fresh_lake.register()  # the catalog file exists now, but not this database
    error = failure(fresh_lake, "register-part-tables", "addressable_ids", create_database=False, database="other_db")
    assert error.error_type == "database-missing" and "other_db" in str(error)


def test_a_table_of_the_same_name_elsewhere_is_a_prefix_conflict(fresh_lake: Lake) -> None:
    fresh_lake.register()
    error = failure(
        fresh_lake,
        "register-part-tables",
        "addressable_ids",
        storage_root=str(fresh_lake.split_root / "infobase_attributes"),
    )
    assert error.error_type == "table-prefix-conflict"
    assert "part_addressable_ids" in str(error) and "table_prefix" in str(error)

    with duckdb.connect(str(fresh_lake.catalog)) as conn:  # someone made a table by hand
        conn.execute(f"CREATE TABLE {DATABASE}.hand_addressable_ids AS SELECT 1 AS id")
    error = failure(fresh_lake, "register-part-tables", "addressable_ids", table_prefix="hand_")
    assert error.error_type == "table-prefix-conflict" and "hand_addressable_ids" in str(error)

    fresh_lake.run("register-part-tables", "addressable_ids")  # the same table again is fine


def test_a_storage_root_without_readable_parquet_fails_schema_inference(fresh_lake: Lake) -> None:
    empty = fresh_lake.root / "empty"
    (empty / "id_part=0").mkdir(parents=True)
    error = failure(fresh_lake, "register-part-tables", "addressable_ids", storage_root=str(empty))
    assert error.error_type == "schema-inference-failed" and str(empty) in str(error)

    broken = fresh_lake.split_root / "addressable_ids" / "id_part=1"
    for file in broken.glob("*.parquet"):
        file.write_bytes(file.read_bytes()[:100])
    error = failure(fresh_lake, "register-part-tables", "addressable_ids")
    assert error.error_type == "schema-inference-failed" and "id_part=1" in str(error)


def test_step_4_stops_on_an_empty_partition_and_leaves_the_catalog_alone(fresh_lake: Lake) -> None:
    fresh_lake.register()
    before = catalog.table_fingerprint(fresh_lake.params(), "part_addressable_ids")
    for file in (fresh_lake.split_root / "addressable_ids" / "id_part=2").glob("*.parquet"):
        file.unlink()
    error = failure(fresh_lake, "prepare-part-tables")
    assert error.error_type == "empty-partition" and "id_part=2" in str(error)
    assert catalog.table_fingerprint(fresh_lake.params(), "part_addressable_ids") == before


def test_step_4_stops_when_the_tables_do_not_have_the_same_parts(fresh_lake: Lake) -> None:
    fresh_lake.register()
    shutil.rmtree(fresh_lake.split_root / "infobase_attributes" / "id_part=1")
    error = failure(fresh_lake, "prepare-part-tables")
    assert error.error_type == "partition-mismatch"
    assert "part_infobase_attributes" in str(error) and "missing [1]" in str(error)


def test_both_contexts_of_step_3_can_register_at_the_same_time(fresh_lake: Lake) -> None:
    """Step 3 runs its contexts in parallel processes; DuckDB lets one of them write at a time."""
    script = (
        "import sys, json; from flywheel.invocation import StepInvocation; "
        "from flywheel.pipelines.db_refresh.jobs import register_part_tables as job; "
        "job.run(StepInvocation(pipeline='db-refresh', step='register-part-tables', context=sys.argv[1], "
        "run_id=1, attempt=1, env='local', job='x', params=json.loads(sys.argv[2])))"
    )
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                script,
                table,
                json.dumps(fresh_lake.params(table=table, storage_root=str(fresh_lake.split_root / table))),
            ],
            cwd=REPO,
        )
        for table in CONTEXTS
    ]
    assert [p.wait(timeout=60) for p in processes] == [0, 0]
    assert [t.name for t in catalog.list_tables(fresh_lake.params())] == [f"part_{t}" for t in CONTEXTS]


def test_step_4_names_a_partition_file_that_was_cut_short(fresh_lake: Lake) -> None:
    fresh_lake.register()
    for file in (fresh_lake.split_root / "infobase_attributes" / "id_part=3").glob("*.parquet"):
        file.write_bytes(file.read_bytes()[:-40])
    error = failure(fresh_lake, "prepare-part-tables")
    assert error.error_type == "corrupt-file" and "infobase_attributes/id_part=3" in str(error)
