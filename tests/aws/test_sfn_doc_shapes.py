"""Shapes moto's interpreter cannot produce, written by hand as the AWS documentation shows them.

- The optimized `glue:startJobRun.waitForTaskToken` (moto runs only `.sync` for the optimized Glue
  integration): "Wait for a Callback with Task Token" in the Step Functions developer guide
  (https://docs.aws.amazon.com/step-functions/latest/dg/connect-to-resource.html#connect-wait-token),
  with a `HeartbeatSeconds` that expires ("States.HeartbeatTimeout", HistoryEvent / TaskTimedOut in the
  API reference, https://docs.aws.amazon.com/step-functions/latest/apireference/API_HistoryEvent.html).
- A Lambda task that starts the Glue job itself (`arn:aws:states:::lambda:invoke`, whose output wraps
  the function's answer in `Payload`: "Invoke Lambda with Step Functions",
  https://docs.aws.amazon.com/step-functions/latest/dg/connect-lambda.html), and a Lambda that is not
  part of the pipeline at all (moto runs Lambda only with Docker).

Expected results come from the scenario each history tells, not from the reader.
"""

from __future__ import annotations

import json
from typing import Any

from flywheel import api
from flywheel.aws.sfn import AttemptStatus, read_history
from flywheel.spec import StepKey
from tests.aws.test_sfn_histories import RecordedGlue

SPEC = api.open_session("db-refresh", "dev", "/nonexistent-home").spec
PREPARE = "omc-flywheel-dev-prepare-part-tables"
ARN = "arn:aws:states:us-east-1:123456789012:execution:nightly-by-hand:2026-12-03"


