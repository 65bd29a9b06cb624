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
    assert _flywheel(capsys, monkeypatch, "sfn", "recover", first, "--env", "dev", "--redrive", "--dry-run") == 0
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
