"""The light entry point a step's subprocess starts from: no CLI, no spec parsing, no journal.

    python -m flywheel.entry < invocation.json

Imports the job, calls it, and writes a small result file the runner reads. A job failure exits 1
with the error type and message in the result; the traceback goes to the step's log.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flywheel.invocation import JobError, JobResult, StepInvocation


def _write_result(path: str | None, body: Mapping[str, Any]) -> None:
    if path is None:
        return
    target = Path(path)
    staging = target.with_suffix(".tmp")
    staging.write_text(json.dumps(body, default=str))
    staging.replace(target)


def call_job(invocation: StepInvocation) -> dict[str, Any]:
    """Run the job in this process; return the result body (also used by the in-process executor)."""
    module_name, _, function_name = invocation.job.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        return {
            "ok": False,
            "error_type": "JobNotFound",
            "error_message": f"cannot load job {invocation.job}: {exc}",
        }
    try:
        result = function(invocation)
    except JobError as exc:
        return {"ok": False, "error_type": exc.error_type, "error_message": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        return {"ok": False, "error_type": type(exc).__name__, "error_message": str(exc) or repr(exc)}
    outputs = list(result.outputs) if isinstance(result, JobResult) else []
    metrics = dict(result.metrics) if isinstance(result, JobResult) else {}
    return {"ok": True, "outputs": outputs, "metrics": metrics}


def run_invocation(invocation: StepInvocation) -> int:
    """Run one attempt in this process as a step's own process does; return its exit code."""
    print(f"flywheel: {invocation.pipeline} run {invocation.run_id} {invocation.key} attempt {invocation.attempt}")
    sys.stdout.flush()
    body = call_job(invocation)
    if not body["ok"]:
        print(f"ERROR {body['error_type']}: {body['error_message']}", file=sys.stderr)
    _write_result(invocation.result_path, body)
    return 0 if body["ok"] else 1


JOB_PATH_VARIABLE = "FLYWHEEL_JOB_PATH"
"""Folders a job's module may live in (the pipeline's folder), searched after the standard library."""


def main() -> int:
    for entry in filter(None, os.environ.get(JOB_PATH_VARIABLE, "").split(os.pathsep)):
        if entry not in sys.path:
            sys.path.append(entry)
    return run_invocation(StepInvocation.from_json(sys.stdin.read()))


if __name__ == "__main__":
    sys.exit(main())