def event(n: int, prev: int, kind: str, at: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": n, "previousEventId": prev, "type": kind, "timestamp": f"2026-12-03T02:{at}+00:00"}
    if details:
        name = {"TaskStateEntered": "stateEnteredEventDetails", "ExecutionFailed": "executionFailedEventDetails"}.get(
            kind, kind[0].lower() + kind[1:] + "EventDetails"
        )
        body[name] = details
    return body


def described(status: str) -> dict[str, Any]:
    return {
        "executionArn": ARN,
        "name": "2026-12-03",
        "status": status,
        "startDate": "2026-12-03T02:00:00+00:00",
        "stopDate": "2026-12-03T02:30:00+00:00",
        "input": "{}",
    }


def glue_run(run_id: str, state: str, error: str = "") -> dict[str, Any]:
    return {
        "Id": run_id,
        "JobName": PREPARE,
        "JobRunState": state,
        "ErrorMessage": error,
        "StartedOn": "2026-12-03T02:01:00+00:00",
    }


def callback_history(*, callback: bool) -> list[dict[str, Any]]:
    """Prepare started through `glue:startJobRun.waitForTaskToken` with HeartbeatSeconds=600."""
    params = json.dumps({"JobName": PREPARE, "Arguments": {"--task_token": "AQCE..."}})
    events = [
        event(1, 0, "ExecutionStarted", "00:00.000", input="{}", roleArn="arn:aws:iam::123456789012:role/sfn"),
        event(2, 1, "TaskStateEntered", "00:01.000", name="Prepare", input="{}"),
        event(
            3,
            2,
            "TaskScheduled",
            "00:01.100",
            resourceType="glue",
            resource="startJobRun.waitForTaskToken",
            region="us-east-1",
            parameters=params,
            heartbeatInSeconds=600,
        ),
        event(4, 3, "TaskStarted", "00:01.200", resourceType="glue", resource="startJobRun.waitForTaskToken"),
        event(
            5,
            4,
            "TaskSubmitted",
            "00:01.300",
            resourceType="glue",
            resource="startJobRun.waitForTaskToken",
            output=json.dumps({"JobRunId": "jr_prepare_1"}),
        ),
    ]
    if callback:
        events.append(
            event(
                6,
                5,
                "TaskSucceeded",
                "20:00.000",
                resourceType="glue",
                resource="startJobRun.waitForTaskToken",
                output=json.dumps({"ok": True}),
            )
        )
    else:
        events += [
            event(
                6,
                5,
                "TaskTimedOut",
                "11:01.300",
                resourceType="glue",
                resource="startJobRun.waitForTaskToken",
                error="States.HeartbeatTimeout",
                cause="",
            ),
            event(7, 6, "ExecutionFailed", "11:01.400", error="States.HeartbeatTimeout", cause=""),
        ]
    return events


def test_a_callback_that_never_came_leaves_the_glue_run_going_on_to_reattach() -> None:
    record = read_history(
        callback_history(callback=False),
        described("FAILED"),
        spec=SPEC,
        env_name="dev",
        glue=RecordedGlue({"jr_prepare_1": glue_run("jr_prepare_1", "RUNNING")}),
    )
    attempt = record.tasks[StepKey("prepare-part-tables")].last
    assert (attempt.integration, attempt.task_outcome, attempt.status) == (
        "callback",
        "timed out",
        AttemptStatus.RUNNING,
    )
    assert record.still_running and record.still_running[0].job_run_id == "jr_prepare_1"


def test_a_callback_that_came_is_checked_against_the_run_and_without_glue_trusted_as_marked() -> None:
    failed = read_history(
        callback_history(callback=True),
        described("SUCCEEDED"),
        spec=SPEC,
        env_name="dev",
        glue=RecordedGlue({"jr_prepare_1": glue_run("jr_prepare_1", "FAILED", "OutOfMemory")}),
    )
    assert failed.tasks[StepKey("prepare-part-tables")].last.status is AttemptStatus.FAILED  # Glue's word wins
    offline = read_history(callback_history(callback=True), described("SUCCEEDED"), spec=SPEC, env_name="dev")
    attempt = offline.tasks[StepKey("prepare-part-tables")].last
    assert attempt.status is AttemptStatus.SUCCEEDED and attempt.evidence == "history only: Glue was not asked"


def lambda_history() -> list[dict[str, Any]]:
    """A Lambda that starts the prepare job (its payload names the job), then an unrelated Lambda."""
    starts = json.dumps({"FunctionName": "start-glue", "Payload": {"JobName": PREPARE}})
    audit = json.dumps({"FunctionName": "audit-log", "Payload": {"message": "prepare done"}})
    return [
        event(1, 0, "ExecutionStarted", "00:00.000", input="{}", roleArn="arn:aws:iam::123456789012:role/sfn"),
        event(2, 1, "TaskStateEntered", "00:01.000", name="StartPrepareViaLambda", input="{}"),
        event(
            3,
            2,
            "TaskScheduled",
            "00:01.100",
            resourceType="lambda",
            resource="invoke",
            region="us-east-1",
            parameters=starts,
        ),
        event(4, 3, "TaskStarted", "00:01.200", resourceType="lambda", resource="invoke"),
        event(
            5,
            4,
            "TaskSucceeded",
            "00:02.000",
            resourceType="lambda",
            resource="invoke",
            output=json.dumps({"StatusCode": 200, "Payload": {"JobRunId": "jr_prepare_9"}}),
        ),
        event(6, 5, "TaskStateEntered", "00:03.000", name="AuditLog", input="{}"),
        event(
            7,
            6,
            "TaskScheduled",
            "00:03.100",
            resourceType="lambda",
            resource="invoke",
            region="us-east-1",
            parameters=audit,
        ),
        event(8, 7, "TaskStarted", "00:03.200", resourceType="lambda", resource="invoke"),
        event(
            9,
            8,
            "TaskFailed",
            "00:03.300",
            resourceType="lambda",
            resource="invoke",
            error="Lambda.Unknown",
            cause="audit sink down",
        ),
        event(10, 9, "ExecutionFailed", "00:03.400", error="Lambda.Unknown", cause="audit sink down"),
    ]


def test_a_lambda_that_starts_a_pipeline_job_is_mapped_and_judged_by_the_run_others_are_listed() -> None:
    record = read_history(
        lambda_history(),
        described("FAILED"),
        spec=SPEC,
        env_name="dev",
        glue=RecordedGlue({"jr_prepare_9": glue_run("jr_prepare_9", "SUCCEEDED")}),
    )
    attempt = record.tasks[StepKey("prepare-part-tables")].last
    assert (attempt.integration, attempt.job_run_id, attempt.status) == (
        "other",
        "jr_prepare_9",
        AttemptStatus.SUCCEEDED,
    )
    assert record.not_in_pipeline == ("AuditLog",)  # its failure is not the prepare step's
    offline = read_history(lambda_history(), described("FAILED"), spec=SPEC, env_name="dev")
    assert offline.tasks[StepKey("prepare-part-tables")].last.status is AttemptStatus.UNKNOWN  # started only
