"""`--engine spark` through the real CLI and runner: each step in its own process with its own JVM.

The story an operator lives: last night's run on DuckDB failed at step 5; the resume runs on Spark
(`flywheel resume --engine spark`), reuses steps 1-4 (the engine is not part of a step's fingerprint,
because both engines give the same outputs), and steps 5-7 are written by Spark. Then one step is rerun
with `flywheel run --engine spark --only`. And the cluster path: `spark-submit` running a step through the
Glue entry point with the job code shipped as the zip `flywheel aws package` builds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

pytestmark = pytest.mark.spark

BAD_MAPPING = "fields:\n  hashed_email: EMAIL\n"
GOOD_MAPPING = "fields:\n  hashed_email: EMAIL_ADDRESS\n"


def flywheel(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "NO_COLOR": "1"}
    env.pop("FLYWHEEL_ENV", None)
    return subprocess.run(
        [sys.executable, "-m", "flywheel", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=home
    )


def steps(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    assert result.stdout.strip(), result.stderr
    return {s["key"]: s for s in json.loads(result.stdout)["steps"]}


def writers(paths: list[Path]) -> set[str]:
    rows = (
        duckdb.connect()
        .execute("SELECT DISTINCT created_by FROM parquet_file_metadata(?)", [[str(p) for p in paths]])
        .fetchall()
    )
    return {str(r[0]).split(" ")[0] for r in rows}


def test_a_duckdb_run_resumed_on_spark_reuses_steps_1_to_4(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    data = home / "data"
    generated = flywheel(home, "data", "generate", "--rows", "800", "--seed", "4", "--root", str(data / "raw"))
    assert generated.returncode == 0, generated.stderr
    config = data / "config" / "er-schema-mapping.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(BAD_MAPPING)

    failed = flywheel(home, "run", "db-refresh", "--json")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert steps(failed)["create-part-addressable-ids-er-table"]["status"] == "failed"

    config.write_text(GOOD_MAPPING)
    resumed = flywheel(home, "resume", "--engine", "spark", "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    by_key = steps(resumed)
    reused = sorted(k for k, s in by_key.items() if s["status"] == "reused")
    assert reused == [
        "addressable-split-and-part",
        "infobase-split-and-part",
        "prepare-part-tables",
        "register-part-tables[addressable_ids]",
        "register-part-tables[infobase_attributes]",
    ]
    assert all(by_key[k]["status"] == "succeeded" for k in by_key if k not in reused)
    assert writers(sorted((data / "split_part").rglob("*.parquet"))) == {"DuckDB"}
    assert writers(sorted((data / "er").rglob("*.parquet"))) == {"parquet-mr"}  # step 5 ran on Spark
    log = home / "logs" / f"run-{json.loads(resumed.stdout)['run_id']}"
    assert "spark" in (log / "create-part-addressable-ids-er-table.attempt-1.log").read_text().lower()

    rerun = flywheel(home, "run", "db-refresh", "--engine", "spark", "--only", "generate-cleanrooms-report", "--json")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert steps(rerun)["generate-cleanrooms-report"]["status"] == "succeeded"
    assert (data / "reports" / "cleanrooms" / "segments.json").is_file()


def test_spark_submit_runs_a_step_through_the_glue_entry(tmp_path: Path) -> None:
    """The cluster path: `flywheel aws package` builds what Glue runs; `spark-submit` runs it the same way
    (job code shipped as a zip with --py-files, the invocation as job arguments, the result as JSON).
    Under spark-submit the JVM is the cluster's: the jobs apply only their SQL settings to it."""
    from flywheel.aws.package_cli import build_glue_package
    from flywheel.invocation import StepInvocation
    from flywheel.pipelines.db_refresh.sample_data import generate

    package = build_glue_package(tmp_path / "glue")
    generate(tmp_path / "raw", rows=600, seed=9, files=2)
    invocation = StepInvocation(
        pipeline="db-refresh",
        step="addressable-split-and-part",
        context=None,
        run_id=0,
        attempt=1,
        env="cluster",
        job="flywheel.pipelines.db_refresh.jobs.addressable_split:run",
        params={
            "engine": "spark",
            "raw_root": str(tmp_path / "raw"),
            "split_root": str(tmp_path / "split"),
            "n_parts": 7,
        },
        result_path=str(tmp_path / "result.json"),
    )
    submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    done = subprocess.run(
        [
            str(submit),
            "--master",
            "local[2]",
            "--driver-memory",
            "1g",
            "--conf",
            "spark.ui.enabled=false",
            "--py-files",
            str(package.zip),
            str(package.entry),
            "--JOB_NAME",
            "omc-flywheel-cluster-addressable-split-and-part",
            "--flywheel_invocation",
            invocation.to_json(),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["ok"] and result["metrics"]["partitions"] == 7, result
    files = sorted((tmp_path / "split" / "addressable_ids").rglob("*.parquet"))
    assert writers(files) == {"parquet-mr"}
    seen = (
        duckdb.connect()
        .execute(
            "SELECT DISTINCT type, converted_type FROM parquet_schema(?) WHERE name = 'last_seen'",
            [[str(f) for f in files]],
        )
        .fetchall()
    )
    assert seen == [("INT64", "TIMESTAMP_MICROS")]  # the pinned SQL setting holds on a cluster's JVM too
