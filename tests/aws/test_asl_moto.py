"""The exported definition executed by moto's Step Functions interpreter: what its retries, timeouts,
alerts and parallel branches do when Glue misbehaves.

Behaviour relied on, from the AWS documentation:
- "Handling errors in Step Functions workflows"
  (https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html): a retrier
  matches by `ErrorEquals`, the first matching retrier is used, `States.TaskFailed` matches every task
  error but `States.Timeout`; a `Catch` result holds `Error` and, when there is one, `Cause`.
- "Run AWS Glue jobs with Step Functions" (https://docs.aws.amazon.com/step-functions/latest/dg/connect-glue.html)
  and "AWS Glue Exceptions" (https://docs.aws.amazon.com/glue/latest/dg/aws-glue-api-exceptions.html):
  a refused `StartJobRun` fails the task with `Glue.<Exception>`, e.g. `Glue.ConcurrentRunsExceededException`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from flywheel.aws.asl import BRANCH_FAILED, CONCURRENCY_ERROR, export_asl
from flywheel.spec import load_project
from tests.aws.resources import glue_step, tiny_aws_project
from tests.support.moto_server import MotoServer

pytestmark = pytest.mark.e2e

ROLE = "arn:aws:iam::123456789012:role/tiny-dev-sfn"


def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def _definition(tmp_path: Path, steps: list[dict[str, Any]], aws: dict[str, Any] | None = None) -> dict[str, Any]:
    project = load_project(str(tiny_aws_project(tmp_path / "p", steps=steps, aws=aws)))
    return export_asl(project.spec, "dev", project.config.environment("dev"))


def _glue_tasks(states: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, state in states.items():
        if state.get("Resource", "").startswith("arn:aws:states:::glue:"):
            out[name] = state
        for branch in state.get("Branches", ()):
            out.update(_glue_tasks(branch["States"]))
    return out


def _create_job(name: str, max_concurrent: int = 4) -> None:
    boto3.client("glue").create_job(
        Name=name,
        Role="arn:aws:iam::123456789012:role/tiny-dev-glue",
        Command={"Name": "glueetl", "ScriptLocation": "s3://tiny-dev-data/_flywheel/glue/entry.py"},
        ExecutionProperty={"MaxConcurrentRuns": max_concurrent},
        GlueVersion="5.0",
    )


def _start(definition: dict[str, Any], name: str = "tiny-dev") -> tuple[Any, str]:
    sfn = boto3.client("stepfunctions")
    machine = sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=ROLE)["stateMachineArn"]
    return sfn, str(sfn.start_execution(stateMachineArn=machine, name="nightly")["executionArn"])


def _finish(sfn: Any, arn: str) -> dict[str, Any]:
    _until(lambda: sfn.describe_execution(executionArn=arn)["status"] != "RUNNING", timeout=60)
    return dict(sfn.describe_execution(executionArn=arn))


def _history(sfn: Any, arn: str) -> list[dict[str, Any]]:
    return list(sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"])


def test_a_job_at_its_concurrency_limit_is_retried_until_the_other_run_ends(aws: MotoServer, tmp_path: Path) -> None:
    """The job allows one run; another (started by hand) holds it. The task fails with Glue's
    ConcurrentRunsExceededException, is retried, and starts once the other run has ended."""
    definition = _definition(tmp_path, [glue_step("a", 1)])
    task = _glue_tasks(definition["States"])["Step1_A"]
    rule = next(r for r in task["Retry"] if r["ErrorEquals"] == [CONCURRENCY_ERROR])
    assert rule["MaxAttempts"] * rule["IntervalSeconds"] >= 300  # waits minutes, not seconds
    rule["IntervalSeconds"], rule["BackoffRate"] = 1, 1.0  # the same rule, at test speed

    _create_job("tiny-dev-a", max_concurrent=1)
    aws.glue_outcome("tiny-dev-a", "SUCCEEDED", hold=True)
    other = boto3.client("glue").start_job_run(JobName="tiny-dev-a")["JobRunId"]
    sfn, arn = _start(definition)

    def refused() -> bool:
        return any(
            (e.get("taskFailedEventDetails") or {}).get("error") == CONCURRENCY_ERROR for e in _history(sfn, arn)
        )

    _until(refused)
    assert aws.release_glue(run_id=other) == [other]
    assert _finish(sfn, arn)["status"] == "SUCCEEDED"
    runs = boto3.client("glue").get_job_runs(JobName="tiny-dev-a")["JobRuns"]
    assert len(runs) == 2 and {r["JobRunState"] for r in runs} == {"SUCCEEDED"}


def test_the_concurrency_rule_comes_before_the_step_retry_policy(tmp_path: Path) -> None:
    """`States.TaskFailed` also matches Glue's errors, and the first matching retrier wins."""
    definition = _definition(tmp_path, [glue_step("a", 1, retry={"attempts": 3, "backoff_seconds": 5})])
    matched = [r["ErrorEquals"] for r in _glue_tasks(definition["States"])["Step1_A"]["Retry"]]
    assert matched.index([CONCURRENCY_ERROR]) < matched.index(["States.TaskFailed"])


