"""AWS resources the Glue-side tests create in moto (what Terraform creates in a real account)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import yaml

from flywheel.invocation import JobResult, StepInvocation
from flywheel.params import expand
from flywheel.spec import PipelineSpec

REPO = Path(__file__).resolve().parents[2]


def glue_job_names(spec: PipelineSpec, env: str) -> dict[str, str]:
    return {
        s.id: str(expand(s.cloud.glue_job or "", {"env": env, "pipeline": spec.pipeline}))
        for s in spec.steps
        if s.cloud.glue_job
    }


def create_glue_jobs(spec: PipelineSpec, env: str, *, max_concurrent: int = 4) -> dict[str, str]:
    """One Glue job per step, all running the flywheel entry script, as the Terraform stack defines."""
    glue = boto3.client("glue")
    names = glue_job_names(spec, env)
    for name in names.values():
        glue.create_job(
            Name=name,
            Role=f"arn:aws:iam::123456789012:role/omc-flywheel-{env}-glue",
            Command={"Name": "glueetl", "ScriptLocation": f"s3://omc-flywheel-{env}-data/_flywheel/glue/entry.py"},
            ExecutionProperty={"MaxConcurrentRuns": max_concurrent},
            GlueVersion="4.0",
        )
    return names


def create_bucket(name: str) -> None:
    boto3.client("s3").create_bucket(Bucket=name)


def tiny_aws_project(root: Path, *, steps: list[dict[str, Any]], aws: dict[str, Any] | None = None) -> Path:
    """A small pipeline with a `dev` environment on Glue (job code from tests.support.jobs)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pipeline.yaml").write_text(
        yaml.safe_dump({"pipeline": "tiny", "params": {"out": "{data_root}/out"}, "steps": steps}, sort_keys=False)
    )
    settings = {
        "profile": "flywheel-dev",
        "region": "us-east-1",
        "s3_root": "s3://tiny-dev-data",
        "glue_database": "tiny_dev",
        **(aws or {}),
    }
    project = {
        "default_env": "dev",
        "environments": {
            "dev": {
                "executor": "glue",
                "engine": "spark",
                "settings": {"data_root": "s3://tiny-dev-data"},
                "aws": settings,
            }
        },
    }
    (root / "project.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
    return root / "pipeline.yaml"


def glue_step(step_id: str, number: int, depends_on: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": step_id,
        "number": number,
        "title": step_id,
        "job": "tests.support.jobs:noop",
        "depends_on": list(depends_on),
        "cloud": {"glue_job": "tiny-{env}-" + step_id},
    }
    body.update(extra)
    return body


Job = Callable[[StepInvocation], JobResult]


def run_job(job: Job, params: dict[str, Any], step: str, **extra: Any) -> JobResult:
    """A db-refresh job called in this process as the Glue entry point calls it (run 1, attempt 1, dev)."""
    invocation = StepInvocation(
        pipeline="db-refresh",
        step=step,
        context=extra.get("table"),
        run_id=1,
        attempt=1,
        env="dev",
        job=f"{job.__module__}:run",
        params={**params, **extra},
    )
    return job(invocation)
