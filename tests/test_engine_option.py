"""Choosing the engine: `engine:` per environment in project.yaml, `--engine` for one run (it wins), and
neither makes a finished step stale. None of this needs pyspark: the Spark engine itself is tested in
tests/spark (`make test-spark`)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flywheel.fingerprints import OutputFingerprinter
from flywheel.invocation import JobError, JobResult, StepInvocation
from flywheel.params import resolve_params
from flywheel.pipelines.db_refresh import engine
from flywheel.spec import EnvironmentSpec, load_project
from tests.conftest import Sandbox, step

REPO = Path(__file__).resolve().parent.parent
JOBS = REPO / "src/flywheel/pipelines/db_refresh/jobs"


def write_engine(invocation: StepInvocation) -> JobResult:
    """A job that only says which engine it was given."""
    Path(invocation.params["engine_file"]).write_text(str(invocation.params["engine"]))
    return JobResult()


def test_resolve_params_takes_the_environments_engine_unless_overridden() -> None:
    project = load_project("db-refresh")
    spec, key = project.spec, project.spec.keys[0]
    local, dev = project.config.environment("local"), project.config.environment("dev")
    assert resolve_params(spec, key, "local", local, "/h")["engine"] == "duckdb"
    assert resolve_params(spec, key, "dev", dev, "/h")["engine"] == "spark"
    assert resolve_params(spec, key, "local", local, "/h", engine="spark")["engine"] == "spark"
    assert resolve_params(spec, key, "dev", dev, "/h", engine="duckdb")["engine"] == "duckdb"
    env = EnvironmentSpec(engine="duckdb", settings={"engine": "duckdb"})  # a stray setting never beats --engine
    assert resolve_params(spec, key, "local", env, "/h", engine="spark")["engine"] == "spark"


def test_the_engine_is_not_part_of_a_step_fingerprint(tmp_path: Path) -> None:
    """Both engines write the same outputs, so a run resumed on the other engine reuses finished steps."""
    project = load_project("db-refresh")
    env = project.config.environment("local")
    fingerprinter = OutputFingerprinter(project.spec, "local", env, tmp_path)
    for key in project.spec.keys:
        on_duckdb = fingerprinter.fingerprint(key, resolve_params(project.spec, key, "local", env, str(tmp_path)))
        on_spark = fingerprinter.fingerprint(
            key, resolve_params(project.spec, key, "local", env, str(tmp_path), engine="spark")
        )
        assert on_spark.changes_since(on_duckdb) is None, key


@pytest.mark.e2e
def test_engine_per_environment_and_per_run_through_the_cli(sandbox: Sandbox) -> None:
    engine_file = sandbox.home / "engine.txt"
    sandbox.write([step("a", 1, job="tests.test_engine_option:write_engine", params={"engine_file": str(engine_file)})])
    environments = {
        "local": {"executor": "inprocess", "engine": "duckdb"},
        "cluster": {"executor": "inprocess", "engine": "spark"},
    }
    (sandbox.root / "project.yaml").write_text(yaml.safe_dump({"environments": environments}))

    def used(*args: str) -> str:
        result = sandbox.cli("run", str(sandbox.pipeline), *args)
        assert result.returncode == 0, result.stdout + result.stderr
        return engine_file.read_text()

    assert used() == "duckdb"
    assert used("--engine", "spark") == "spark"
    assert used("--env", "cluster") == "spark"
    assert used("--env", "cluster", "--engine", "DuckDB") == "duckdb"

    bad = sandbox.cli("run", str(sandbox.pipeline), "--engine", "polars")
    assert bad.returncode == 2
    assert "--engine 'polars' is not an engine" in bad.stdout + bad.stderr
    assert "--engine" in sandbox.cli("resume", "--help").stdout


def test_spark_memory_sizes() -> None:
    assert engine.spark_memory("4GB") == "4g"
    assert engine.spark_memory("1536MB") == "1536m"
    assert engine.spark_memory("512MB") == "1g"  # a driver below 1g is not worth starting
    assert engine.spark_memory("2 GiB") == "2g"
    with pytest.raises(JobError):
        engine.spark_memory("lots")


def test_the_engine_module_and_the_duckdb_engine_never_import_pyspark(tmp_path: Path) -> None:
    code = (
        "import sys, flywheel, flywheel.cli\n"
        "from flywheel.pipelines.db_refresh import engine\n"
        f"with engine.session_scope({{'temp_directory': {str(tmp_path)!r}}}) as s:\n"
        "    s.createDataFrame([(1,)], ['x']).collect()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'py4j'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.skipif(importlib.util.find_spec("pyspark") is not None, reason="pyspark is installed here")
def test_engine_spark_without_pyspark_says_how_to_get_it() -> None:
    with pytest.raises(JobError) as caught:
        engine.open_session({"engine": "spark"})
    assert caught.value.error_type == "unsupported"
    assert "uv sync --group spark" in str(caught.value)


def test_no_job_uses_an_approximate_aggregate() -> None:
    """Report numbers must be exact and equal on every engine; approximate counts are neither."""
    pattern = re.compile(
        r"approx_count_distinct|approxCountDistinct|approx_percentile|percentile_approx|approxQuantile"
    )
    offenders = [p.name for p in sorted(JOBS.glob("*.py")) if pattern.search(p.read_text())]
    assert offenders == []


def test_the_glue_jobs_run_the_spark_line_the_spark_tier_pins() -> None:
    """Glue 5.0 is Spark 3.5 on Python 3.11 (the job code needs 3.11: StrEnum, datetime.UTC), and Spark's
    catalog must be the Glue Data Catalog for the jobs to read part tables by name."""
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^spark = \[\s*"pyspark==3\.5\.\*"', pyproject, re.M), "the spark group pins pyspark 3.5"
    terraform = (REPO / "infra/modules/flywheel-orchestration/main.tf").read_text()
    assert re.findall(r'glue_version\s*=\s*"([\d.]+)"', terraform) == ["5.0"]
    assert re.search(r'"--enable-glue-datacatalog"\s*=\s*"true"', terraform)
