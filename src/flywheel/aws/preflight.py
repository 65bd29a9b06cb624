"""`flywheel check --env ENV`: find out in seconds what would otherwise fail an hour into a run.

The runbook's common causes, checked before anything starts: the wrong account or profile, missing
source data, a missing catalog database, a Glue job that does not exist or cannot be read, permissions
the operator's role lacks (each AWS service flywheel uses is *tried* with a read: the answer to
"may I?" that matters is the service's own), and a Step Functions execution, Glue run or flywheel
runner of this pipeline already at work.

Sources: for steps without dependencies, every `s3://` parameter named `source`, `sources`,
`*_source`, `*_sources` or `raw_root` must have at least one object under it.

Returns a `PreflightReport`; the CLI prints it as a checklist and exits 3 when something failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flywheel.errors import FlywheelError
from flywheel.params import expand, resolve_params
from flywheel.spec import AwsSettings, EnvironmentSpec, PipelineSpec

ACTIVE_GLUE_STATES = ("STARTING", "RUNNING", "WAITING", "STOPPING")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix, "skipped": self.skipped}


@dataclass(frozen=True)
class PreflightReport:
    pipeline: str
    env: str
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "env": self.env, "ok": self.ok, "checks": [c.to_dict() for c in self.checks]}


def state_machine_arn(aws: AwsSettings, account: str) -> str | None:
    if not aws.state_machine:
        return None
    if aws.state_machine.startswith("arn:"):
        return aws.state_machine
    return f"arn:aws:states:{aws.region}:{account}:stateMachine:{aws.state_machine}"


def topic_arn(aws: AwsSettings, account: str) -> str | None:
    if not aws.sns_topic:
        return None
    if aws.sns_topic.startswith("arn:"):
        return aws.sns_topic
    return f"arn:aws:sns:{aws.region}:{account}:{aws.sns_topic}"


SOURCE_NAMES = ("source", "sources", "raw_root")


def source_uris(spec: PipelineSpec, env_name: str, env: EnvironmentSpec, home: str) -> list[tuple[str, str]]:
    """(step id, s3 URI) of every declared source of the steps that depend on nothing."""
    out: list[tuple[str, str]] = []
    for step in spec.steps:
        if step.depends_on:
            continue
        for key in step.keys:
            params = resolve_params(spec, key, env_name, env, home)
            for name, value in params.items():
                if not (name in SOURCE_NAMES or name.endswith(("_source", "_sources"))):
                    continue
                for uri in value if isinstance(value, list | tuple) else [value]:
                    if isinstance(uri, str) and uri.startswith("s3://") and (step.id, uri) not in out:
                        out.append((step.id, uri))
    return out


def _denied(code: str) -> bool:
    from flywheel.aws.session import ACCESS_DENIED

    return code in ACCESS_DENIED


class _Checker:
    def __init__(self, aws: AwsSettings, session: Any) -> None:
        from flywheel.aws.session import make_client

        self.aws = aws
        self._clients: dict[str, Any] = {}
        self._make: Callable[[str], Any] = lambda service: make_client(aws, service, session=session, max_attempts=3)
        self.checks: list[Check] = []

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._make(service)
        return self._clients[service]

    def add(self, name: str, ok: bool, detail: str, fix: str | None = None) -> None:
        self.checks.append(Check(name, ok, detail, fix))

    def attempt(self, name: str, action: str, call: Callable[[], str], *, fix: str, permission: str) -> bool:
        """Run one try-read; AccessDenied is a missing permission, other errors are failures."""
        from botocore.exceptions import BotoCoreError, ClientError

        from flywheel.aws.session import error_code, error_message

        try:
            detail = call()
        except ClientError as exc:
            code = error_code(exc)
            if _denied(code):
                self.add(name, False, f"{action}: access denied", f"grant the role {permission}")
            else:
                self.add(name, False, f"{action}: {code}: {error_message(exc)}", fix)
            return False
        except BotoCoreError as exc:
            self.add(name, False, f"{action}: {exc}", "check the network and the region")
            return False
        except FlywheelError as exc:
            self.add(name, False, exc.message, exc.fix or fix)
            return False
        self.add(name, True, detail)
        return True


def preflight(
    spec: PipelineSpec, env_name: str, env: EnvironmentSpec, *, home: str = "", session: Any = None
) -> PreflightReport:
    """Every check that applies to the environment; stops after the account guard when it fails."""
    from flywheel.aws.session import aws_settings, boto_session, check_account
    from flywheel.executors.glue import GlueExecutor

    aws = aws_settings(env, env_name)
    try:
        session = session or boto_session(aws)
        identity = check_account(aws, env_name, session=session)
    except FlywheelError as exc:
        return PreflightReport(spec.pipeline, env_name, (Check("account", False, exc.message, exc.fix),))
    checker = _Checker(aws, session)
    account = aws.account_id or identity.account
    checker.add(
        "account",
        True,
        f"account {identity.account} as {identity.arn}"
        + (f" (profile {aws.profile})" if aws.profile else "")
        + ("" if aws.account_id else "; project.yaml names no account_id: add it to guard against the wrong one"),
    )
    _check_sources(checker, spec, env_name, env, home)
    _check_database(checker, spec, env_name, env, home)
    try:
        jobs = GlueExecutor._job_names(spec, env_name)
    except FlywheelError as exc:
        checker.add("glue jobs", False, exc.message + ": " + "; ".join(exc.details), exc.fix)
        jobs = {}
    _check_jobs(checker, jobs)
    _check_permissions(checker, aws, account)
    _check_nothing_running(checker, spec, env_name, aws, account, jobs)
    return PreflightReport(spec.pipeline, env_name, tuple(checker.checks))


def _check_sources(checker: _Checker, spec: PipelineSpec, env_name: str, env: EnvironmentSpec, home: str) -> None:
    from flywheel.aws.s3 import parse_s3_uri

    sources = source_uris(spec, env_name, env, home)
    if not sources:
        checker.add("sources", True, "no s3:// sources declared by the first steps", None)
        return
    s3 = checker.client("s3")
    for step_id, uri in sources:
        target = parse_s3_uri(uri)
        prefix = target.key.rstrip("/") + "/" if target.key else ""

        def look(bucket: str = target.bucket, prefix: str = prefix, uri: str = uri) -> str:
            page = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
            if not page.get("KeyCount"):
                raise _Empty(uri)
            return f"{uri} has data"

        try:
            checker.attempt(
                f"source of {step_id}",
                f"list {uri}",
                look,
                fix=f"check the bucket of {uri} exists in this account",
                permission=f"s3:ListBucket on {target.bucket}",
            )
        except _Empty:
            checker.add(
                f"source of {step_id}",
                False,
                f"nothing under {uri}",
                "deliver the source files first (the runbook: 'source data missing')",
            )


class _Empty(Exception):
    pass


def _check_database(checker: _Checker, spec: PipelineSpec, env_name: str, env: EnvironmentSpec, home: str) -> None:
    aws = checker.aws
    database = aws.glue_database or str(expand(env.settings.get("database", ""), {"env": env_name}))
    if not database:
        checker.add("catalog database", False, "no glue_database configured", "set aws.glue_database in project.yaml")
        return
    glue = checker.client("glue")
    checker.attempt(
        "catalog database",
        f"get Glue database {database}",
        lambda: (glue.get_database(Name=database), f"Glue database {database} exists")[1],
        fix="apply the orchestration Terraform stack, or fix aws.glue_database",
        permission=f"glue:GetDatabase on {database}",
    )


def _check_jobs(checker: _Checker, jobs: Mapping[str, str]) -> None:
    glue = checker.client("glue")
    for step_id, job in jobs.items():
        checker.attempt(
            f"glue job of {step_id}",
            f"get Glue job {job}",
            lambda job=job: (glue.get_job(JobName=job), f"{job} exists")[1],  # type: ignore[misc]
            fix="apply the orchestration Terraform stack (it defines every Glue job)",
            permission=f"glue:GetJob, glue:StartJobRun, glue:GetJobRun(s) and glue:BatchStopJobRun on {job}",
        )


def _check_permissions(checker: _Checker, aws: AwsSettings, account: str) -> None:
    if aws.lock_table:
        table = aws.lock_table
        ddb = checker.client("dynamodb")
        checker.attempt(
            "run lock table",
            f"describe DynamoDB table {table}",
            lambda: (ddb.describe_table(TableName=table), f"{table} is there")[1],
            fix="apply the orchestration Terraform stack (it creates the lock table)",
            permission=f"dynamodb:DescribeTable/GetItem/PutItem/UpdateItem/DeleteItem on {table}",
        )
    topic = topic_arn(aws, account)
    if topic:
        sns = checker.client("sns")
        checker.attempt(
            "notification topic",
            f"get SNS topic {topic}",
            lambda: (sns.get_topic_attributes(TopicArn=topic), f"{topic} is there")[1],
            fix="apply the orchestration Terraform stack, or fix aws.sns_topic",
            permission=f"sns:GetTopicAttributes and sns:Publish on {topic}",
        )
    logs = checker.client("logs")
    checker.attempt(
        "logs",
        "read CloudWatch log groups /aws-glue/jobs",
        lambda: (logs.describe_log_groups(logGroupNamePrefix="/aws-glue/jobs", limit=5), "CloudWatch Logs readable")[1],
        fix="check the CloudWatch Logs endpoint and region",
        permission="logs:DescribeLogGroups, logs:GetLogEvents and logs:FilterLogEvents",
    )


def _check_nothing_running(
    checker: _Checker,
    spec: PipelineSpec,
    env_name: str,
    aws: AwsSettings,
    account: str,
    jobs: Mapping[str, str],
) -> None:
    machine = state_machine_arn(aws, account)
    if machine:
        sfn = checker.client("stepfunctions")

        def executions() -> str:
            running = sfn.list_executions(stateMachineArn=machine, statusFilter="RUNNING", maxResults=10)["executions"]
            if running:
                raise _Busy(
                    f"execution {running[0]['name']} of {aws.state_machine} is RUNNING",
                    "wait for it or stop it: aws stepfunctions stop-execution --execution-arn "
                    + running[0]["executionArn"],
                )
            return f"no execution of {aws.state_machine} running"

        _busy_check(
            checker,
            "no execution running",
            "list executions",
            executions,
            machine,
            fix="apply the orchestration Terraform stack (it creates the state machine), or fix aws.state_machine",
        )
    glue = checker.client("glue")

    def glue_runs() -> str:
        for job in jobs.values():
            for run in glue.get_job_runs(JobName=job, MaxResults=50).get("JobRuns", ()):
                if run.get("JobRunState") in ACTIVE_GLUE_STATES:
                    raise _Busy(
                        f"Glue run {run['Id']} of {job} is {run['JobRunState']}",
                        "wait for it (a resume re-attaches to flywheel's own runs), or stop it: aws glue "
                        f"batch-stop-job-run --job-name {job} --job-run-ids {run['Id']}",
                    )
        return "no Glue run of this pipeline active"

    if jobs:
        _busy_check(checker, "no Glue run active", "list Glue job runs", glue_runs, "glue:GetJobRuns")
    if aws.lock_table:
        from flywheel.aws.lock import AwsRunLock

        lock = AwsRunLock(aws, spec.pipeline, env_name, client=checker.client("dynamodb"), check_account=False)

        def holder() -> str:
            found = lock.holder()
            if found is not None:
                raise _Busy(f"{found.describe()} holds the run lock", "wait for that run (`flywheel status`)")
            return "run lock free"

        _busy_check(checker, "no runner active", "read the run lock", holder, f"dynamodb:GetItem on {aws.lock_table}")


class _Busy(Exception):
    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


def _busy_check(
    checker: _Checker,
    name: str,
    action: str,
    call: Callable[[], str],
    resource: str,
    *,
    fix: str = "check the region and the environment's aws settings",
) -> None:
    try:
        checker.attempt(name, action, call, fix=fix, permission=f"read access to {resource}")
    except _Busy as busy:
        checker.add(name, False, busy.detail, busy.fix)


def describe(report: PreflightReport) -> Iterable[str]:
    """The checklist as lines (the CLI adds colour)."""
    for check in report.checks:
        mark = "✅" if check.ok else "❌"
        yield f"{mark} {check.name}: {check.detail}"
        if not check.ok and check.fix:
            yield f"   fix: {check.fix}"
