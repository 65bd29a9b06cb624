"""Costs and the Glue version, against the AWS documentation.

- "Job API" (glue/latest/dg/aws-glue-api-jobs-job.html, `WorkerType`) and "Defining job properties for
  Spark jobs" (glue/latest/dg/add-job.html): G.1X-G.16X are 1, 2, 4, 8, 12 and 16 DPU per worker, the
  memory-optimized R.1X-R.8X 1, 2, 4 and 8 DPU, G.025X a quarter DPU.
- "AWS Glue versions" (glue/latest/dg/release-notes.html): Glue 5.0 runs Python 3.11, Glue 4.0 Python
  3.10 (so the package, which needs 3.11, runs on 5.0 only).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from flywheel.aws.package_cli import GLUE_VERSION, build_glue_package
from flywheel.executors.glue import dpu_hours
from flywheel.spec import Resources
from tests.aws.test_terraform import MODULE, _blocks, _load

REPO = Path(__file__).resolve().parents[2]
DOCUMENTED_DPU = {
    "G.025X": 0.25,
    "G.1X": 1,
    "G.2X": 2,
    "G.4X": 4,
    "G.8X": 8,
    "G.12X": 12,
    "G.16X": 16,
    "R.1X": 1,
    "R.2X": 2,
    "R.4X": 4,
    "R.8X": 8,
}


@pytest.mark.parametrize(("worker_type", "dpu"), sorted(DOCUMENTED_DPU.items()))
def test_dpu_hours_of_every_documented_worker_type(worker_type: str, dpu: float) -> None:
    # ten workers for half an hour, without DPUSeconds (not auto scaled)
    assert dpu_hours({"ExecutionTime": 1800, "WorkerType": worker_type, "NumberOfWorkers": 10}) == dpu * 5
    assert Resources(worker_type=worker_type).worker_type == worker_type  # the spec accepts it too


def test_the_package_targets_the_glue_version_its_python_runs_on(tmp_path: Path) -> None:
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11" and GLUE_VERSION == "5.0"  # 5.0 runs 3.11; 4.0 (3.10) cannot import us
    manifest = json.loads(build_glue_package(tmp_path / "dist").manifest.read_text())
    assert manifest["glue_version"] == GLUE_VERSION
    job = _blocks(_load(MODULE / "main.tf"), "resource")["aws_glue_job.step"]
    assert job["glue_version"] == GLUE_VERSION
