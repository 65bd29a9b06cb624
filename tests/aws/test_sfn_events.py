"""History -> events, without AWS: hand-written execution records folded like local runs."""

from __future__ import annotations

from flywheel.aws.sfn import (
    AttemptRecord,
    AttemptStatus,
    ExecutionRecord,
    ExecutionStatus,
    TaskRecord,
    execution_events,
    execution_state,
)
from flywheel.events import RunInterrupted, RunStarted, StepReused
from flywheel.planner import Action, Mode, PlanInputs, PlanRequest, Provenance, plan
from flywheel.spec import PipelineSpec, StepKey, load_project
from flywheel.state import RunStatus, StepStatus, fold

ARN = "arn:aws:states:us-east-1:123456789012:execution:omc-flywheel-dev-db-refresh:nightly"


def _spec() -> PipelineSpec:
    return load_project("db-refresh").spec


def _task(key: StepKey, *attempts: AttemptRecord) -> TaskRecord:
    return TaskRecord(key, "job", "State", attempts)


def _ok(at: float, run: str) -> AttemptRecord:
    return AttemptRecord(job_run_id=run, status=AttemptStatus.SUCCEEDED, started_at=at, ended_at=at + 60)


def _record(status: ExecutionStatus, tasks: list[TaskRecord], **extra: object) -> ExecutionRecord:
    fields: dict[str, object] = {"input": {}, **extra}
    return ExecutionRecord(
        arn=ARN,
        name="nightly",
        state_machine_arn=ARN.replace(":execution:", ":stateMachine:").rsplit(":", 1)[0],
        status=status,
        started_at=1000.0,
        stopped_at=5000.0,
        error=None,
        cause=None,
        tasks={t.key: t for t in tasks},
        **fields,  # type: ignore[arg-type]
    )


def test_retries_failures_and_runs_still_going() -> None:
    spec = _spec()
    split1, split2 = StepKey("addressable-split-and-part"), StepKey("infobase-split-and-part")
    record = _record(
        ExecutionStatus.FAILED,
        [
            _task(
                split1,
                AttemptRecord("jr_1", AttemptStatus.FAILED, 1000.0, 1100.0, "FAILED", "Throttled", "slow down"),
                AttemptRecord("jr_2", AttemptStatus.FAILED, 1200.0, 1300.0, "FAILED", "SourceMissing", "no raw"),
            ),
            _task(split2, AttemptRecord("jr_3", AttemptStatus.RUNNING, 1000.0, glue_state="RUNNING", from_glue=True)),
        ],
    )
    events = execution_events(spec, "dev", record, 7)
    started = events[0]
    assert isinstance(started, RunStarted) and started.source == "sfn" and started.external_id == ARN
    state = fold(7, events)
    assert state.status is RunStatus.FAILED
    first = state.step(split1)
    assert (first.status, first.attempts, first.error_type, first.external_id) == (
        StepStatus.FAILED,
        2,
        "SourceMissing",
        "jr_2",
    )
    assert state.step(split2).status is StepStatus.INTERRUPTED  # the planner reruns it; Glue re-attaches
    assert state.step(split2).external_id == "jr_3"
    assert state.step(StepKey("prepare-part-tables")).status is StepStatus.NOT_STARTED

    decided = plan(spec, PlanRequest(mode=Mode.RESUME, source_run=7), PlanInputs(source=state))
    assert decided.keys(Action.REUSE) == ()
    assert len(decided.keys(Action.RUN)) == len(spec.keys)


def test_aborted_execution_and_skipped_keys_reuse_their_producers() -> None:
    spec = _spec()
    keys = spec.keys
    record = _record(
        ExecutionStatus.ABORTED,
        [_task(k, _ok(2000.0 + i, f"jr_{i}")) for i, k in enumerate(keys[3:5])],
        skipped=keys[:3],
        input={"skip": [str(k) for k in keys[:3]], "recovers": ARN + "-0"},
    )
    producers = {k: Provenance(produced_by=3, recorded_in=3, duration=3600.0) for k in keys[:2]}
    events = execution_events(spec, "dev", record, 9, reused=producers)
    assert isinstance(events[-1], RunInterrupted)
    reused = [e for e in events if isinstance(e, StepReused)]
    assert [e.key for e in reused] == list(keys[:2]) and {e.source_run for e in reused} == {3}
    state = execution_state(spec, "dev", record, reused=producers)
    assert state.status is RunStatus.INTERRUPTED
    assert state.step(keys[2]).status is StepStatus.SKIPPED  # skipped, and no run made it: not reusable
    assert state.step(keys[3]).status is StepStatus.SUCCEEDED
    assert record.recovers == ARN + "-0"
