"""Histories moto's interpreter cannot produce, written out in the event shapes the AWS docs show.

    python -m tests.aws.histories.handwritten      # rewrites tests/aws/histories/cases/handwritten-*.json

moto runs the optimized Glue integration only as `.sync` (its `state_task_service_glue.py` supports no
`.waitForTaskToken`), and it reports a heartbeat that ran out as `States.Timeout`. So the machine below,
the optimized `arn:aws:states:::glue:startJobRun.waitForTaskToken` with `HeartbeatSeconds`, is written
here event by event, following:

- "HistoryEvent" (Step Functions API reference, API_HistoryEvent): `id`, `previousEventId`, `timestamp`,
  `type` and one `<kind>EventDetails`;
- "TaskScheduledEventDetails", "TaskSubmittedEventDetails", "TaskFailedEventDetails",
  "TaskTimedOutEventDetails" (same reference): `resourceType` `glue`, `resource`
  `startJobRun.waitForTaskToken`, `parameters` as a JSON string, `heartbeatInSeconds`;
- "Error handling in Step Functions" (developer guide): a task whose heartbeat ran out fails with
  `States.HeartbeatTimeout`;
- "Run AWS Glue jobs with Step Functions" (connect-glue): the `StartJobRun` response, `{"JobRunId": ...}`,
  is what the task submitted;
- "JobRun structure" (AWS Glue API, aws-glue-api-jobs-runs): what `get-job-run` answers.

Each case's `expected` block is written from the scripted outcome of each state, as in `generate.py`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.aws.histories.generate import CASES, ORDER, RA, RI, A, B, C, E, M, P, job

MACHINE = "handwritten-optimized-callback"
ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:" + MACHINE
RESOURCE = {"resourceType": "glue", "resource": "startJobRun.waitForTaskToken"}
STATES = {A: "Step1_SplitAddressable", B: "Step1_SplitInfobase", RA: "RegisterAddressableIds",
          RI: "RegisterInfobaseAttributes", P: "Step3_PreparePartTables", E: "Step4_CreateErTable",
          M: "Step5_DataMonitorReport", C: "Step6_CleanroomsReport"}  # fmt: skip
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


class History:
    """Appends events with their ids, `previousEventId` chain and a clock a minute a step."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.clock = T0

    def add(self, kind: str, previous: int, details_name: str | None = None, **details: Any) -> int:
        self.clock += timedelta(seconds=30)
        event: dict[str, Any] = {"id": len(self.events) + 1, "timestamp": self.clock.isoformat(), "type": kind}
        if previous:
            event["previousEventId"] = previous
        if details_name is not None:
            event[details_name] = details
        self.events.append(event)
        return int(event["id"])


def run_id(key: str) -> str:
    return "jr_" + hashlib.sha256(key.encode()).hexdigest()


def task(h: History, previous: int, key: str, outcome: str) -> int:
    """One Task state starting `key`'s job and waiting for its callback; returns the last event id."""
    name = STATES[key]
    arguments = {"--task_token": f"token-{name}"}
    entered = h.add("TaskStateEntered", previous, "stateEnteredEventDetails", name=name, input="{}")
    parameters = json.dumps({"JobName": job(key), "Arguments": arguments})
    scheduled = h.add("TaskScheduled", entered, "taskScheduledEventDetails", **RESOURCE, region="us-east-1",
                      parameters=parameters, heartbeatInSeconds=600, timeoutInSeconds=14400)  # fmt: skip
    started = h.add("TaskStarted", scheduled, "taskStartedEventDetails", **RESOURCE)
    submitted = h.add("TaskSubmitted", started, "taskSubmittedEventDetails", **RESOURCE,
                      output=json.dumps({"JobRunId": run_id(key)}))  # fmt: skip
    if outcome == "open":  # the execution ends while the task waits
        return submitted
    if outcome == "heartbeat":
        return h.add("TaskTimedOut", submitted, "taskTimedOutEventDetails", **RESOURCE,
                     error="States.HeartbeatTimeout", cause="")  # fmt: skip
    if outcome == "failed":
        return h.add("TaskFailed", submitted, "taskFailedEventDetails", **RESOURCE, error="GlueJobFailed",
                     cause="[InjectedFault] the job called back with SendTaskFailure")  # fmt: skip
    done = h.add("TaskSucceeded", submitted, "taskSucceededEventDetails", **RESOURCE,
                 output=json.dumps({"JobRunId": run_id(key)}))  # fmt: skip
    return h.add("TaskStateExited", done, "stateExitedEventDetails", name=name, output="{}")


