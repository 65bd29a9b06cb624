"""Recovering executions of the exported definition, run in moto: failed at each step, one failed context
of step 3, a sibling branch still running, TIMED_OUT and ABORTED executions; locally and `--in-aws`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from flywheel import api
from flywheel.aws import recover as ops
from flywheel.aws.sfn import AttemptStatus, ExecutionStatus
from flywheel.errors import UsageError
from flywheel.events import Event, StepAttached
from flywheel.spec import StepKey
from flywheel.state import StepStatus
from tests.aws.sfn_world import World, deploy
from tests.support.moto_server import MotoServer

pytestmark = pytest.mark.e2e

ORDER = [
    "addressable-split-and-part",
    "infobase-split-and-part",
    "register-part-tables[addressable_ids]",
    "register-part-tables[infobase_attributes]",
    "prepare-part-tables",
    "create-part-addressable-ids-er-table",
    "generate-data-monitor-report",
    "generate-cleanrooms-report",
]


@pytest.fixture
def world(aws: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("FLYWHEEL_GLUE_POLL_SECONDS", "0.05")
    return deploy(aws, tmp_path / "home")


def _actions(recovery: ops.Recovery) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"run": [], "reuse": [], "skip": []}
    for decision in recovery.planned.plan.decisions:
        out[decision.action.value].append(str(decision.key))
    return out


FAILURES = [
    ("addressable-split-and-part", ["infobase-split-and-part"]),
    ("infobase-split-and-part", ["addressable-split-and-part"]),
    ("register-part-tables[addressable_ids]", [*ORDER[:2], "register-part-tables[infobase_attributes]"]),
    ("prepare-part-tables", ORDER[:4]),
    ("create-part-addressable-ids-er-table", ORDER[:5]),
    ("generate-data-monitor-report", ORDER[:6]),
    ("generate-cleanrooms-report", ORDER[:7]),
]


def test_failed_at_each_step_plans_exactly_the_rest(world: World) -> None:
    """One deployment, one failed execution per step (and one context of step 3)."""
    session = world.session
    clients = ops.connect(session)
    for number, (failing, done) in enumerate(FAILURES, start=1):
        world.fail(failing, error="[SourceMissing] no files under raw/")
        arn = world.execute(f"nightly-{number}")

        recovery = ops.plan_recovery(session, clients)  # the latest failed execution by default
        assert recovery.record.arn == arn and recovery.record.status is ExecutionStatus.FAILED
        failed = recovery.record.tasks[StepKey.parse(failing)]
        assert failed.last.status is AttemptStatus.FAILED
        assert (failed.last.error_type, failed.last.error_message) == ("SourceMissing", "no files under raw/")
        assert failed.job_run_id and failed.job_run_id.startswith("jr_")
        actions = _actions(recovery)
        assert actions["reuse"] == done, failing
        assert actions["run"] == [k for k in ORDER if k not in done], failing
        assert recovery.skip_input == done
        reasons = {str(d.key): d.reason for d in recovery.planned.plan.decisions}
        assert reasons[failing].startswith(f"failed in run {recovery.imported.run_id}")

        alerts = world.alerts()
        redrive = ops.check_redrive(session, clients, recovery.record)
        if number <= 3:  # a Parallel branch catches its failure and alerts, so its sibling finishes
            assert len(alerts) == 1, failing
            assert f"{failing} failed" in alerts[0]
            assert f"Recover with: flywheel sfn recover {arn} --env dev" in alerts[0]
            assert not redrive.possible and "Fail state Step" in redrive.problems[-1], redrive.problems
        else:  # a task of its own fails the execution in the task: the EventBridge rule alerts, a redrive reruns it
            assert alerts == [], failing
            assert redrive.possible, (failing, redrive.problems)
            assert redrive.restarts == (f"Glue task {failed.state_name}",)


def test_failed_context_recovered_locally(world: World) -> None:
    world.fail("register-part-tables[infobase_attributes]", error="[SchemaMismatch] column id is string")
    failed_arn = world.execute("nightly")
    session, clients = world.session, ops.connect(world.session)
    runs_before = {r["Id"] for r in world.server.glue_runs()}

    recovery = ops.plan_recovery(session, clients, failed_arn, note="schema fixed")
    result = ops.recover_locally(session, recovery)
    assert result.outcome is not None and result.outcome.value == "succeeded"
    started = [r for r in world.server.glue_runs() if r["Id"] not in runs_before]
    assert sorted(r["Arguments"]["--flywheel_key"] for r in started) == sorted(ORDER[3:])
    assert result.state.started is not None and result.state.started.parent_run == recovery.imported.run_id
    assert result.state.step(StepKey("register-part-tables", "addressable_ids")).status is StepStatus.REUSED

    with session.journal() as journal:
        runs_after = len(journal.runs())
    # A second recovery would redo run N's work: refused with the run that recovered it, and the
    # execution is not imported a second time.
    with pytest.raises(UsageError, match=f"already recovered by run {result.run_id}"):
        ops.plan_recovery(session, clients, failed_arn)
    with session.journal() as journal:
        assert len(journal.runs()) == runs_after


def _branch_failed(world: World, arn: str) -> bool:
    events = world.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return any(e["type"] == "TaskFailed" for e in events)


def test_sibling_branch_still_running_is_reattached_not_rerun(world: World) -> None:
    """The failed branch no longer cancels its sibling (the execution waits for it); an operator who
    aborts the execution meanwhile leaves the sibling's Glue run going on, and recovery re-attaches."""
    world.hold("infobase-split-and-part")
    world.fail("addressable-split-and-part")
    arn = world.start("nightly")
    held = world.wait_until_glue_running("infobase-split-and-part")
    deadline = time.monotonic() + 20
    while not _branch_failed(world, arn) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert world.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
    world.sfn.stop_execution(executionArn=arn, error="Operator", cause="stop for tonight")
    assert world.wait(arn) == "ABORTED"
    session, clients = world.session, ops.connect(world.session)

    recovery = ops.plan_recovery(session, clients, arn)
    sibling = recovery.record.tasks[StepKey("infobase-split-and-part")]
    assert sibling.last.status is AttemptStatus.RUNNING and sibling.last.from_glue
    assert recovery.reattach == {StepKey("infobase-split-and-part"): held}
    assert _actions(recovery)["run"] == ORDER  # the running sibling is not done yet
    with pytest.raises(UsageError, match="still running"):
        ops.recover_in_aws(session, clients, recovery)

    def release_once_attached(event: Event) -> None:
        if isinstance(event, StepAttached) and event.step == "infobase-split-and-part":
            threading.Timer(0.2, world.release, args=("infobase-split-and-part",)).start()

    result = ops.recover_locally(session, recovery, api.RunOptions(observers=[release_once_attached]))
    assert result.outcome is not None and result.outcome.value == "succeeded"
    sibling_runs = [r for r in world.server.glue_runs() if r["JobName"] == world.job("infobase-split-and-part")]
    assert [r["Id"] for r in sibling_runs] == [held]  # re-attached: no second run
    assert result.state.step(StepKey("infobase-split-and-part")).external_id == held


