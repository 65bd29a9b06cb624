"""Regenerate the corpus of execution histories: hand-built state machines run in moto's Step Functions
interpreter (server mode) with a fault injected at every step and context.

    python -m tests.aws.histories.generate [MACHINE ...]   # rewrites tests/aws/histories/cases/<machine>--*.json

Each case file holds what an on-call engineer would save with the AWS CLI (`describe-execution` and
`get-execution-history --output json`), the Glue job runs as `get-job-run` answered them, and an
`expected` block written here from the injected fault and the machine's topology (never from what
flywheel reads). `make test` reads the saved files; nothing here runs in the test suite.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from tests.aws.histories.machines import MACHINES
from tests.support.moto_server import MotoServer, start_moto_server

HERE = Path(__file__).parent
CASES = HERE / "cases"
A, B = "addressable-split-and-part", "infobase-split-and-part"
RA, RI = "register-part-tables[addressable_ids]", "register-part-tables[infobase_attributes]"
P, E, M, C = (
    "prepare-part-tables",
    "create-part-addressable-ids-er-table",
    "generate-data-monitor-report",
    "generate-cleanrooms-report",
)
ORDER = [A, B, RA, RI, P, E, M, C]
DOWNSTREAM = {A: [RA, RI, P, E, M, C], B: [RA, RI, P, E, M, C], RA: [P, E, M, C], RI: [P, E, M, C],
              P: [E, M, C], E: [M, C], M: [C], C: []}  # fmt: skip


def job(key: str) -> str:
    return "omc-flywheel-dev-" + key.split("[")[0]


@dataclass
class Fault:
    """What the moto Glue launcher does to the next matching run (see MotoServer.glue_outcome)."""

    key: str
    state: str = "FAILED"
    arguments: dict[str, str] = field(default_factory=dict)
    error: str = "[InjectedFault] injected by the corpus generator"
    hold: bool = False
    times: int = 1


@dataclass
class Case:
    machine: str
    name: str
    faults: list[Fault]
    expected: dict[str, list[str]]  # succeeded / failed / running / not_run, and rerun (the recovery plan)
    execution_input: dict[str, Any] = field(default_factory=dict)
    no_callback: tuple[str, ...] = ()  # jobs whose callback never comes
    abort_after: float | None = None  # stop the execution after this many seconds
    note: str = ""


def linear_failure(machine: str, key: str, arguments: dict[str, str] | None = None, *, sibling: str | None = None,
                   sibling_state: str = "succeeded", **extra: Any) -> Case:  # fmt: skip
    """A run that fails at `key` in a machine that stops at the first failure: what came before
    succeeded, `key` failed, the rest never ran. A Parallel sibling of `key` ends as `sibling_state`."""
    before = [k for k in ORDER[: ORDER.index(key)] if k != sibling]
    after = [k for k in ORDER[ORDER.index(key) + 1 :] if k != sibling]
    expected: dict[str, list[str]] = {"succeeded": before, "failed": [key], "running": [], "not_run": after}
    if sibling is not None:
        expected[{"succeeded": "succeeded", "failed": "failed", "not_run": "not_run"}[sibling_state]].append(sibling)
    rerun = [k for k in ORDER if k == key or k in DOWNSTREAM[key] or k in expected["failed"] + expected["not_run"]]
    expected["rerun"] = rerun
    return Case(machine, f"fails-at-{key}", [Fault(key, arguments=arguments or {})], expected, **extra)


def started_but_failed(machine: str, key: str, arguments: dict[str, str]) -> Case:
    """A start that returns at once (request-response) in a machine that goes on: the run of `key`
    failed in Glue, every other step ran and succeeded."""
    expected = {"succeeded": [k for k in ORDER if k != key], "failed": [key], "running": [], "not_run": [],
                "rerun": [key, *DOWNSTREAM[key]]}  # fmt: skip
    note = "the task succeeded at once (request-response); Glue says the run failed"
    return Case(machine, f"started-but-failed-in-glue-{key}", [Fault(key, arguments=arguments)], expected, note=note)


def cases() -> list[Case]:
    sdk_args = {RA: {"--table_name": "part_addressable_ids"}, RI: {"--table_name": "part_infobase_attributes"}}
    map_args = {RA: {"--context": "addressable_ids"}, RI: {"--context": "infobase_attributes"}}
    cb_args = {RA: {"--which": "a"}, RI: {"--which": "b"}}
    siblings = {A: B, B: A, RA: RI, RI: RA}
    out: list[Case] = []
    # 1. AWS SDK integration with a polling loop: a fault at every step and context. Parallel branches
    #    poll their own run; a failed branch stops its sibling's polling, but the sibling's Glue run
    #    (already ended in moto) succeeded.
    for key in ORDER:
        sibling = siblings.get(key) if key not in (M, C) else None
        out.append(linear_failure("console-sdk-polling", key, sdk_args.get(key), sibling=sibling))
    out.append(Case("console-sdk-polling", "succeeds", [], {"succeeded": ORDER, "failed": [], "running": [],
                                                            "not_run": [], "rerun": []}))  # fmt: skip
    # 2. .sync with a Map for step 3, Retry on prepare, Catch -> SNS -> Fail.
    for key in (A, RA, RI, E, M):
        sibling = {A: B, RA: RI, RI: RA, M: C}.get(key)
        case = linear_failure("console-sync-map-catch", key, map_args.get(key), sibling=sibling)
        if key == M:  # the two reports are Parallel siblings at the end
            case.expected["succeeded"] = [A, B, RA, RI, P, E, C]
            case.expected["not_run"] = []
            case.expected["rerun"] = [M, C]  # in the pipeline, the clean-rooms report reads the monitor's
        out.append(case)
    retried = Case(
        "console-sync-map-catch",
        "prepare-fails-once-then-retry-succeeds",
        [Fault(P)],
        {"succeeded": ORDER, "failed": [], "running": [], "not_run": [], "rerun": []},
        execution_input={"contexts": ["addressable_ids", "infobase_attributes"]},
        note="Retry: two attempts of prepare-part-tables, the last one decides",
    )
    out.append(retried)
    retried_out = linear_failure("console-sync-map-catch", P)
    retried_out.name = "prepare-fails-every-retry"
    retried_out.faults = [Fault(P, times=3)]
    out.append(retried_out)
    for case in out:
        if case.machine == "console-sync-map-catch":
            case.execution_input = {"contexts": ["addressable_ids", "infobase_attributes"]}
    aborted = Case(
        "console-sync-map-catch",
        "aborted-while-infobase-split-runs",
        [Fault(B, state="SUCCEEDED", hold=True)],
        {
            "succeeded": [A],
            "failed": [],
            "running": [B],
            "not_run": [RA, RI, P, E, M, C],
            "rerun": [B, RA, RI, P, E, M, C],
        },
        execution_input={"contexts": ["addressable_ids", "infobase_attributes"]},
        abort_after=2.0,
        note="ExecutionAborted while a .sync task was open; its Glue run goes on (held RUNNING)",
    )
    out.append(aborted)
    # 3. Callbacks, optimized and SDK: the job calls back; a failed job calls back with a failure.
    for machine in ("console-callback-sdk",):
        for key in (A, RI, E):
            case = linear_failure(machine, key, cb_args.get(key), sibling={A: B}.get(key))
            out.append(case)
        never = Case(
            machine,
            "er-table-never-calls-back",
            [],
            {"succeeded": [A, B, RA, RI, P], "failed": [], "running": [], "not_run": [M, C], "rerun": [E, M, C]},
            no_callback=(job(E),),
            note="the callback never came: the task timed out; the Glue run itself succeeded",
        )
        never.expected["succeeded"].append(E)  # Glue says the run succeeded: the step's truth is the run
        never.expected["rerun"] = [M, C]
        out.append(never)
    # 4. Fire-and-forget request-response starts: the machine moves on when a job *starts*, so a run
    #    that failed in Glue looks fine in the history; and a .sync step that timed out while its run
    #    goes on.
    for key in (A, RI):
        out.append(started_but_failed("console-request-response-timeout", key, {"--t": "b"} if key == RI else {}))
    timed_out = Case(
        "console-request-response-timeout",
        "prepare-timed-out-while-its-run-goes-on",
        [Fault(P, state="SUCCEEDED", hold=True)],
        {"succeeded": [A, B, RA, RI], "failed": [], "running": [P], "not_run": [E, M, C], "rerun": [P, E, M, C]},
        note="TaskTimedOut after TimeoutSeconds=2; the Glue run is still RUNNING (re-attach, never start twice)",
    )
    out.append(timed_out)
    out += _nested_parallel_cases() + _heartbeat_cases()
    return out


def _nested_parallel_cases() -> list[Case]:
    """5. SDK request-response splits in a nested Parallel (a failed run does not stop the machine: Glue
    tells), step 3's contexts as Parallel branches named after them, `.sync` for the rest; and the same
    machine with an execution timeout that cuts a `.sync` task whose run goes on."""
    machine, out = "console-sdk-nested-parallel", []
    for key in (A, B):
        out.append(started_but_failed(machine, key, {}))
    part_args = {RA: {"--part": "1"}, RI: {"--part": "2"}}  # the branches differ only by state name
    for key in (RA, RI, P, E):
        out.append(linear_failure(machine, key, part_args.get(key), sibling={RA: RI, RI: RA}.get(key)))
    reports = linear_failure(machine, M, sibling=C)
    reports.expected.update(succeeded=[A, B, RA, RI, P, E, C], not_run=[], rerun=[M, C])
    out.append(reports)
    out.append(
        Case(machine, "succeeds", [], {"succeeded": ORDER, "failed": [], "running": [], "not_run": [], "rerun": []})
    )
    out.append(
        Case(
            "console-sdk-nested-parallel-timeout",
            "execution-timed-out-while-prepare-runs",
            [Fault(P, state="SUCCEEDED", hold=True)],
            {"succeeded": [A, B, RA, RI], "failed": [], "running": [P], "not_run": [E, M, C], "rerun": [P, E, M, C]},
            note="ExecutionTimedOut (TimeoutSeconds=4) while a .sync task was open; its run goes on",
        )
    )
    return out


def _heartbeat_cases() -> list[Case]:
    """6. SDK `.waitForTaskToken` with HeartbeatSeconds, step 3 as an inline Map over table items."""
    machine = "console-sdk-heartbeat"
    tables = {"tables": [{"table": "part_addressable_ids"}, {"table": "part_infobase_attributes"}]}
    table_args = {RA: {"--table_name": "part_addressable_ids"}, RI: {"--table_name": "part_infobase_attributes"}}
    out = [linear_failure(machine, key, table_args.get(key), sibling={A: B, RI: RA}.get(key)) for key in (A, RI, M)]
    out.append(
        Case(
            machine,
            "er-table-stops-beating-while-its-run-goes-on",
            [Fault(E, state="SUCCEEDED", hold=True)],
            {"succeeded": [A, B, RA, RI, P], "failed": [], "running": [E], "not_run": [M, C], "rerun": [E, M, C]},
            note="States.HeartbeatTimeout after HeartbeatSeconds=2; the Glue run is still RUNNING",
        )
    )
    out.append(
        Case(machine, "succeeds", [], {"succeeded": ORDER, "failed": [], "running": [], "not_run": [], "rerun": []})
    )
    for case in out:
        case.execution_input = tables
    return out


def _callbacks(server: MotoServer, stop: threading.Event, silent: tuple[str, ...], before: set[str]) -> None:
    """Play the jobs' side of `.waitForTaskToken`: when a run with a `--task_token` argument has ended,
    send its outcome back (unless its job is one whose callback never comes)."""
    sfn = boto3.client("stepfunctions")
    answered: set[str] = set(before)
    while not stop.is_set():
        for run in server.glue_runs():
            token = (run.get("Arguments") or {}).get("--task_token")
            if not token or run["Id"] in answered or run["JobRunState"] in ("STARTING", "RUNNING"):
                continue
            answered.add(run["Id"])
            if run["JobName"] in silent:
                continue
            try:
                if run["JobRunState"] == "SUCCEEDED":
                    sfn.send_task_success(taskToken=token, output=json.dumps({"JobRunId": run["Id"]}))
                else:
                    sfn.send_task_failure(taskToken=token, error="GlueJobFailed", cause=str(run.get("ErrorMessage")))
            except ClientError:  # the task is gone (its branch was cancelled, it timed out): AWS refuses too
                continue
        time.sleep(0.1)


def run_case(server: MotoServer, case: Case, machine_arn: str) -> dict[str, Any]:
    before = {run["Id"] for run in server.glue_runs()}
    for fault in case.faults:
        server.glue_outcome(job(fault.key), fault.state, arguments=fault.arguments, error=fault.error,
                            hold=fault.hold, times=fault.times)  # fmt: skip
    sfn, glue = boto3.client("stepfunctions"), boto3.client("glue")
    stop = threading.Event()
    helper = threading.Thread(target=_callbacks, args=(server, stop, case.no_callback, before), daemon=True)
    helper.start()
    arn = sfn.start_execution(stateMachineArn=machine_arn, name=case.name[:80], input=json.dumps(case.execution_input))[
        "executionArn"
    ]
    began = time.monotonic()
    while True:
        described = sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            break
        if case.abort_after is not None and time.monotonic() - began > case.abort_after:
            sfn.stop_execution(executionArn=arn, error="OperatorAbort", cause="aborted by the corpus generator")
        if time.monotonic() - began > 60:
            raise RuntimeError(f"{case.machine}/{case.name} did not end")
        time.sleep(0.1)
    stop.set()
    helper.join()
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    runs = {}
    for run in server.glue_runs():
        if run["Id"] in before:
            continue
        answer = glue.get_job_run(JobName=run["JobName"], RunId=run["Id"])["JobRun"]
        runs[run["Id"]] = answer
    described.pop("ResponseMetadata", None)
    server.release_glue()  # held runs end, so the next case starts clean
    return {
        "machine": case.machine,
        "case": case.name,
        "note": case.note,
        "faults": [vars(f) for f in case.faults],
        "describe": described,
        "history": {"events": events},
        "glue_runs": runs,
        "expected": case.expected,
    }


def main(machines: list[str]) -> None:
    """Regenerate the cases of `machines` (all of them when none is named)."""
    unknown = sorted(set(machines) - set(MACHINES))
    if unknown:
        raise SystemExit(f"no machine {', '.join(unknown)}; known: {', '.join(MACHINES)}")
    with tempfile.TemporaryDirectory() as tmp:
        server = start_moto_server(log_path=Path(tmp) / "moto.log")
        try:
            os.environ.update(
                AWS_ACCESS_KEY_ID="testing",
                AWS_SECRET_ACCESS_KEY="testing",
                AWS_DEFAULT_REGION="us-east-1",
                AWS_ENDPOINT_URL=server.endpoint,
                AWS_EC2_METADATA_DISABLED="true",
            )
            generate(server, machines or list(MACHINES))
        finally:
            server.stop()


def generate(server: MotoServer, machines: list[str]) -> None:
    from flywheel.api import open_session
    from tests.aws.resources import create_glue_jobs

    CASES.mkdir(exist_ok=True)
    for machine_name in machines:
        for old in CASES.glob(f"{machine_name}--*.json"):
            old.unlink()
    all_cases = cases()
    for machine_name in machines:
        build = MACHINES[machine_name]
        server.reset()
        session = open_session("db-refresh", "dev", Path(tempfile.mkdtemp()) / "home")
        create_glue_jobs(session.spec, "dev", max_concurrent=4)
        boto3.client("sns").create_topic(Name="omc-flywheel-dev-alerts")
        arn = boto3.client("stepfunctions").create_state_machine(
            name=machine_name,
            definition=json.dumps(build()),
            roleArn="arn:aws:iam::123456789012:role/omc-flywheel-dev-sfn",
        )["stateMachineArn"]
        for case in (c for c in all_cases if c.machine == machine_name):
            body = run_case(server, case, arn)
            path = CASES / f"{machine_name}--{case.name}.json"
            path.write_text(json.dumps(body, indent=1, default=_jsonable, sort_keys=True) + "\n")
            print(f"{path.name}: {body['describe']['status']}")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot save {type(value).__name__}")


if __name__ == "__main__":
    main(sys.argv[1:])