def case(name: str, outcomes: dict[str, str], end: str, glue: dict[str, str], expected: dict[str, list[str]],
         note: str) -> dict[str, Any]:  # fmt: skip
    """A whole execution: step 1 as a Parallel of the two splits, the rest one Task after another."""
    h = History()
    last = h.add("ExecutionStarted", 0, "executionStartedEventDetails", input="{}", roleArn="arn:aws:iam::1:role/x",
                 stateMachineArn=ARN)  # fmt: skip
    entered = h.add(
        "ParallelStateEntered", last, "stateEnteredEventDetails", name="Step1_ParallelSplitJobs", input="{}"
    )
    started = h.add("ParallelStateStarted", entered)
    ends = [task(h, started, key, outcomes.get(key, "succeeded")) for key in (A, B)]
    ended_ok = all(outcomes.get(k, "succeeded") == "succeeded" for k in (A, B))
    last = h.add("ParallelStateSucceeded" if ended_ok else "ParallelStateFailed", max(ends))
    if ended_ok:
        last = h.add(
            "ParallelStateExited", last, "stateExitedEventDetails", name="Step1_ParallelSplitJobs", output="{}"
        )
        for key in ORDER[2:]:
            last = task(h, last, key, outcomes.get(key, "succeeded"))
            if outcomes.get(key, "succeeded") != "succeeded":
                break
    error = {"failed": "GlueJobFailed", "heartbeat": "States.HeartbeatTimeout"}.get(end)
    if end == "aborted":
        h.add("ExecutionAborted", last, "executionAbortedEventDetails", error="OperatorAbort", cause="")
    else:
        h.add("ExecutionFailed", last, "executionFailedEventDetails", error=error, cause="")
    arn = f"arn:aws:states:us-east-1:123456789012:execution:{MACHINE}:{name}"
    describe = {"executionArn": arn, "stateMachineArn": ARN, "name": name, "input": "{}",
                "status": "ABORTED" if end == "aborted" else "FAILED", "startDate": T0.isoformat(),
                "stopDate": h.clock.isoformat(), **({"error": error} if error else {})}  # fmt: skip
    runs = {
        run_id(key): {
            "Id": run_id(key),
            "JobName": job(key),
            "JobRunState": state,
            "Attempt": 0,
            "StartedOn": T0.isoformat(),
            "Arguments": {"--task_token": f"token-{STATES[key]}"},
            **({"CompletedOn": h.clock.isoformat()} if state not in ("RUNNING", "STOPPING") else {}),
            **({"ErrorMessage": "[InjectedFault] scripted"} if state == "FAILED" else {}),
        }
        for key, state in glue.items()
    }
    return {"machine": MACHINE, "case": name, "note": note, "faults": [], "describe": describe,
            "history": {"events": h.events}, "glue_runs": runs, "expected": expected}  # fmt: skip


def cases() -> list[dict[str, Any]]:
    ok = {k: "SUCCEEDED" for k in ORDER}
    return [
        case("fails-at-register-part-tables[infobase_attributes]", {RI: "failed"}, "failed",
             {**{k: ok[k] for k in (A, B, RA)}, RI: "FAILED"},
             {"succeeded": [A, B, RA], "failed": [RI], "running": [], "not_run": [P, E, M, C],
              "rerun": [RI, P, E, M, C]}, ""),
        case("er-table-heartbeat-timed-out-while-its-run-goes-on", {E: "heartbeat"}, "heartbeat",
             {**{k: ok[k] for k in (A, B, RA, RI, P)}, E: "RUNNING"},
             {"succeeded": [A, B, RA, RI, P], "failed": [], "running": [E], "not_run": [M, C], "rerun": [E, M, C]},
             "States.HeartbeatTimeout while the Glue run is still RUNNING"),
        case("aborted-while-prepare-waits-for-its-callback", {P: "open"}, "aborted",
             {**{k: ok[k] for k in (A, B, RA, RI)}, P: "STOPPING"},
             {"succeeded": [A, B, RA, RI], "failed": [P], "running": [], "not_run": [E, M, C], "rerun": [P, E, M, C]},
             "ExecutionAborted with the task open; its Glue run is STOPPING (ending, not running)"),
        case("split-infobase-fails-in-the-parallel", {B: "failed"}, "failed", {A: "SUCCEEDED", B: "FAILED"},
             {"succeeded": [A], "failed": [B], "running": [], "not_run": [RA, RI, P, E, M, C],
              "rerun": [B, RA, RI, P, E, M, C]}, ""),
    ]  # fmt: skip


def main() -> None:
    for old in CASES.glob(f"{MACHINE}--*.json"):
        old.unlink()
    for body in cases():
        path = CASES / f"{MACHINE}--{body['case']}.json"
        path.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
        print(path.name)


if __name__ == "__main__":
    main()
