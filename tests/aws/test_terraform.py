"""The Terraform stacks cannot be applied here, so they are parsed (python-hcl2) and checked: they deploy
exactly the exported definition, define every Glue job, and their IAM policies allow every AWS action
flywheel and the state machine called in a moto end-to-end scenario ("IAM role missing permissions",
prevented at the source)."""

from __future__ import annotations

import fnmatch
import json
import math
import sys
from pathlib import Path
from typing import Any

import boto3
import hcl2
import pytest

from flywheel import cli
from flywheel.aws.asl import export_asl, glue_job_name, to_json
from flywheel.spec import load_project
from tests.aws.conftest import OPERATOR_KEY
from tests.aws.sfn_world import World, deploy
from tests.support.moto_server import SFN_INTERNAL_KEY, MotoServer

INFRA = Path(__file__).resolve().parents[2] / "infra"
MODULE = INFRA / "modules" / "flywheel-orchestration"
ENVS = ("dev", "prod")
NEEDS_NO_PERMISSION = {"sts:GetCallerIdentity"}


def _clean(value: Any) -> Any:
    """python-hcl2 keeps string quotes and block markers; tests want plain values."""
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _load(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        parsed: dict[str, Any] = _clean(hcl2.load(handle))
    return parsed


def _blocks(parsed: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """`resource "aws_x" "name"` blocks as {"aws_x.name": body} (also for `data` and `module`)."""
    out: dict[str, dict[str, Any]] = {}
    for entry in parsed.get(kind, []):
        for type_name, named in entry.items():
            if kind == "module":
                out[type_name] = named
                continue
            for name, body in named.items():
                out[f"{type_name}.{name}"] = body
    return out


def _module_call(env_name: str) -> dict[str, Any]:
    return _blocks(_load(INFRA / "stacks" / f"{env_name}-orchestration" / "main.tf"), "module")["orchestration"]


@pytest.mark.parametrize("env_name", ENVS)
def test_stack_deploys_exactly_the_exported_definition(env_name: str) -> None:
    project = load_project("db-refresh")
    stack = INFRA / "stacks" / f"{env_name}-orchestration"
    exported = to_json(export_asl(project.spec, env_name, project.config.environment(env_name)))
    assert (stack / "db-refresh.asl.json").read_text() == exported, (
        f"regenerate: flywheel sfn export --env {env_name} --output {stack / 'db-refresh.asl.json'}"
    )
    call = _module_call(env_name)
    assert call["definition"] == '${file("${path.module}/db-refresh.asl.json")}'
    machine = _blocks(_load(MODULE / "main.tf"), "resource")["aws_sfn_state_machine.db_refresh"]
    assert machine["definition"] == "${var.definition}"
    assert machine["type"] == "STANDARD"
    outputs = _load(stack / "outputs.tf")["output"]
    assert any("step_functions_state_machine_arn" in o for o in outputs)
    assert json.loads((stack / "execution-input.json").read_text()) == {"skip": []}


@pytest.mark.parametrize("env_name", ENVS)
def test_stack_names_match_the_project_and_every_step_has_a_glue_job(env_name: str) -> None:
    project = load_project("db-refresh")
    aws = project.config.environment(env_name).aws
    assert aws is not None and aws.s3_root
    call = _module_call(env_name)
    assert call["env"] == env_name
    assert call["region"] == aws.region
    assert call["state_machine_name"] == aws.state_machine
    assert call["sns_topic_name"] == aws.sns_topic
    assert call["lock_table_name"] == aws.lock_table
    assert call["glue_database"] == aws.glue_database
    assert call["data_bucket"] == aws.s3_root.removeprefix("s3://").split("/")[0]
    jobs = call["glue_jobs"]
    assert set(jobs) == {s.id for s in project.spec.steps}
    for step in project.spec.steps:
        job = jobs[step.id]
        assert job["name"] == glue_job_name(project.spec, step, env_name)
        assert (job["worker_type"], job["workers"]) == (step.resources.worker_type, step.resources.workers)
        assert step.timeout is not None and job["timeout_minutes"] == math.ceil(step.timeout / 60)
        assert job["max_concurrent_runs"] >= max(1, len(step.contexts)), f"{step.id}: its contexts run at once"

    resources = _blocks(_load(MODULE / "main.tf"), "resource")
    assert resources["aws_glue_job.step"]["for_each"] == "${var.glue_jobs}"
    assert (
        resources["aws_cloudwatch_log_group.state_machine"]["name"]
        == "/aws/vendedlogs/states/${var.state_machine_name}"
    )
    assert call["state_machine_name"] == f"omc-flywheel-{env_name}-db-refresh"  # the runbook's log group
    lock = resources["aws_dynamodb_table.lock"]
    assert lock["hash_key"] == "lock_id" and lock["ttl"][0]["attribute_name"] == "expires_at"


def _allowed(document: str) -> list[str]:
    docs = _blocks(_load(MODULE / "iam.tf"), "data")
    return [
        action
        for statement in docs[f"aws_iam_policy_document.{document}"]["statement"]
        for action in statement["actions"]
    ]


def _is_allowed(action: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in patterns)


def _flywheel(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["flywheel", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    capsys.readouterr()
    return code


@pytest.mark.e2e
def test_iam_policies_allow_every_action_flywheel_calls(
    aws: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLYWHEEL_GLUE_POLL_SECONDS", "0.05")
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    world: World = deploy(aws, tmp_path / "home")

    # a failed execution recovered locally (each step a Glue job run), another in AWS, the preflight
    world.fail("register-part-tables[infobase_attributes]")
    first = world.execute("nightly-1")
    assert _flywheel(capsys, monkeypatch, "sfn", "status", "--env", "dev") == 0
    assert _flywheel(capsys, monkeypatch, "sfn", "recover", "--env", "dev", "--dry-run") == 0
    # refused (issue 15.9: it ended in the Fail state its Catch leads to), after the calls that decide it
    assert _flywheel(capsys, monkeypatch, "sfn", "recover", first, "--env", "dev", "--redrive", "--dry-run") == 2
    assert _flywheel(capsys, monkeypatch, "sfn", "recover", first, "--env", "dev") == 0
    world.fail("generate-cleanrooms-report")
    second = world.execute("nightly-2")
    assert _flywheel(capsys, monkeypatch, "sfn", "recover", second, "--env", "dev", "--in-aws") == 0
    assert _flywheel(capsys, monkeypatch, "sfn", "start", "--env", "dev", "--from", second) == 0
    _flywheel(capsys, monkeypatch, "check", "--env", "dev")  # its verdict does not matter here, its calls do

    operator = sorted(set(aws.calls(OPERATOR_KEY)) - NEEDS_NO_PERMISSION)
    state_machine = sorted(set(aws.calls(SFN_INTERNAL_KEY)))
    assert "states:GetExecutionHistory" in operator and "glue:StartJobRun" in operator
    assert "glue:StartJobRun" in state_machine and "sns:Publish" in state_machine
    missing = [a for a in operator if not _is_allowed(a, _allowed("operator"))]
    assert not missing, f"the operator role lacks {missing} (infra/modules/flywheel-orchestration/iam.tf)"
    missing = [a for a in state_machine if not _is_allowed(a, _allowed("state_machine"))]
    assert not missing, f"the state machine role lacks {missing} (infra/modules/flywheel-orchestration/iam.tf)"


def test_module_creates_the_glue_database_the_catalog_code_requires() -> None:
    """aws/catalog.py never creates the database on AWS (`database-missing` points at this stack); the
    stack must, under the name project.yaml gives (aws_glue_catalog_database, Terraform AWS provider)."""
    resources = _blocks(_load(MODULE / "main.tf"), "resource")
    database = resources["aws_glue_catalog_database.data"]
    assert database["name"] == "${var.glue_database}"
    assert database["location_uri"] == "s3://${var.data_bucket}/"


def _statements(document: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = _blocks(_load(MODULE / "iam.tf"), "data")[f"aws_iam_policy_document.{document}"][
        "statement"
    ]
    return statements


def _allows_on(document: str, action: str, resource: str) -> bool:
    """Whether a policy document allows an action on a resource, glob patterns as IAM matches them."""
    return any(
        _is_allowed(action, s["actions"]) and any(fnmatch.fnmatchcase(resource, r) for r in s["resources"])
        for s in _statements(document)
        if s.get("effect", "Allow") == "Allow"
    )


def test_lake_formation_grants_the_roles_that_touch_the_catalog() -> None:
    """Under Lake Formation, IAM alone does not open a table: the location is registered, the Glue and
    operator roles are granted the database, its tables and the location, the Glue role may DESCRIBE
    `default` (Spark with --enable-glue-datacatalog reads it) and holds lakeformation:GetDataAccess.
    Pages: "Registering an Amazon S3 location" and "Granting Data Catalog permissions" (Lake Formation
    developer guide), "Using the AWS Glue Data Catalog as the metastore" (Glue developer guide)."""
    resources = _blocks(_load(MODULE / "lakeformation.tf"), "resource")
    assert resources["aws_lakeformation_resource.data"]["arn"] == "arn:aws:s3:::${var.data_bucket}"
    principals = _load(MODULE / "lakeformation.tf")["locals"][0]["catalog_principals"]
    assert "aws_iam_role.glue_job.arn" in principals and "aws_iam_role.operator.arn" in principals
    assert resources["aws_lakeformation_permissions.data_location"]["permissions"] == ["DATA_LOCATION_ACCESS"]
    assert {"CREATE_TABLE", "ALTER", "DESCRIBE"} <= set(
        resources["aws_lakeformation_permissions.database"]["permissions"]
    )
    tables = resources["aws_lakeformation_permissions.tables"]
    assert {"SELECT", "INSERT", "DELETE", "ALTER"} <= set(tables["permissions"])
    assert tables["table"][0]["wildcard"] is True
    assert resources["aws_lakeformation_permissions.default_database"]["database"][0]["name"] == "default"

    account = "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}"
    assert _allows_on("glue_job", "lakeformation:GetDataAccess", "*")
    assert _allows_on("glue_job", "glue:GetDatabase", f"{account}:database/default")
    assert not _allows_on("glue_job", "glue:GetTable", f"{account}:table/default/anything")


def test_state_machine_is_created_after_its_role_policy() -> None:
    """CreateStateMachine with a logging configuration checks that the role may deliver logs, and fails
    with "not authorized to access the Log Destination" when the policy does not exist yet ("Logging
    using CloudWatch Logs", Step Functions developer guide: IAM policies for logging). The machine only
    references the role, so Terraform would create both at once without the explicit dependency."""
    machine = _blocks(_load(MODULE / "main.tf"), "resource")["aws_sfn_state_machine.db_refresh"]
    assert "${aws_iam_role_policy.state_machine}" in machine["depends_on"]
    policy = _blocks(_load(MODULE / "iam.tf"), "resource")["aws_iam_role_policy.state_machine"]
    assert policy["role"] == "${aws_iam_role.state_machine.id}"
    assert _allows_on("state_machine", "logs:CreateLogDelivery", "*")


def _heredoc(value: str) -> str:
    """The text of a `<<-JSON ... JSON` heredoc as python-hcl2 returns it."""
    body = value.strip('"').split("\n", 1)[1]
    return body.rsplit("\n", 1)[0]


OPERATIONS = MODULE / "operations.tf"
MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:omc-flywheel-dev-db-refresh"


def _status_event(status: str, machine: str = MACHINE_ARN) -> dict[str, Any]:
    """The "Step Functions Execution Status Change" event as the page "Automating Step Functions event
    delivery with EventBridge" (step-functions/latest/dg/cw-events.html) shows it."""
    name = f"nightly-{status.lower()}"
    return {
        "Source": "aws.states",
        "DetailType": "Step Functions Execution Status Change",
        "Detail": json.dumps(
            {
                "executionArn": machine.replace(":stateMachine:", ":execution:") + f":{name}",
                "stateMachineArn": machine,
                "name": name,
                "status": status,
                "startDate": 1551225014968,
                "stopDate": 1551225017576,
                "input": "{}",
                "output": None,
            }
        ),
        "Resources": [machine.replace(":stateMachine:", ":execution:") + f":{name}"],
    }


@pytest.mark.e2e
def test_eventbridge_rule_alerts_on_every_bad_ending_of_the_machine(aws: MotoServer) -> None:
    """The declared rule and input transformer, put into moto's EventBridge with an SQS queue in place of
    the topic (moto delivers to SQS, not SNS): the documented status events of this machine that end
    FAILED, TIMED_OUT or ABORTED arrive as a message naming the execution and the recover command;
    SUCCEEDED, RUNNING and another machine's failure do not."""
    resources = _blocks(_load(OPERATIONS), "resource")
    rule = resources["aws_cloudwatch_event_rule.execution_ended_badly"]
    pattern = _heredoc(rule["event_pattern"]).replace("${aws_sfn_state_machine.db_refresh.arn}", MACHINE_ARN)
    target = resources["aws_cloudwatch_event_target.execution_ended_badly"]
    assert target["arn"] == "${aws_sns_topic.alerts.arn}"
    transformer = target["input_transformer"][0]

    events = boto3.client("events", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="execution-ended-badly", EventPattern=pattern)
    events.put_targets(
        Rule="execution-ended-badly",
        Targets=[
            {
                "Id": "alerts",
                "Arn": queue_arn,
                "InputTransformer": {
                    "InputPathsMap": transformer["input_paths"],
                    "InputTemplate": _heredoc(transformer["input_template"]).replace("${var.env}", "dev"),
                },
            }
        ],
    )
    other = MACHINE_ARN.replace("db-refresh", "other")
    sent = [_status_event(s) for s in ("FAILED", "TIMED_OUT", "ABORTED", "SUCCEEDED", "RUNNING")]
    events.put_events(Entries=[*sent, _status_event("FAILED", other)])

    bodies: list[dict[str, str]] = []
    while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        bodies += [json.loads(m["Body"]) for m in batch]
        sqs.delete_message_batch(
            QueueUrl=queue, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        )
    assert len(bodies) == 3, bodies
    for status in ("FAILED", "TIMED_OUT", "ABORTED"):
        arn = f"{MACHINE_ARN.replace(':stateMachine:', ':execution:')}:nightly-{status.lower()}"
        (body,) = [b for b in bodies if b["alert"].endswith(f"ended {status}")]
        assert body["execution"] == arn
        assert body["recover"] == f"flywheel sfn recover {arn} --env dev"


def test_operations_declare_alarms_schedule_log_groups_key_and_glue_security() -> None:
    """What an AWS team expects beside the jobs, as declared (metric names from "Monitoring Step
    Functions metrics using CloudWatch", step-functions/latest/dg/procedure-cw-metrics.html; the Glue
    event from "Automating AWS Glue with EventBridge",
    glue/latest/dg/automating-awsglue-with-cloudwatch-events.html)."""
    parsed = _load(OPERATIONS)
    resources = _blocks(parsed, "resource")
    alarms = parsed["locals"][0]["execution_alarms"]
    assert set(alarms.values()) == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"}
    alarm = resources["aws_cloudwatch_metric_alarm.executions"]
    assert alarm["namespace"] == "AWS/States" and alarm["alarm_actions"] == ["${aws_sns_topic.alerts.arn}"]
    assert alarm["dimensions"] == {"StateMachineArn": "${aws_sfn_state_machine.db_refresh.arn}"}

    glue_rule = json.loads(
        _heredoc(resources["aws_cloudwatch_event_rule.glue_job_failed"]["event_pattern"]).replace(
            "${local.job_names_json}", '["a-job"]'
        )
    )
    assert glue_rule["detail-type"] == ["Glue Job State Change"]
    assert set(glue_rule["detail"]["state"]) == {"FAILED", "TIMEOUT", "ERROR"}

    schedule = resources["aws_scheduler_schedule.nightly"]
    assert schedule["count"] == "${var.schedule_expression == null ? 0 : 1}"
    assert schedule["target"][0]["input"] == "${jsonencode({skip = []})}"  # the input execution-input.json holds

    groups = resources["aws_cloudwatch_log_group.glue"]
    assert "/aws-glue/jobs/output" in groups["for_each"] and "/aws-glue/jobs/error" in groups["for_each"]
    assert groups["retention_in_days"] == "${var.glue_log_retention_days}"
    key = "${aws_kms_key.flywheel.arn}"
    assert groups["kms_key_id"] == key
    main = _blocks(_load(MODULE / "main.tf"), "resource")
    assert main["aws_sns_topic.alerts"]["kms_master_key_id"] == key
    assert main["aws_cloudwatch_log_group.state_machine"]["kms_key_id"] == key
    assert main["aws_glue_job.step"]["security_configuration"] == "${aws_glue_security_configuration.jobs.name}"
    assert resources["aws_kms_key.flywheel"]["enable_key_rotation"] is True
    encryption = resources["aws_glue_security_configuration.jobs"]["encryption_configuration"][0]
    assert encryption["s3_encryption"][0]["s3_encryption_mode"] == "SSE-KMS"


def test_data_bucket_is_versioned_private_and_expires_staging() -> None:
    """Pages: "Retaining multiple versions of objects with S3 Versioning", "Blocking public access to your
    Amazon S3 storage", "Managing the lifecycle of objects" (S3 user guide)."""
    resources = _blocks(_load(MODULE / "data_bucket.tf"), "resource")
    assert resources["aws_s3_bucket_versioning.data"]["versioning_configuration"][0]["status"] == "Enabled"
    block = resources["aws_s3_bucket_public_access_block.data"]
    assert all(
        block[flag] is True
        for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    )
    rules = {r["id"]: r for r in resources["aws_s3_bucket_lifecycle_configuration.data"]["rule"]}
    assert rules["expire-staging"]["filter"][0]["prefix"] == "${var.staging_prefix}"
    assert "abort_incomplete_multipart_upload" in rules["abort-incomplete-uploads"]
    assert "noncurrent_version_expiration" in rules["expire-replaced-versions"]
    variables = {name: body for entry in _load(MODULE / "variables.tf")["variable"] for name, body in entry.items()}
    assert variables["staging_prefix"]["default"].startswith("_flywheel/")


@pytest.mark.parametrize("document", ["glue_job", "operator"])
def test_writes_and_deletes_are_scoped_to_the_prefixes_the_pipeline_writes(document: str) -> None:
    """Neither the Glue role nor an operator may delete under raw/ (sources delivered by others) or
    bucket-wide; both may replace what the steps write. Resources as IAM matches them ("IAM JSON policy
    elements: Resource", wildcards), with the module's default prefixes."""
    variables = {name: body for entry in _load(MODULE / "variables.tf")["variable"] for name, body in entry.items()}
    bucket = "arn:aws:s3:::${var.data_bucket}"

    def expand(resource: str) -> list[str]:
        if resource == "${local.written_arns}":
            return [f"{bucket}/{p}*" for p in variables["written_prefixes"]["default"]]
        if resource == "${local.source_arns}":
            return [f"{bucket}/{p}*" for p in variables["source_prefixes"]["default"]]
        return [resource.replace("${local.bucket_arn}", bucket)]

    def decision(action: str, key: str) -> bool:
        resource = f"{bucket}/{key}"
        matching = [
            s
            for s in _statements(document)
            if _is_allowed(action, s["actions"])
            and any(
                fnmatch.fnmatchcase(resource, r)
                for raw in (s["resources"] if isinstance(s["resources"], list) else [s["resources"]])
                for r in expand(raw)
            )
        ]
        return bool(matching) and all(s.get("effect", "Allow") == "Allow" for s in matching)

    for key in ("raw/addressable_ids/part-0.parquet", "config/er-schema-mapping.yaml", "elsewhere/file"):
        assert not decision("s3:DeleteObject", key), key
        assert not decision("s3:PutObject", key), key
        assert decision("s3:GetObject", key), key
    for key in ("split_part/addressable_ids/id_part=0/part-0.parquet", "_flywheel/results/x.json", "er/x"):
        assert decision("s3:DeleteObject", key) and decision("s3:PutObject", key), key


@pytest.mark.parametrize("env_name", ENVS)
def test_stack_passes_alert_recipients_and_the_schedule_to_the_module(env_name: str) -> None:
    """The walkthrough in docs/aws.md sets them on the stack (`-var alert_emails=...`); the module must
    receive them, or the topic has no subscriber and no nightly run is scheduled."""
    call = _module_call(env_name)
    assert call["alert_emails"] == "${var.alert_emails}"
    assert call["schedule_expression"] == "${var.schedule_expression}"
    module_vars = {name for entry in _load(MODULE / "variables.tf")["variable"] for name in entry}
    assert {"alert_emails", "schedule_expression"} <= module_vars


@pytest.mark.parametrize("env_name", ENVS)
def test_tasks_without_a_catch_are_alerted_by_the_execution_status_rule(env_name: str) -> None:
    """Issue 15.9: a task of its own has no Catch (so the execution fails in the task and a redrive reruns
    it); its alert is the EventBridge rule on the execution's status, which must exist, match every bad
    ending and publish to the topic the Parallel branches publish to."""
    definition = json.loads((INFRA / "stacks" / f"{env_name}-orchestration" / "db-refresh.asl.json").read_text())
    uncaught = [
        name
        for name, state in definition["States"].items()
        if state.get("Resource", "").startswith("arn:aws:states:::glue:") and "Catch" not in state
    ]
    assert len(uncaught) == 4, uncaught  # steps 4-7
    resources = _blocks(_load(OPERATIONS), "resource")
    pattern = json.loads(_heredoc(resources["aws_cloudwatch_event_rule.execution_ended_badly"]["event_pattern"]))
    assert sorted(pattern["detail"]["status"]) == ["ABORTED", "FAILED", "TIMED_OUT"]
    assert resources["aws_cloudwatch_event_target.execution_ended_badly"]["arn"] == "${aws_sns_topic.alerts.arn}"