def test_sibling_that_finished_after_the_failure_counts_as_done(world: World) -> None:
    world.hold("infobase-split-and-part")
    world.fail("addressable-split-and-part")
    arn = world.start("nightly")
    world.wait_until_glue_running("infobase-split-and-part")
    world.release("infobase-split-and-part")
    assert world.wait(arn) == "FAILED"  # after the Parallel, once both branches ended
    assert len(world.alerts()) == 1
    recovery = ops.plan_recovery(world.session, ops.connect(world.session), arn)
    assert _actions(recovery)["reuse"] == ["infobase-split-and-part"]


def test_timed_out_execution(aws: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_GLUE_POLL_SECONDS", "0.05")
    world = deploy(aws, tmp_path / "home", timeout_seconds=2)
    world.hold("prepare-part-tables", state="FAILED")
    arn = world.execute("nightly")
    assert world.sfn.describe_execution(executionArn=arn)["status"] == "TIMED_OUT"
    world.release("prepare-part-tables")
    session, clients = world.session, ops.connect(world.session)
    recovery = ops.plan_recovery(session, clients)
    assert recovery.record.status is ExecutionStatus.TIMED_OUT
    assert _actions(recovery) == {"run": ORDER[4:], "reuse": ORDER[:4], "skip": []}
    step = recovery.imported.state.step(StepKey("prepare-part-tables"))
    assert step.status is StepStatus.FAILED  # the run the timeout cut off failed later in Glue
    assert (step.error_type, step.error_message) == ("GlueJobFailed", "injected FAILED in prepare-part-tables")
    check = ops.check_redrive(session, clients, recovery.record)
    assert not check.possible
    assert any("differs from what `flywheel sfn export` produces" in p for p in check.problems)


def test_aborted_execution_with_a_run_that_went_on(world: World) -> None:
    world.hold("create-part-addressable-ids-er-table")
    arn = world.start("nightly")
    world.wait_until_glue_running("create-part-addressable-ids-er-table")
    world.sfn.stop_execution(executionArn=arn, error="Operator", cause="wrong input")
    assert world.wait(arn) == "ABORTED"
    session, clients = world.session, ops.connect(world.session)
    assert ops.plan_recovery(session, clients).reattach  # still running: re-attach
    world.release("create-part-addressable-ids-er-table")
    recovery = ops.plan_recovery(session, clients)
    assert recovery.record.status is ExecutionStatus.ABORTED
    assert _actions(recovery) == {"run": ORDER[6:], "reuse": ORDER[:6], "skip": []}
    assert recovery.imported.appended > 0 and not recovery.imported.created  # brought up to date


def test_running_execution_is_refused(world: World) -> None:
    world.hold("prepare-part-tables")
    world.start("nightly")
    world.wait_until_glue_running("prepare-part-tables")
    with pytest.raises(UsageError, match="still running"):
        ops.plan_recovery(world.session, ops.connect(world.session))
    world.release("prepare-part-tables")
