"""The one entry point every db-refresh Glue job runs: job arguments in, the same job code, a result out.

A Glue job's script is three lines (written by `flywheel aws package`) that call `main(sys.argv)`.
`main` rebuilds the `StepInvocation` from the job arguments, calls the job through
`flywheel.entry.call_job` exactly as a local subprocess does, writes the same result body (the output
manifest) to the invocation's `result_path` (an `s3://` URI on AWS), and raises when the job failed so
that Glue marks the run FAILED with `[error-type] message` as its ErrorMessage.

The argument contract (names without the leading `--`, as `getResolvedOptions` wants them), shared with
the Glue executor and the Step Functions export:

- `flywheel_invocation`: the whole `StepInvocation` JSON (what the Glue executor sends), or its fields:
  `flywheel_pipeline`, `flywheel_env`, `flywheel_step`, `flywheel_context` (optional), `flywheel_job`
  (`module:function`), `flywheel_params` (JSON object), `flywheel_run_id` and `flywheel_attempt`
  (optional; a Step Functions execution has no journal run, so 0 and 1);
- `flywheel_result_path`: overrides where the result goes (optional);
- `flywheel_attempt_id`, `flywheel_key`, `flywheel_params_sha`, `flywheel_start_token`: labels the
  executor uses to find a run again after a crash; the job ignores them.

Only the standard library is imported here at module level (boto3 and awsglue exist on Glue).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flywheel.invocation import StepInvocation

INVOCATION = "flywheel_invocation"
PIPELINE = "flywheel_pipeline"
ENV = "flywheel_env"
STEP = "flywheel_step"
CONTEXT = "flywheel_context"
JOB = "flywheel_job"
PARAMS = "flywheel_params"
RUN_ID = "flywheel_run_id"
ATTEMPT = "flywheel_attempt"
RESULT_PATH = "flywheel_result_path"
ATTEMPT_ID = "flywheel_attempt_id"
KEY = "flywheel_key"
PARAMS_SHA = "flywheel_params_sha"
START_TOKEN = "flywheel_start_token"

GLUE_NAMES = ("JOB_NAME", "JOB_RUN_ID")


class JobFailed(RuntimeError):
    """Raised at the end of a failed job so Glue reports FAILED with `[error-type] message`."""


def arg(name: str) -> str:
    """The job-argument spelling of a contract name: `--flywheel_step`."""
    return f"--{name}"


def parse_argv(argv: Sequence[str]) -> dict[str, str]:
    """`--name value` and `--name=value` pairs from a Glue job's argv (flywheel's and Glue's own names)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not token.startswith("--"):
            continue
        name, eq, value = token[2:].partition("=")
        if not eq:
            if i < len(argv) and not argv[i].startswith("--"):
                value = argv[i]
                i += 1
            else:
                value = ""
        if name.startswith("flywheel_") or name in GLUE_NAMES:
            out[name] = value
    return out


def resolved_arguments(argv: Sequence[str]) -> dict[str, str]:
    """The job arguments: `awsglue.utils.getResolvedOptions` on Glue, a plain parser elsewhere."""
    present = parse_argv(argv)
    try:
        from awsglue.utils import getResolvedOptions  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return present
    resolved: dict[str, str] = getResolvedOptions(list(argv), sorted(present))
    return {**present, **resolved}


def invocation_from_arguments(args: Mapping[str, str]) -> StepInvocation:
    """Rebuild the invocation from the whole JSON, or from its fields (Step Functions tasks)."""
    if args.get(INVOCATION):
        invocation = StepInvocation.from_json(args[INVOCATION])
    else:
        missing = [name for name in (PIPELINE, ENV, STEP, JOB) if not args.get(name)]
        if missing:
            raise ValueError(
                "the Glue job arguments carry no flywheel invocation: missing "
                + ", ".join(arg(m) for m in missing)
                + f" (or pass the whole invocation as {arg(INVOCATION)})"
            )
        params = json.loads(args.get(PARAMS) or "{}")
        if not isinstance(params, dict):
            raise ValueError(f"{arg(PARAMS)} must be a JSON object")
        invocation = StepInvocation(
            pipeline=args[PIPELINE],
            step=args[STEP],
            context=args.get(CONTEXT) or None,
            run_id=int(args.get(RUN_ID) or 0),
            attempt=int(args.get(ATTEMPT) or 1),
            env=args[ENV],
            job=args[JOB],
            params=params,
        )
    if args.get(RESULT_PATH):
        invocation = StepInvocation(**{**invocation.__dict__, "result_path": args[RESULT_PATH]})
    return invocation


def write_result(path: str | None, body: Mapping[str, Any]) -> None:
    """The result body to S3 (one PUT) or to a local file (tests, local dry runs of the entry)."""
    if not path:
        return
    if path.startswith("s3://"):
        from flywheel.aws.s3 import write_json

        write_json(path, body)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_suffix(".tmp")
    staging.write_text(json.dumps(body, default=str))
    staging.replace(target)


def run(argv: Sequence[str]) -> dict[str, Any]:
    """Run the job the arguments name; return the result body (written to the result path too)."""
    from flywheel.entry import call_job

    args = resolved_arguments(argv)
    invocation = invocation_from_arguments(args)
    print(
        f"flywheel: {invocation.pipeline} {invocation.env} run {invocation.run_id} {invocation.key} "
        f"attempt {invocation.attempt} (Glue run {args.get('JOB_RUN_ID', '?')})",
        flush=True,
    )
    body = call_job(invocation)
    body["glue_job_run_id"] = args.get("JOB_RUN_ID")
    write_result(invocation.result_path, body)
    return body


def main(argv: Sequence[str] | None = None) -> None:
    """The Glue job's script calls this; a failed job raises `JobFailed` (Glue: FAILED + ErrorMessage)."""
    body = run(sys.argv if argv is None else argv)
    if not body["ok"]:
        print(f"ERROR {body['error_type']}: {body['error_message']}", file=sys.stderr, flush=True)
        raise JobFailed(f"[{body['error_type']}] {body['error_message']}")


ENTRY_SCRIPT = '''"""Glue job script for flywheel (written by `flywheel aws package`; do not edit)."""

import sys

from flywheel.aws.glue_entry import main

main(sys.argv)
'''
"""The `ScriptLocation` of every db-refresh Glue job: all of them run the same entry point."""


if __name__ == "__main__":
    main()