def test_a_task_waits_longer_than_its_glue_run_may_last(tmp_path: Path) -> None:
    """Glue ends a run at `Timeout` minutes and reports TIMEOUT; the task must still be waiting then
    ("Run AWS Glue jobs with Step Functions": `.sync` waits for the run; `TimeoutSeconds` of a Task state
    fails it with `States.Timeout` without stopping the run)."""
    definition = _definition(tmp_path, [glue_step("a", 1, timeout=3000), glue_step("b", 2, ("a",), timeout=59)])
    tasks = _glue_tasks(definition["States"])
    for name, seconds in (("Step1_A", 3000), ("Step2_B", 59)):
        glue_minutes = tasks[name]["Parameters"]["Timeout"]
        assert glue_minutes * 60 >= seconds  # Glue rounds to whole minutes: never shorter than asked
        assert tasks[name]["TimeoutSeconds"] >= glue_minutes * 60 + 300, name
    assert definition["TimeoutSeconds"] >= tasks["Step1_A"]["TimeoutSeconds"] + tasks["Step2_B"]["TimeoutSeconds"]


def _alert_queue(topic: str) -> str:
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic_arn = sns.create_topic(Name=topic)["TopicArn"]
    queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    return str(queue)


def _alerts(queue: str) -> list[str]:
    messages = boto3.client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    return [str(m["Body"]) for m in messages]


@pytest.mark.parametrize(
    "caught",
    [{"Error": "States.Timeout"}, {"Error": "Glue.EntityNotFoundException", "Cause": "no job tiny-dev-a"}],
    ids=["without-cause", "with-cause"],
)
def test_the_alert_is_sent_whether_or_not_the_error_has_a_cause(
    aws: MotoServer, tmp_path: Path, caught: dict[str, str]
) -> None:
    """The exported alert states of a Parallel branch (the tasks that still catch: a task of its own has no
    Catch and is alerted by the EventBridge rule), entered as the Catch enters them (`ResultPath: $.error`),
    with an error that has no `Cause` (States.Timeout has none) and with one."""
    definition = _definition(tmp_path, [glue_step("a", 1, contexts={"x": {}})], aws={"sns_topic": "tiny-alerts"})
    queue = _alert_queue("tiny-alerts")
    branch = definition["States"]["Step1_A"]["Branches"][0]["States"]
    catch = branch["Step1_A_x"]["Catch"][0]
    states = {name: state for name, state in branch.items() if name in ("Step1_A_x_Notify", "Step1_A_x_Failed")}
    machine = {
        "StartAt": "CaughtError",
        "States": {
            "CaughtError": {"Type": "Pass", "Result": caught, "ResultPath": catch["ResultPath"], "Next": catch["Next"]},
            **states,
        },
    }
    sfn, arn = _start(machine)
    described = _finish(sfn, arn)
    assert described["status"] == "SUCCEEDED", described  # not States.Runtime: the branch ends, marked failed
    assert BRANCH_FAILED in described["output"], described
    alerts = _alerts(queue)
    assert len(alerts) == 1
    assert caught["Error"] in alerts[0] and arn in alerts[0]
    assert caught.get("Cause", "Error") in alerts[0]


def _parallel_pair(tmp_path: Path) -> dict[str, Any]:
    steps = [
        glue_step("a", 1, cloud={"glue_job": "tiny-{env}-a", "state": "Both"}),
        glue_step("b", 2, cloud={"glue_job": "tiny-{env}-b", "state": "Both"}),
        glue_step("c", 3, ("a", "b")),
    ]
    for job in ("tiny-dev-a", "tiny-dev-b", "tiny-dev-c"):
        _create_job(job)
    return _definition(tmp_path, steps)


def test_a_failed_branch_lets_its_sibling_finish_then_fails_after_the_parallel(aws: MotoServer, tmp_path: Path) -> None:
    """ "Parallel workflow state" (https://docs.aws.amazon.com/step-functions/latest/dg/state-parallel.html):
    when a branch fails, the Parallel state fails and Step Functions stops the other branches (a `.sync`
    Glue task stops its run). Each branch catches its own failure, so the sibling's run finishes."""
    definition = _parallel_pair(tmp_path)
    aws.glue_outcome("tiny-dev-a", "FAILED", error="[SourceMissing] no files")
    aws.glue_outcome("tiny-dev-b", "SUCCEEDED", hold=True)
    sfn, arn = _start(definition)

    def a_failed() -> bool:
        return any(e["type"] == "TaskFailed" for e in _history(sfn, arn))

    _until(a_failed)
    assert sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"  # b goes on
    assert aws.release_glue(job_name="tiny-dev-b")
    described = _finish(sfn, arn)
    assert described["status"] == "FAILED" and described["error"] == "flywheel.StepFailed"
    glue = boto3.client("glue")
    assert [r["JobRunState"] for r in glue.get_job_runs(JobName="tiny-dev-b")["JobRuns"]] == ["SUCCEEDED"]
    assert glue.get_job_runs(JobName="tiny-dev-c")["JobRuns"] == []  # nothing after the failed group


def test_when_every_branch_succeeds_the_pipeline_goes_on(aws: MotoServer, tmp_path: Path) -> None:
    sfn, arn = _start(_parallel_pair(tmp_path))
    assert _finish(sfn, arn)["status"] == "SUCCEEDED"
    assert len(boto3.client("glue").get_job_runs(JobName="tiny-dev-c")["JobRuns"]) == 1
