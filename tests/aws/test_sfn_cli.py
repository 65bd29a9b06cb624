"""`flywheel sfn` as operators use it (in-process `main`, real moto), a hand-built state machine, and
redrive: explained when Step Functions cannot, called when it can (moto lacks RedriveExecution: Stubber)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from flywheel import api, cli
from flywheel.aws import recover as ops
from flywheel.aws.asl import export_asl, to_json
from flywheel.aws.lock import AwsRunLock
from flywheel.aws.sfn import AttemptStatus, execution_state, read_execution
from flywheel.spec import StepKey
from flywheel.state import StepStatus
from tests.aws.sfn_world import ROLE, World, deploy
from tests.support.moto_server import MotoServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def world(aws: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("FLYWHEEL_GLUE_POLL_SECONDS", "0.05")
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    return deploy(aws, tmp_path / "home")


def flywheel(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """Run the CLI's `main` as the `flywheel` script does; return exit code, stdout, stderr."""
    monkeypatch.setattr(sys, "argv", ["flywheel", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def line_of(text: str, label: str) -> str:
    found = [line for line in text.splitlines() if f" {label} " in line]
    assert len(found) == 1, (label, text)
    return found[0]


def test_status_view_and_dry_run_plan(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    world.fail("register-part-tables[addressable_ids]", error="[SchemaMismatch] id is not a string")
    arn = world.execute("nightly")

    code, out, _ = flywheel(capsys, monkeypatch, "sfn", "status", "--env", "dev")
    assert code == 0, out
    step1 = line_of(out, "addressable-split-and-part")
    assert "✅" in step1 and "jr_" in step1
    failed = line_of(out, "register-part-tables [addressable_ids]")
    assert "❌" in failed and "SchemaMismatch" in failed  # the detail column may fold
    step4 = line_of(out, "prepare-part-tables")
    assert "⏸️" in step4 and "not executed" in step4
    assert f"flywheel sfn recover {arn} --env dev" in out
    assert "🔒" not in out

    aws_settings = world.session.project.config.environment("dev").aws
    assert aws_settings is not None
    lock = AwsRunLock(aws_settings, "db-refresh", "dev", check_account=False).acquire(run_id=12, command="resume")
    try:  # someone is recovering: the status says who
        code, out, _ = flywheel(capsys, monkeypatch, "sfn", "status", "--env", "dev")
    finally:
        lock.release()
    assert "🔒 db-refresh in dev is busy: resume by " in out and "on run 12" in out

    code, out, _ = flywheel(capsys, monkeypatch, "sfn", "status", arn, "--env", "dev", "--json")
    body = json.loads(out)
    assert body["status"] == "FAILED"
    assert [s["status"] for s in body["steps"]] == ["succeeded"] * 2 + ["failed", "succeeded"] + ["not_started"] * 4

    code, out, _ = flywheel(capsys, monkeypatch, "sfn", "recover", "--env", "dev", "--dry-run", "--json")
    assert code == 0, out
    plan = json.loads(out)
    assert plan["execution"] == arn
    assert plan["plan"]["to_run"] == [
        "register-part-tables[addressable_ids]",
        "prepare-part-tables",
        "create-part-addressable-ids-er-table",
        "generate-data-monitor-report",
        "generate-cleanrooms-report",
    ]
    assert plan["skip_input"] == [
        "addressable-split-and-part",
        "infobase-split-and-part",
        "register-part-tables[infobase_attributes]",
    ]
    runs_before = len(world.server.glue_runs())
    code, out, _ = flywheel(capsys, monkeypatch, "sfn", "recover", "--env", "dev", "--dry-run")
    assert code == 0 and "dry run" in out and "reuse" in out
    assert len(world.server.glue_runs()) == runs_before  # a dry run starts nothing


def test_recover_in_aws_twice_is_refused(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    world.fail("generate-data-monitor-report")
    failed = world.execute("nightly")
    code, out, err = flywheel(capsys, monkeypatch, "sfn", "recover", "--env", "dev", "--in-aws", "--json")
    assert code == 0, err
    started = json.loads(out[out.index('{\n  "execution"') :])
    assert started["input"]["recovers"] == failed
    assert started["input"]["skip"][-1] == "create-part-addressable-ids-er-table"
    assert world.wait(started["execution"]) == "SUCCEEDED"
    assert world.scheduled_keys(started["execution"]) == ["generate-data-monitor-report", "generate-cleanrooms-report"]

    code, _, err = flywheel(capsys, monkeypatch, "sfn", "recover", failed, "--env", "dev", "--in-aws")
    assert code == 2
    assert "already recovered in AWS" in err

    # the recovery execution reads back as a run whose skipped keys are reused from where they were made
    view = ops.status(world.session, ops.connect(world.session), started["execution"])
    assert view.record.recovers == failed
    assert len(view.record.skipped) == 6
    assert {view.state.step(k).status for k in view.record.skipped} == {StepStatus.REUSED}


def test_redrive_is_explained_when_the_definition_changed(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    world.fail("prepare-part-tables")
    arn = world.execute("nightly")
    session = world.session
    env = session.project.config.environment("dev")
    changed = export_asl(session.spec, "dev", env, timeout_seconds=60)
    world.redeploy(changed)
    code, _, err = flywheel(capsys, monkeypatch, "sfn", "recover", arn, "--env", "dev", "--redrive")
    assert code == 2
    assert "cannot be redriven" in err
    assert "differs from what `flywheel sfn export` produces" in err
    assert "--in-aws" in err


def test_redrive_is_refused_when_the_failed_task_was_caught(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Redriving executions" (Step Functions developer guide): a redrive restarts from the states without
    an `...Exited` event. A Parallel branch of the export catches its task's error (so its sibling
    finishes), alerts and ends; the group fails after the Parallel in a Fail state: a redrive would rerun
    only that Fail state, so it is refused with the reason and the command that reruns what is left."""
    world.fail("register-part-tables[addressable_ids]")
    arn = world.execute("nightly")
    session = world.session
    clients = ops.connect(session)
    check = ops.check_redrive(session, clients, ops.plan_recovery(session, clients, arn).record)
    assert check.restarts == ("Fail state Step2_RegisterPartTables_Failed",)
    assert [p for p in check.problems if "Fail state Step2_RegisterPartTables_Failed" in p], check.problems
    code, _, err = flywheel(capsys, monkeypatch, "sfn", "recover", arn, "--env", "dev", "--redrive")
    assert code == 2 and "without rerunning Glue task Step2_RegisterPartTables_addressable_ids" in err
    assert f"flywheel sfn recover {arn} --env dev` reruns exactly what is left" in err
    assert "Traceback" not in err


def test_redrive_reruns_a_task_that_failed_on_its_own(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15.9: a task outside a Parallel has no Catch, so the execution fails in the Glue task itself
    (no TaskStateExited in moto's history) and a redrive restarts that task."""
    world.fail("prepare-part-tables")
    arn = world.execute("nightly")
    events = world.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    exited = [(e.get("stateExitedEventDetails") or {}).get("name") for e in events if e["type"].endswith("Exited")]
    assert "Step3_PreparePartTables" not in exited and events[-1]["type"] == "ExecutionFailed"
    session = world.session
    clients = ops.connect(session)
    check = ops.check_redrive(session, clients, ops.plan_recovery(session, clients, arn).record)
    assert check.possible, check.problems
    assert check.restarts == ("Glue task Step3_PreparePartTables",)
    code, out, err = flywheel(capsys, monkeypatch, "sfn", "recover", arn, "--env", "dev", "--redrive", "--dry-run")
    assert code == 0, err
    assert "redrive possible: Step Functions would restart Glue task Step3_PreparePartTables" in out


def test_redrive_when_possible(world: World) -> None:
    """An aborted execution stopped inside the task (no Exited event): a redrive reruns that task."""
    world.hold("prepare-part-tables", state="FAILED")
    arn = world.start("nightly")
    world.wait_until_glue_running("prepare-part-tables")
    world.sfn.stop_execution(executionArn=arn, error="Operator", cause="stopped for the night")
    assert world.wait(arn) == "ABORTED"
    world.release("prepare-part-tables")
    session = world.session
    clients = ops.connect(session)
    recovery = ops.plan_recovery(session, clients, arn)
    check = ops.check_redrive(session, clients, recovery.record)
    assert check.possible, check.problems
    aged = ops.check_redrive(session, clients, recovery.record, now=recovery.record.started_at + 15 * 86400)
    assert any("only within 14 days" in p for p in aged.problems)


def test_each_redrive_has_its_own_idempotency_token() -> None:
    """RedriveExecution API reference (`clientToken`: 1-64 characters; the last 10 tokens that redrove the
    execution answer idempotently for 15 minutes) and "ExecutionRedrivenEventDetails" (`redriveCount`,
    not updated while a redrive is pending): a repeated call is one redrive; a second redrive (the first
    failed again, `redriveCount` 1) must not reuse the first one's token, else it would be answered with
    the first redrive instead of running. moto lacks RedriveExecution: botocore's Stubber checks the
    request against the service model."""
    arn = "arn:aws:states:us-east-1:123456789012:execution:m:nightly"
    stubbed = boto3.client("stepfunctions", region_name="us-east-1")
    tokens: list[str] = []
    stubbed.meta.events.register(
        "provide-client-params.stepfunctions.RedriveExecution", lambda params, **_: tokens.append(params["clientToken"])
    )
    with Stubber(stubbed) as stub:
        for count in (0, 0, 1):
            described = {
                "executionArn": arn,
                "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:m",
                "status": "FAILED",
                "startDate": "2026-01-01T00:00:00Z",
                "redriveCount": count,
            }
            stub.add_response("describe_execution", described, {"executionArn": arn})
            stub.add_response(
                "redrive_execution", {"redriveDate": "2026-01-01T00:00:00Z"}, {"executionArn": arn, "clientToken": ANY}
            )
            ops.redrive(stubbed, arn)
        stub.assert_no_pending_responses()
    assert tokens[0] == tokens[1]  # the same redrive asked twice
    assert tokens[2] != tokens[0]  # the next redrive
    assert all(1 <= len(t) <= 64 for t in tokens)


def test_export_writes_the_file_terraform_deploys(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = tmp_path / "db-refresh.asl.json"
    code, _, err = flywheel(capsys, monkeypatch, "sfn", "export", "--env", "dev", "--output", str(target))
    assert code == 0, err
    session = api.open_session("db-refresh", "dev", tmp_path / "home")
    assert target.read_text() == to_json(export_asl(session.spec, "dev", session.project.config.environment("dev")))


def _glue_task(job: str, arguments: dict[str, str], next_state: str | None = None) -> dict[str, Any]:
    task: dict[str, Any] = {
        "Type": "Task",
        "Resource": "arn:aws:states:::glue:startJobRun.sync",
        "Parameters": {"JobName": job, "Arguments": arguments},
        "ResultPath": None,
    }
    if next_state:
        task["Next"] = next_state
    else:
        task["End"] = True
    return task


def test_hand_built_state_machine_reads_by_job_name_and_context_argument(world: World) -> None:
    """State names and arguments as someone wrote them by hand (the runbook's S3_ROOT per context)."""
    register = world.job("register-part-tables")
    definition = {
        "StartAt": "SplitAddressable",
        "States": {
            "SplitAddressable": _glue_task(world.job("addressable-split-and-part"), {"--ENV": "dev"}, "RegisterBoth"),
            "RegisterBoth": {
                "Type": "Parallel",
                "End": True,
                "Branches": [
                    {"StartAt": f"Reg{i}", "States": {f"Reg{i}": _glue_task(register, {"--S3_ROOT": root})}}
                    for i, root in enumerate(["split_part/addressable_ids/", "split_part/infobase_attributes/"])
                ],
            },
        },
    }
    machine = world.sfn.create_state_machine(name="hand-built", definition=json.dumps(definition), roleArn=ROLE)
    world.fail(
        "register-part-tables",
        error="[TableExists] part_infobase_attributes",
        arguments={"--S3_ROOT": "split_part/infobase_attributes/"},
        hold_seconds=1.0,  # the sibling branch has started (and ended) before this one fails and cancels it
    )
    arn = world.sfn.start_execution(stateMachineArn=machine["stateMachineArn"], name="by-hand")["executionArn"]
    assert world.wait(arn) == "FAILED"

    record = read_execution(world.sfn, world.glue, arn, spec=world.session.spec, env_name="dev")
    assert set(record.tasks) == {
        StepKey("addressable-split-and-part"),
        StepKey("register-part-tables", "addressable_ids"),
        StepKey("register-part-tables", "infobase_attributes"),
    }
    failed = record.tasks[StepKey("register-part-tables", "infobase_attributes")]
    assert failed.state_name == "Reg1"
    assert failed.last.status is AttemptStatus.FAILED and failed.last.error_type == "TableExists"
    state = execution_state(world.session.spec, "dev", record)
    assert state.step(StepKey("infobase-split-and-part")).status is StepStatus.NOT_STARTED
    assert state.step(StepKey("register-part-tables", "addressable_ids")).status is StepStatus.SUCCEEDED
