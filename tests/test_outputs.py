"""Output fingerprints and step fingerprints: what a resume trusts before it reuses a step.

An output that was rewritten, removed or grew new files no longer verifies, and says which file; a
step whose code, parameters or raw inputs changed is stale, and says what changed; raising a resource
setting changes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from flywheel.fingerprints import OutputFingerprinter, StepFingerprint
from flywheel.outputs import CheckStatus, fingerprint_output, verify_record
from flywheel.spec import StepKey, load_project

TABLES: dict[str, Any] = {}


def fake_catalog(uri: str, params: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A scheme verifier as a pipeline would name it in `verifiers` (here: an in-memory catalog)."""
    scheme, _, name = uri.partition(":")
    table = TABLES.get(name)
    if table is None:
        return None
    return {"columns": table["columns"]} if scheme == "table" else {"partitions": table["partitions"]}


def test_a_file_output_verifies_until_it_is_rewritten_or_removed(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    report.write_text('{"rows": 10}')
    record = fingerprint_output(str(report), {})
    assert verify_record(record, {}).status is CheckStatus.MATCHES

    report.write_text('{"rows": 11}')
    check = verify_record(record, {})
    assert check.status is CheckStatus.CHANGED and "content changed" in check.detail

    report.unlink()
    assert verify_record(record, {}).status is CheckStatus.MISSING


def test_a_directory_output_names_the_files_that_changed_went_or_appeared(tmp_path: Path) -> None:
    out = tmp_path / "split" / "addressable_ids"
    for part in range(4):
        (out / f"id_part={part}").mkdir(parents=True)
        (out / f"id_part={part}" / "part-0.parquet").write_bytes(b"x" * (part + 1))
    (out / "_manifest.json").write_text("{}")
    (out / ".addressable_ids.staging-1234").mkdir()  # a writer's leftover is not part of the output
    record = fingerprint_output(str(out), {})
    assert record["count"] == 5
    assert verify_record(record, {}).status is CheckStatus.MATCHES

    (out / "id_part=1" / "part-0.parquet").write_bytes(b"yy" * 9)
    (out / "id_part=2" / "part-0.parquet").unlink()
    (out / "id_part=9").mkdir()
    (out / "id_part=9" / "part-0.parquet").write_bytes(b"z")
    detail = verify_record(record, {}).detail
    assert "1 file(s) gone (id_part=2/part-0.parquet)" in detail
    assert "1 changed (id_part=1/part-0.parquet)" in detail
    assert "1 new (id_part=9/part-0.parquet)" in detail


def test_a_large_parquet_file_is_checked_by_its_footer_without_reading_the_data(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    data = tmp_path / "part-0.parquet"
    query = "SELECT i, md5(i::VARCHAR) AS h FROM range(300000) t(i)"
    duckdb.sql(f"COPY ({query}) TO '{data}' (FORMAT parquet)")
    assert data.stat().st_size > 2 * 1024 * 1024
    record = fingerprint_output(str(data), {})
    began = time.perf_counter()
    assert verify_record(record, {}).status is CheckStatus.MATCHES
    assert time.perf_counter() - began < 0.05

    duckdb.sql(f"COPY ({query} WHERE i % 1000 <> 7) TO '{data}' (FORMAT parquet)")
    assert verify_record(record, {}).status is CheckStatus.CHANGED


def test_catalog_outputs_are_checked_by_the_function_the_pipeline_names(tmp_path: Path) -> None:
    params = {"verifiers": {"table": f"{__name__}:fake_catalog", "partitions": f"{__name__}:fake_catalog"}}
    TABLES["part_ids"] = {"columns": [["id", "VARCHAR"]], "partitions": ["0", "1", "2"]}
    table = fingerprint_output("table:part_ids", params)
    parts = fingerprint_output("partitions:part_ids", params)
    assert verify_record(table, params).ok and verify_record(parts, params).ok

    TABLES["part_ids"] = {"columns": [["id", "VARCHAR"]], "partitions": ["0", "2", "3"]}
    assert verify_record(table, params).status is CheckStatus.MATCHES  # registering is not repairing
    check = verify_record(parts, params)
    assert check.status is CheckStatus.CHANGED
    assert check.detail == "1 partition(s) gone (1); 1 new partition(s) (3)"

    del TABLES["part_ids"]
    assert verify_record(table, params).status is CheckStatus.MISSING
    unknown = fingerprint_output("table:part_ids", {})
    assert verify_record(unknown, {}).status is CheckStatus.UNCHECKED
    assert "no verifier for table:" in verify_record(unknown, {}).detail


JOB = """
from flywheel.invocation import JobResult


def run(invocation):
    params = invocation.params
    return JobResult(outputs=({"path": params["target"], "parts": params["n_parts"]},))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "jobs_here").mkdir(parents=True)
    (root / "jobs_here" / "__init__.py").write_text("")
    (root / "jobs_here" / "split.py").write_text(JOB)
    (tmp_path / "raw" / "addressable_ids").mkdir(parents=True)
    (tmp_path / "raw" / "addressable_ids" / "part-1.csv.gz").write_bytes(b"id\n1\n")
    (tmp_path / "raw" / "infobase_attributes").mkdir(parents=True)
    pipeline = {
        "pipeline": "fp",
        "params": {"n_parts": 16, "target": "{home}/out/split", "unused": "x", "raw_root": str(tmp_path / "raw")},
        "steps": [
            {
                "id": "split",
                "number": 1,
                "title": "Split",
                "job": "jobs_here.split:run",
                "params": {"raw_inputs": ["{raw_root}/addressable_ids"]},
                "resources": {"memory": "4GB", "threads": 2},
                "outputs": ["{target}"],
            }
        ],
    }
    (root / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    return root


def _fingerprint(root: Path, **settings: Any) -> StepFingerprint:
    project = load_project(str(root / "pipeline.yaml"))
    env = project.config.environment("local").model_copy(update={"settings": settings})
    fp = OutputFingerprinter(project.spec, "local", env, root.parent / "home")
    key = StepKey("split")
    return fp.fingerprint(key, {**fp.params(key), "memory_limit": settings.get("memory_limit", "4GB")})


def test_a_step_is_stale_when_its_code_parameters_or_raw_inputs_change_and_says_which(project: Path) -> None:
    before = _fingerprint(project)
    assert _fingerprint(project).changes_since(before) is None
    assert "jobs_here.split" in before.code and "n_parts" in before.params and "unused" not in before.params

    assert _fingerprint(project, n_parts=32).changes_since(before) == "parameter n_parts changed"
    assert _fingerprint(project, unused="y").changes_since(before) is None  # the job never reads it

    job = project / "jobs_here" / "split.py"
    job.write_text(job.read_text() + "\n# a fix\n")
    assert _fingerprint(project).changes_since(before) == "code jobs_here.split changed"
    after_code = _fingerprint(project)

    raw = project.parent / "raw"
    (raw / "infobase_attributes" / "part-1.parquet").write_bytes(b"other step's input")
    assert _fingerprint(project).changes_since(after_code) is None
    new_file = raw / "addressable_ids" / "part-2.csv.gz"
    new_file.write_bytes(b"id\n2\n")
    assert _fingerprint(project).changes_since(after_code) == f"raw inputs {raw}/addressable_ids changed"


def test_raising_resources_never_makes_a_step_stale(project: Path) -> None:
    before = _fingerprint(project)
    assert _fingerprint(project, memory_limit="64GB", threads=8, workers=30).changes_since(before) is None


def test_a_recorded_fingerprint_round_trips_and_foreign_ones_are_ignored(project: Path) -> None:
    fingerprint = _fingerprint(project)
    assert StepFingerprint.from_text(fingerprint.to_text()) == fingerprint
    assert StepFingerprint.from_text("sha256:abc") is None
    assert StepFingerprint.from_text(None) is None
    os.utime(project / "pipeline.yaml")  # touching the definition is not a change of the step
    assert _fingerprint(project).changes_since(fingerprint) is None
