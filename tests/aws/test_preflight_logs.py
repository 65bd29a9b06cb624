"""Preflight, CloudWatch logs, SNS notifications and Glue packaging, against moto in server mode."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from flywheel import api
from flywheel.aws.logs import GLUE_ERROR, GLUE_OUTPUT, cloud_logs, state_machine_group
from flywheel.aws.package_cli import build_glue_package
from flywheel.aws.preflight import preflight
from flywheel.aws.sns import SnsObserver, SnsPublisher, build_sns_notifier, subject_line
from flywheel.cli import app
from flywheel.errors import BackendError
from flywheel.events import RunFinished, RunOutcome, RunStarted, StepAttached, StepFailed, StepStarted
from flywheel.spec import AwsSettings, NotifierSpec
from tests.aws.resources import REPO, create_bucket, create_glue_jobs
from tests.support.moto_server import MotoServer

ACCOUNT = "123456789012"


def _dev(tmp_path: Path) -> api.Session:
    return api.open_session("db-refresh", "dev", tmp_path / "home")


def _provision(session: api.Session) -> dict[str, str]:
    """Everything the dev orchestration stack creates, plus source files."""
    create_bucket("omc-flywheel-dev-data")
    boto3.client("s3").put_object(Bucket="omc-flywheel-dev-data", Key="raw/addressable/part-0.csv.gz", Body=b"x")
    boto3.client("glue").create_database(DatabaseInput={"Name": "omc_flywheel_dev"})
    boto3.client("dynamodb").create_table(
        TableName="omc-flywheel-dev-locks",
        KeySchema=[{"AttributeName": "lock_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "lock_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    boto3.client("sns").create_topic(Name="omc-flywheel-dev-db-refresh-alerts")
    boto3.client("stepfunctions").create_state_machine(
        name="omc-flywheel-dev-db-refresh",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/omc-flywheel-dev-sfn",
    )
    return create_glue_jobs(session.spec, "dev")


def _checks(report: Any) -> dict[str, Any]:
    return {c.name: c for c in report.checks}


def test_preflight_passes_when_everything_is_in_place(aws: MotoServer, tmp_path: Path) -> None:
    session = _dev(tmp_path)
    _provision(session)
    report = preflight(session.spec, "dev", session.project.config.environment("dev"))
    assert report.ok, [c for c in report.checks if not c.ok]
    checks = _checks(report)
    assert ACCOUNT in checks["account"].detail and "no account_id" in checks["account"].detail
    assert checks["source of addressable-split-and-part"].detail == "s3://omc-flywheel-dev-data/raw has data"
    assert {
        "catalog database",
        "run lock table",
        "notification topic",
        "no Glue run active",
        "no runner active",
    } <= set(checks)
    assert sum(1 for name in checks if name.startswith("glue job of")) == 7


def test_preflight_lists_every_problem_and_the_cli_exits_3(aws: MotoServer, tmp_path: Path) -> None:
    session = _dev(tmp_path)
    create_bucket("omc-flywheel-dev-data")  # empty: no sources
    report = preflight(session.spec, "dev", session.project.config.environment("dev"))
    failed = {c.name: c for c in report.failed}
    assert {"source of addressable-split-and-part", "catalog database", "run lock table", "notification topic"} <= set(
        failed
    )
    assert "source data missing" in (failed["source of addressable-split-and-part"].fix or "")
    assert "Terraform" in (failed["catalog database"].fix or "")
    assert "state machine" in (failed["no execution running"].fix or "")
    result = CliRunner().invoke(app, ["check", "--env", "dev", "--home", str(tmp_path / "home")])
    assert result.exit_code == 3, result.output
    assert "❌ catalog database" in result.output and "fix:" in result.output


def test_preflight_sees_work_already_running(aws: MotoServer, tmp_path: Path) -> None:
    session = _dev(tmp_path)
    jobs = _provision(session)
    aws.glue_outcome(jobs["prepare-part-tables"], "SUCCEEDED", hold=True)
    run = boto3.client("glue").start_job_run(JobName=jobs["prepare-part-tables"])["JobRunId"]
    from flywheel.aws.lock import AwsRunLock

    env = session.project.config.environment("dev")
    assert env.aws is not None
    with AwsRunLock(env.aws, "db-refresh", "dev", heartbeat_seconds=0).acquire(run_id=12, command="run"):
        report = preflight(session.spec, "dev", env)
    failed = {c.name: c for c in report.failed}
    assert run in failed["no Glue run active"].detail and "batch-stop-job-run" in (
        failed["no Glue run active"].fix or ""
    )
    assert "run 12" in failed["no runner active"].detail


def test_preflight_stops_at_the_wrong_account(aws: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session = _dev(tmp_path)
    monkeypatch.setenv("AWS_PROFILE", "flywheel-prod")
    report = preflight(session.spec, "dev", session.project.config.environment("dev"))
    assert [c.name for c in report.checks] == ["account"] and not report.ok
    assert "flywheel-prod" in report.checks[0].detail


# --------------------------------------------------------------------------- logs


def _journal_glue_run(session: api.Session, external_id: str, execution: str | None = None) -> int:
    with session.journal() as journal:
        run_id = journal.new_run("db-refresh", "dev")
        now = time.time()
        journal.append(
            RunStarted(run_id=run_id, at=now, pipeline="db-refresh", env="dev", external_id=execution),
            StepStarted(run_id=run_id, at=now, step="register-part-tables", context="addressable_ids"),
            StepAttached(
                run_id=run_id, at=now, step="register-part-tables", context="addressable_ids", external_id=external_id
            ),
        )
    return run_id


def _put(group: str, stream: str, *messages: str) -> None:
    logs = boto3.client("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": now + i, "message": m} for i, m in enumerate(messages)],
    )


def test_logs_of_a_glue_step_follow_and_grep(aws: MotoServer, tmp_path: Path) -> None:
    session = _dev(tmp_path)
    run_id = _journal_glue_run(session, "jr_abc")
    _put(GLUE_OUTPUT, "jr_abc", "flywheel: db-refresh dev run 1", "registered 16 partitions")
    cloud = cloud_logs(session, run_id, "3")
    assert cloud is not None
    lines = cloud.poll()
    assert [line.message for line in lines] == ["flywheel: db-refresh dev run 1", "registered 16 partitions"]
    assert lines[0].source == "register-part-tables[addressable_ids] attempt 1 glue"
    assert cloud.poll() == []  # nothing new
    _put(GLUE_ERROR, "jr_abc", "ERROR JobFailed: [schema-mismatch] id is int", "WARN slow")
    assert [line.source.endswith("glue-error") for line in cloud.poll()] == [True, True]
    other_step = cloud_logs(session, run_id, "4")
    assert other_step is not None and other_step.poll() == []

    result = CliRunner().invoke(
        app, ["logs", str(run_id), "--env", "dev", "--grep", "ERROR", "--home", str(session.home)]
    )
    assert result.exit_code == 0, result.output
    assert "[register-part-tables[addressable_ids] attempt 1 glue-error] ERROR JobFailed" in result.output
    assert "registered 16 partitions" not in result.output


def test_logs_of_a_glue_5_run_read_the_driver_and_executor_streams(aws: MotoServer, tmp_path: Path) -> None:
    """Glue 5.0 names a run's streams `<JobRunId>-driver` and `<JobRunId>-<executor>` in both groups
    ("Logging for AWS Glue jobs", glue/latest/dg/monitor-continuous-logging.html): all of them are
    read and labelled, another run whose id shares the prefix is not, and a run with no stream yet is
    said so once."""
    session = _dev(tmp_path)
    run_id = _journal_glue_run(session, "jr_5")
    cloud = cloud_logs(session, run_id, "3")
    assert cloud is not None
    (notice,) = cloud.poll()
    assert "no log stream jr_5-driver" in notice.message and GLUE_OUTPUT in notice.message
    assert notice.source == "register-part-tables[addressable_ids] attempt 1"
    assert cloud.poll() == []  # said once

    _put(GLUE_OUTPUT, "jr_5-driver", "flywheel: db-refresh dev run 1")
    _put(GLUE_ERROR, "jr_5-driver", "INFO SparkContext: Running Spark version 3.5.4")
    _put(GLUE_ERROR, "jr_5-1", "INFO Executor: Starting executor ID 1")
    _put(GLUE_OUTPUT, "jr_55-driver", "another run")
    lines = cloud.poll()
    by_source = {line.source: line.message for line in lines}
    label = "register-part-tables[addressable_ids] attempt 1"
    assert by_source == {
        f"{label} glue driver": "flywheel: db-refresh dev run 1",
        f"{label} glue-error driver": "INFO SparkContext: Running Spark version 3.5.4",
        f"{label} glue-error 1": "INFO Executor: Starting executor ID 1",
    }
    _put(GLUE_ERROR, "jr_5-1", "INFO Executor: finished task 0.0")
    assert [line.message for line in cloud.poll()] == ["INFO Executor: finished task 0.0"]


def test_logs_of_an_imported_execution(aws: MotoServer, tmp_path: Path) -> None:
    session = _dev(tmp_path)
    arn = f"arn:aws:states:us-east-1:{ACCOUNT}:execution:omc-flywheel-dev-db-refresh:run-7"
    run_id = _journal_glue_run(session, "jr_def", execution=arn)
    env = session.project.config.environment("dev")
    assert env.aws is not None
    group = state_machine_group(session.spec, "dev", env)
    assert group == "/aws/vendedlogs/states/omc-flywheel-dev-db-refresh"
    _put(group, "states/run-7", json.dumps({"execution_arn": arn, "type": "TaskFailed"}), '{"execution_arn": "other"}')
    cloud = cloud_logs(session, run_id)
    assert cloud is not None
    lines = [line for line in cloud.poll() if line.source == "execution"]
    assert len(lines) == 1 and "TaskFailed" in lines[0].message
    local = api.open_session("db-refresh", "local", tmp_path / "home")
    assert cloud_logs(local, run_id) is None


# --------------------------------------------------------------------------- SNS


def _queue_on_topic(name: str) -> tuple[str, str]:
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name=name)["TopicArn"]
    queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return topic, queue


def _received(queue: str) -> list[dict[str, Any]]:
    messages = boto3.client("sqs").receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    return [json.loads(m["Body"]) for m in messages.get("Messages", ())]


def test_sns_observer_publishes_failures_and_recoveries(aws: MotoServer, tmp_path: Path) -> None:
    topic, queue = _queue_on_topic("omc-flywheel-dev-db-refresh-alerts")
    session = _dev(tmp_path)
    observer = SnsObserver.for_environment(session.spec, "dev", session.project.config.environment("dev"))
    assert observer is not None
    now = time.time()
    step = "prepare-part-tables"
    for event in (
        RunStarted(run_id=8, at=now, pipeline="db-refresh", env="dev", parent_run=7, root_run=5),
        StepAttached(run_id=8, at=now, step=step, external_id="jr_42"),
        StepFailed(run_id=8, at=now, step=step, error_type="Timeout", error_message="x", will_retry=True),
        StepFailed(
            run_id=8, at=now, step=step, attempt=2, error_type="partition-mismatch", error_message="no id_part=3"
        ),
        RunFinished(run_id=9, at=now, outcome=RunOutcome.SUCCEEDED),  # not a resume we saw start: quiet
    ):
        observer(event)
    observer(RunStarted(run_id=9, at=now, pipeline="db-refresh", env="dev", parent_run=8, root_run=5))
    observer(RunFinished(run_id=9, at=now, outcome=RunOutcome.SUCCEEDED))
    received = _received(queue) + _received(queue)
    assert [m["Subject"] for m in received] == [
        "[flywheel] db-refresh dev: prepare-part-tables failed (run 8)",
        "[flywheel] db-refresh dev: recovered (run 9)",
    ]
    failure = received[0]
    assert "partition-mismatch: no id_part=3" in failure["Message"] and "jr_42" in failure["Message"]
    assert "flywheel resume 8 --env dev" in failure["Message"]
    assert failure["MessageAttributes"]["kind"]["Value"] == "failed"
    assert topic.endswith(":omc-flywheel-dev-db-refresh-alerts")


def test_sns_failures_raise_for_the_runner_to_journal_and_secrets_are_masked(aws: MotoServer) -> None:
    aws_settings = AwsSettings(profile="flywheel-dev", region="us-east-1", sns_topic="missing-topic")
    publisher = SnsPublisher("missing-topic", aws_settings, "dev", redact=lambda t: t.replace("missing", "***"))
    with pytest.raises(BackendError) as failed:
        publisher.publish("title", "body", {})
    assert "***-topic" in failed.value.message and "missing" not in failed.value.message
    assert subject_line("❌ step 3 failed\nnext line " + "x" * 200).startswith("step 3 failed next line")
    assert len(subject_line("y" * 300)) < 100


def test_sns_channel_of_the_notifications_framework(aws: MotoServer, tmp_path: Path) -> None:
    from flywheel.notify import Message, MessageKind, NotifyError, Redactor

    _, queue = _queue_on_topic("omc-flywheel-dev-db-refresh-alerts")
    env = _dev(tmp_path).project.config.environment("dev")
    channel = build_sns_notifier(NotifierSpec(kind="sns"), env, Redactor(["s3cr3t-value"]))
    message = Message(
        kind=MessageKind.FAILED,
        title="❌ db-refresh dev: step 4 failed",
        lines=("token s3cr3t-value leaked?",),
        pipeline="db-refresh",
        env="dev",
        run_id=3,
        step="prepare-part-tables",
    )
    channel.send(message)
    (got,) = _received(queue)
    assert got["Subject"] == "db-refresh dev: step 4 failed" and "s3cr3t-value" not in got["Message"]
    broken = build_sns_notifier(
        NotifierSpec(kind="sns", topic_arn="arn:aws:sns:us-east-1:123456789012:nope"), env, Redactor()
    )
    with pytest.raises(NotifyError):
        broken.send(message)


# --------------------------------------------------------------------------- packaging


def test_glue_package_runs_the_entry_with_the_standard_library_only(tmp_path: Path) -> None:
    """What Glue gets: a wheel without dependencies whose entry runs a job and writes its result."""
    built = build_glue_package(tmp_path / "dist")
    with zipfile.ZipFile(built.wheel) as wheel:
        names = set(wheel.namelist())
        record = wheel.read(next(n for n in names if n.endswith(".dist-info/RECORD"))).decode()
    assert "flywheel/aws/glue_entry.py" in names and "flywheel/pipelines/db_refresh/pipeline.yaml" in names
    assert not any("__pycache__" in n for n in names) and "flywheel/aws/glue_entry.py,sha256=" in record
    assert (
        json.loads(built.manifest.read_text())["default_arguments"]["--python-modules-installer-option"] == "--no-deps"
    )
    assert build_glue_package(tmp_path / "again").wheel.read_bytes() == built.wheel.read_bytes()  # reproducible

    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "tiny_job.py").write_text(
        "from flywheel.invocation import JobResult\n"
        "def run(invocation):\n"
        "    return JobResult(outputs=({'uri': invocation.params['out'], 'key': invocation.key},))\n"
    )
    result = tmp_path / "result.json"
    invocation = {
        "pipeline": "db-refresh", "step": "s", "context": "c", "run_id": 4, "attempt": 1, "env": "dev",
        "job": "tiny_job:run", "params": {"out": "s3://b/out"}, "result_path": str(result),
    }  # fmt: skip
    script = (
        f"import sys; sys.path[:0] = [{str(built.wheel)!r}, {str(jobs)!r}]; exec(open({str(built.entry)!r}).read())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    ok = subprocess.run(
        [sys.executable, "-S", "-c", script, "--JOB_NAME", "j", "--flywheel_invocation", json.dumps(invocation)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    body = json.loads(result.read_text())
    assert body["ok"] and body["outputs"] == [{"uri": "s3://b/out", "key": "s[c]"}]

    failing = {**invocation, "job": "tiny_job:nothing"}
    failed = subprocess.run(
        [sys.executable, "-S", "-c", script, "--flywheel_invocation=" + json.dumps(failing)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert failed.returncode != 0 and "JobFailed: [JobNotFound]" in failed.stderr
    assert str(REPO) not in ok.stdout


def test_glue_entry_builds_the_invocation_from_fields(tmp_path: Path) -> None:
    """Step Functions tasks pass the invocation's fields (there is no journal run id there)."""
    from flywheel.aws.glue_entry import invocation_from_arguments, parse_argv

    argv = [
        "script.py",
        "--JOB_NAME", "omc-flywheel-dev-prepare-part-tables",
        "--flywheel_pipeline", "db-refresh",
        "--flywheel_env", "dev",
        "--flywheel_step", "register-part-tables",
        "--flywheel_context", "addressable_ids",
        "--flywheel_job", "m:run",
        "--flywheel_params", json.dumps({"table": "addressable_ids"}),
        "--flywheel_result_path=s3://b/results/x.json",
        "--enable-metrics", "true",
    ]  # fmt: skip
    args = parse_argv(argv)
    assert "enable-metrics" not in args and args["JOB_NAME"].endswith("prepare-part-tables")
    inv = invocation_from_arguments(args)
    assert (inv.key, inv.run_id, inv.attempt, inv.result_path) == (
        "register-part-tables[addressable_ids]",
        0,
        1,
        "s3://b/results/x.json",
    )
    assert inv.params == {"table": "addressable_ids"}
    with pytest.raises(ValueError, match="--flywheel_job"):
        invocation_from_arguments({"flywheel_pipeline": "p", "flywheel_env": "e", "flywheel_step": "s"})
