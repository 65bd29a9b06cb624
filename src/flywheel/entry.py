"""The light entry point a step's subprocess starts from: no CLI, no spec parsing, no journal.

    python -m flywheel.entry < invocation.json

Imports the job, calls it, and writes a small result file the runner reads. A job failure exits 1
with the error type and message in the result; the traceback goes to the step's log.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flywheel.disk import DISK_FULL, DISK_FULL_EXIT, is_disk_full, why_writes_fail
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
        with contextlib.suppress(OSError):  # the log itself may be what cannot be written
            traceback.print_exc()
        if is_disk_full(exc):
            return _disk_full(exc, invocation)
        return {"ok": False, "error_type": type(exc).__name__, "error_message": str(exc) or repr(exc)}
    outputs = list(result.outputs) if isinstance(result, JobResult) else []
    metrics = dict(result.metrics) if isinstance(result, JobResult) else {}
    return {"ok": True, "outputs": outputs, "metrics": metrics}


def _disk_full(exc: OSError, invocation: StepInvocation) -> dict[str, Any]:
    """A write of the job refused for want of room: `DiskFull`, naming the file when Python knows it."""
    what = exc.filename or "the step's log or outputs"
    folder = Path(exc.filename or invocation.result_path or ".").parent
    return {
        "ok": False,
        "error_type": DISK_FULL,
        "error_message": f"{what} could not be written ({exc.strerror}): {why_writes_fail(folder)}",
    }


def run_invocation(invocation: StepInvocation) -> int:
    """Run one attempt in this process as a step's own process does; return its exit code.

    A log that cannot be written (a full disk) does not stop the job or its result; a result that
    cannot be written either ends the process with `DISK_FULL_EXIT`, which the executor names."""
    with contextlib.suppress(OSError):
        print(f"flywheel: {invocation.pipeline} run {invocation.run_id} {invocation.key} attempt {invocation.attempt}")
        sys.stdout.flush()
    body = call_job(invocation)
    if not body["ok"]:
        with contextlib.suppress(OSError):
            print(f"ERROR {body['error_type']}: {body['error_message']}", file=sys.stderr)
    try:
        _write_result(invocation.result_path, body)
    except OSError as exc:
        if is_disk_full(exc):
            return DISK_FULL_EXIT
        raise
    return 0 if body["ok"] else 1


def flush_output() -> None:
    """Flush stdout and stderr before the process ends; a log that cannot take more is no crash.

    What a full log could not take is dropped (the streams then point at /dev/null), or the
    interpreter's own flush at exit would fail again and turn the exit code into 120."""
    for name in ("stdout", "stderr"):
        try:
            getattr(sys, name).flush()
        except (OSError, ValueError):
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 - lives until the process ends


JOB_PATH_VARIABLE = "FLYWHEEL_JOB_PATH"
"""Folders a job's module may live in (the pipeline's folder), searched after the standard library."""


def main() -> int:
    for entry in filter(None, os.environ.get(JOB_PATH_VARIABLE, "").split(os.pathsep)):
        if entry not in sys.path:
            sys.path.append(entry)
    code = run_invocation(StepInvocation.from_json(sys.stdin.read()))
    flush_output()
    return code


if __name__ == "__main__":
    sys.exit(main())
