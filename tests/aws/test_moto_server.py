"""The launcher's promises: the `.sync` Glue integration works inside Step Functions (also in a
`Parallel`, with `Catch`), and a test decides how a chosen Glue job run ends."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.support.moto_server import MotoServer

pytestmark = pytest.mark.e2e


def _task(job: str, catch: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Type": "Task",
        "Resource": "arn:aws:states:::glue:startJobRun.sync",
        "Parameters": {"JobName": job, "Arguments": {"--flywheel_context": job}},
        "ResultPath": None,
        "End": True,
    }
    if catch:
        body["Catch"] = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": catch}]
    return body


def _wait(sfn: Any, arn: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        described: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING" or time.monotonic() > deadline:
            return described
        time.sleep(0.05)


def test_glue_sync_in_parallel_with_catch_and_chosen_outcomes(aws: MotoServer) -> None:
    glue = boto3.client("glue")
    sfn = boto3.client("stepfunctions")
    for job in ("a", "b"):
        glue.create_job(
            Name=job,
            Role="r",
            Command={"Name": "glueetl", "ScriptLocation": "s3://x/y.py"},
            ExecutionProperty={"MaxConcurrentRuns": 4},
        )
    branches = [
        {"StartAt": job, "States": {job: _task(job, f"caught_{job}"), f"caught_{job}": {"Type": "Fail", "Error": job}}}
        for job in ("a", "b")
    ]
    definition = {"StartAt": "P", "States": {"P": {"Type": "Parallel", "Branches": branches, "End": True}}}
    machine = sfn.create_state_machine(
        name="m", definition=json.dumps(definition), roleArn="arn:aws:iam::123456789012:role/r"
    )["stateMachineArn"]

    ok = _wait(sfn, sfn.start_execution(stateMachineArn=machine, name="ok")["executionArn"])
    assert ok["status"] == "SUCCEEDED"

    aws.glue_outcome("b", "TIMEOUT", error="ran out of time")
    failed = _wait(sfn, sfn.start_execution(stateMachineArn=machine, name="bad")["executionArn"])
    assert failed["status"] == "FAILED"
    assert failed["error"] == "b"  # the branch's Catch ran
    runs = [r for r in aws.glue_runs() if r["JobName"] == "b"]
    assert [r["JobRunState"] for r in runs] == ["SUCCEEDED", "TIMEOUT"]
    run = glue.get_job_run(JobName="b", RunId=runs[1]["Id"])["JobRun"]
    assert run["ErrorMessage"] == "ran out of time"


def test_hold_release_stop_and_abort(aws: MotoServer) -> None:
    glue = boto3.client("glue")
    sfn = boto3.client("stepfunctions")
    glue.create_job(Name="a", Role="r", Command={"Name": "glueetl", "ScriptLocation": "s3://x/y.py"})
    aws.glue_outcome("a", "FAILED", hold=True, error="late failure")
    run_id = glue.start_job_run(JobName="a")["JobRunId"]
    assert glue.get_job_run(JobName="a", RunId=run_id)["JobRun"]["JobRunState"] == "RUNNING"
    assert aws.release_glue(job_name="a") == [run_id]
    assert glue.get_job_run(JobName="a", RunId=run_id)["JobRun"]["JobRunState"] == "FAILED"

    aws.glue_outcome("a", hold=True)
    held = glue.start_job_run(JobName="a")["JobRunId"]
    stopped = glue.batch_stop_job_run(JobName="a", JobRunIds=[held])
    assert stopped["SuccessfulSubmissions"][0]["JobRunId"] == held
    assert glue.get_job_run(JobName="a", RunId=held)["JobRun"]["JobRunState"] == "STOPPED"

    definition = {"StartAt": "a", "States": {"a": _task("a")}}
    machine = sfn.create_state_machine(
        name="m", definition=json.dumps(definition), roleArn="arn:aws:iam::123456789012:role/r"
    )["stateMachineArn"]
    aws.glue_outcome("a", hold=True)
    arn = sfn.start_execution(stateMachineArn=machine, name="x")["executionArn"]
    time.sleep(0.3)
    sfn.stop_execution(executionArn=arn)
    assert _wait(sfn, arn)["status"] == "ABORTED"


def test_calls_are_recorded_as_iam_actions(aws: MotoServer) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="bkt")
    s3.put_object(Bucket="bkt", Key="k/x", Body=b"1")
    s3.list_objects_v2(Bucket="bkt", Prefix="k/")
    s3.head_object(Bucket="bkt", Key="k/x")
    boto3.client("sns").create_topic(Name="t")
    boto3.client("glue").get_jobs()
    assert aws.calls("testing") == [
        "s3:CreateBucket",
        "s3:PutObject",
        "s3:ListBucket",
        "s3:GetObject",
        "sns:CreateTopic",
        "glue:GetJobs",
    ]


def test_s3_hold_stops_a_request_until_released_then_serves_or_fails_it(aws: MotoServer) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="held")
    outcomes: list[str] = []

    def put(key: str) -> None:
        try:
            s3.put_object(Bucket="held", Key=key, Body=b"x")
            outcomes.append("served")
        except ClientError as exc:
            outcomes.append(exc.response["Error"]["Code"])

    aws.s3_hold(r"^held/a/", serve=True)
    writer = threading.Thread(target=put, args=("a/one",))
    writer.start()
    assert aws.wait_s3_held(1) == ["held/a/one"]
    assert "Contents" not in s3.list_objects_v2(Bucket="held"), "not stored while held"
    s3.put_object(Bucket="held", Key="b/other", Body=b"y")  # other requests go on meanwhile
    assert aws.s3_release() == ["held/a/one"]
    writer.join(30)
    assert outcomes == ["served"] and aws.s3_held() == []
    assert s3.get_object(Bucket="held", Key="a/one")["Body"].read() == b"x"

    aws.s3_hold(r"^held/a/", serve=False)
    writer = threading.Thread(target=put, args=("a/two",))
    writer.start()
    aws.wait_s3_held(1)
    aws.s3_release(1)
    writer.join(30)
    assert outcomes == ["served", "AccessDenied"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="held")["Contents"]] == ["a/one", "b/other"]
