"""db-refresh deployed in moto as the dev Terraform stack would deploy it, and executions of it.

The state machine runs the exported definition itself; the moto launcher decides how chosen Glue runs
end. Nothing of flywheel is patched: flywheel reaches moto through `AWS_ENDPOINT_URL` like any AWS.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from flywheel import api
from flywheel.aws.asl import export_asl, glue_job_name
from flywheel.spec import StepKey
from tests.aws.resources import create_glue_jobs
from tests.support.moto_server import MotoServer

ENV = "dev"
MACHINE = "omc-flywheel-dev-db-refresh"
TOPIC = "omc-flywheel-dev-db-refresh-alerts"
ROLE = "arn:aws:iam::123456789012:role/omc-flywheel-dev-sfn"


@dataclass
class World:
    server: MotoServer
    session: api.Session
    machine_arn: str
    queue_url: str

    @functools.cached_property
    def sfn(self) -> Any:
        return boto3.client("stepfunctions")

    @functools.cached_property
    def glue(self) -> Any:
        return boto3.client("glue")

    @functools.cached_property
    def sqs(self) -> Any:
        return boto3.client("sqs")

    def job(self, step: str) -> str:
        spec = self.session.spec
        return glue_job_name(spec, spec.step(step), ENV)

    def fail(self, key: str, state: str = "FAILED", error: str | None = None, **rule: Any) -> None:
        """The next Glue run of `key` (`step` or `step[context]`) ends in `state`."""
        parsed = StepKey.parse(key)
        self.server.glue_outcome(
            self.job(parsed.step), state, context=parsed.context, error=error or f"injected {state} in {key}", **rule
        )

    def hold(self, key: str, state: str = "SUCCEEDED") -> None:
        """The next Glue run of `key` stays RUNNING until released (then ends in `state`)."""
        self.fail(key, state, hold=True)

    def release(self, step: str) -> list[str]:
        return self.server.release_glue(job_name=self.job(step))

    def start(self, name: str, body: dict[str, Any] | None = None) -> str:
        kwargs: dict[str, Any] = {"input": json.dumps(body)} if body is not None else {}
        return str(self.sfn.start_execution(stateMachineArn=self.machine_arn, name=name, **kwargs)["executionArn"])

    def wait(self, arn: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            status = str(self.sfn.describe_execution(executionArn=arn)["status"])
            if status != "RUNNING" or time.monotonic() > deadline:
                return status
            time.sleep(0.05)

    def execute(self, name: str, body: dict[str, Any] | None = None) -> str:
        arn = self.start(name, body)
        self.wait(arn)
        return arn

    def wait_until_glue_running(self, step: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.server.glue_runs():
                if run["JobName"] == self.job(step) and run["JobRunState"] == "RUNNING":
                    return str(run["Id"])
            time.sleep(0.05)
        raise AssertionError(f"no running Glue run of {step}")

    def scheduled_keys(self, arn: str) -> list[str]:
        """The `step[context]` of every Glue task an execution scheduled, in order."""
        events = self.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        out = []
        for event in events:
            details = event.get("taskScheduledEventDetails") or {}
            if details.get("resourceType") == "glue":
                out.append(json.loads(details["parameters"])["Arguments"]["--flywheel_key"])
        return out

    def alerts(self) -> list[str]:
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return [str(m["Body"]) for m in messages]

    def redeploy(self, definition: dict[str, Any]) -> None:
        self.sfn.update_state_machine(stateMachineArn=self.machine_arn, definition=json.dumps(definition))


def deploy(server: MotoServer, home: Path, *, timeout_seconds: int | None = None) -> World:
    """What the dev Terraform stack creates: Glue jobs, bucket, lock table, SNS topic (with an SQS
    subscriber to read alerts) and the state machine running the exported definition."""
    session = api.open_session("db-refresh", ENV, home)
    spec = session.spec
    create_glue_jobs(spec, ENV, max_concurrent=4)
    boto3.client("s3").create_bucket(Bucket="omc-flywheel-dev-data")
    boto3.client("dynamodb").create_table(
        TableName="omc-flywheel-dev-locks",
        KeySchema=[{"AttributeName": "lock_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "lock_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name=TOPIC)["TopicArn"]
    queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    env = session.project.config.environment(ENV)
    definition = export_asl(spec, ENV, env, timeout_seconds=timeout_seconds)
    machine = boto3.client("stepfunctions").create_state_machine(
        name=MACHINE, definition=json.dumps(definition), roleArn=ROLE, type="STANDARD"
    )["stateMachineArn"]
    return World(server=server, session=session, machine_arn=str(machine), queue_url=str(queue))
