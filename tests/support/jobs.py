"""Jobs for the test pipelines: each records that it ran and writes an output derived from its inputs.

A test makes a step fail by creating `{faults}/{key}` (its text is the error message) and "fixes" the
cause by deleting it. Outputs chain: each step's output is a hash of its key and its inputs' outputs, so
a final result equal to an uninterrupted run's proves nothing was lost or run on stale inputs.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from flywheel.invocation import JobError, JobResult, StepInvocation


def record(invocation: StepInvocation) -> JobResult:
    params = invocation.params
    key = invocation.key
    with open(params["record_file"], "a") as handle:
        handle.write(f"{invocation.run_id} {key}\n")
    sleep = float(params.get("sleep", 0) or 0)
    sleep_only = params.get("sleep_only")
    if sleep and (not sleep_only or sleep_only == invocation.step):
        time.sleep(sleep)
    fault = Path(params["faults"]) / key
    if fault.exists():
        raise JobError(fault.read_text().strip() or f"injected failure in {key}", error_type="InjectedFault")
    out_dir = Path(params["out"])
    inputs = sorted(str(d) for d in params.get("inputs", []))
    digest = hashlib.sha256(key.encode())
    for name in inputs:
        for path in sorted(out_dir.glob(f"{name}*.txt")):
            digest.update(path.read_bytes())
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{key}.txt"
    staging = target.with_suffix(".tmp")
    staging.write_text(digest.hexdigest())
    os.replace(staging, target)
    return JobResult(outputs=({"path": str(target)},))


def noop(invocation: StepInvocation) -> None:
    """Does nothing: benchmarks measure the orchestrator alone."""


def report_preload(invocation: StepInvocation) -> JobResult:
    """Writes `<out>/<step>.json`: which process imported `preload_probe` (if any) and which runs the step."""
    import json
    import sys

    probe = sys.modules.get("tests.support.preload_probe")
    target = Path(str(invocation.params["out"])) / f"{invocation.step}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    body = {"imported_by": getattr(probe, "IMPORTED_BY", None), "step_pid": os.getpid()}
    target.write_text(json.dumps(body))
    return JobResult(outputs=({"path": str(target)},))
