"""Executions of state machines built by hand, read right: the corpus under `tests/aws/histories/cases/`.

Seven hand-written machines (`tests/aws/histories/machines.py`: console state names, the optimized and
the AWS SDK integrations, request-response, `.sync` and `.waitForTaskToken`, Parallel and Map contexts,
nested Parallel, Retry, Catch -> SNS -> Fail, a task timeout, an abort) were run in moto's Step
Functions interpreter with a fault injected at every step and context (`generate.py`). Each case file
holds the saved `describe-execution` and `get-execution-history --output json`, the Glue runs as
`get-job-run` answered them, and an `expected` block written from the fault and the topology.

Every case is read twice: with Glue's answers (as `flywheel sfn status` does with credentials) and
offline from the saved files alone (`--history`), through the real CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from flywheel import api
from flywheel.aws.sfn import AttemptStatus, execution_state, read_history
from flywheel.planner import Action, Mode, PlanInputs, PlanRequest, plan
from flywheel.spec import StepKey
from flywheel.state import StepStatus

CASES = sorted((Path(__file__).parent / "histories" / "cases").glob("*.json"))
REPO = Path(__file__).resolve().parents[2]
SPEC = api.open_session("db-refresh", "dev", "/nonexistent-home").spec


class RecordedGlue:
    """Glue's `GetJobRun` answers, as recorded from moto when the case was generated (times as the
    CLI saves them, ISO 8601). A run Glue no longer knows raises `EntityNotFoundException` as Glue does
    past its retention."""

    def __init__(self, runs: dict[str, dict[str, Any]]) -> None:
        self.runs = runs

    def get_job_run(self, JobName: str, RunId: str) -> dict[str, Any]:
        run = self.runs.get(RunId)
        if run is None or run.get("JobName") != JobName:
            error = {"Error": {"Code": "EntityNotFoundException", "Message": f"Job run {RunId} not found"}}
            raise ClientError(error, "GetJobRun")  # type: ignore[arg-type]
        return {"JobRun": {k: _time(v) if k.endswith("On") else v for k, v in run.items()}}


def _time(value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def load(path: Path) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(path.read_text())
    return body


def statuses(case: dict[str, Any], glue: Any) -> dict[str, str]:
    record = read_history(case["history"]["events"], case["describe"], spec=SPEC, env_name="dev", glue=glue)
    out = {}
    for key in SPEC.keys:
        task = record.tasks.get(key)
        if task is None:
            out[str(key)] = "not_run"
        else:
            out[str(key)] = {
                AttemptStatus.SUCCEEDED: "succeeded",
                AttemptStatus.FAILED: "failed",
                AttemptStatus.RUNNING: "running",
                AttemptStatus.UNKNOWN: "unknown",
            }[task.last.status]
    return out


def expected_statuses(case: dict[str, Any]) -> dict[str, str]:
    return {key: status for status in ("succeeded", "failed", "running", "not_run") for key in case["expected"][status]}


def test_the_corpus_covers_every_machine_and_every_step() -> None:
    cases = [load(p) for p in CASES]
    assert len(cases) >= 42
    assert {c["machine"] for c in cases} == {
        "console-sdk-polling",
        "console-sync-map-catch",
        "console-callback-sdk",
        "console-request-response-timeout",
        "console-sdk-nested-parallel",
        "console-sdk-nested-parallel-timeout",
        "console-sdk-heartbeat",
        "handwritten-optimized-callback",  # moto cannot run it: see tests/aws/histories/handwritten.py
    }
    failed_somewhere = {k for c in cases for k in c["expected"]["failed"] + c["expected"]["running"]}
    assert failed_somewhere == {str(k) for k in SPEC.keys}  # a fault at every step and context


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_each_step_and_context_is_read_as_the_fault_left_it(path: Path) -> None:
    case = load(path)
    assert statuses(case, RecordedGlue(case["glue_runs"])) == expected_statuses(case)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_the_recovery_reruns_exactly_the_failed_running_and_never_run_keys(path: Path) -> None:
    case = load(path)
    record = read_history(
        case["history"]["events"], case["describe"], spec=SPEC, env_name="dev", glue=RecordedGlue(case["glue_runs"])
    )
    state = execution_state(SPEC, "dev", record)
    decided = plan(SPEC, PlanRequest(mode=Mode.RESUME, source_run=0), PlanInputs(source=state))
    assert [str(k) for k in decided.keys(Action.RUN)] == case["expected"]["rerun"]
    for key in case["expected"]["succeeded"]:
        assert state.step(StepKey.parse(key)).status is StepStatus.SUCCEEDED


def test_a_request_response_start_is_judged_by_its_glue_run_not_by_the_task() -> None:
    """`glue:startJobRun` returns as soon as the job started (AWS docs, "Request Response" in Service
    integration patterns): the task succeeded, the run failed, and the step is failed."""
    case = load(next(p for p in CASES if "started-but-failed-in-glue-addressable" in p.name))
    record = read_history(
        case["history"]["events"], case["describe"], spec=SPEC, env_name="dev", glue=RecordedGlue(case["glue_runs"])
    )
    attempt = record.tasks[StepKey("addressable-split-and-part")].last
    assert (attempt.task_outcome, attempt.status, attempt.evidence) == ("succeeded", AttemptStatus.FAILED, "glue")
    assert attempt.integration == "request-response" and attempt.job_run_id in case["glue_runs"]


def test_without_glue_a_request_response_success_proves_nothing_and_says_so() -> None:
    case = load(next(p for p in CASES if "started-but-failed-in-glue-addressable" in p.name))
    record = read_history(case["history"]["events"], case["describe"], spec=SPEC, env_name="dev", glue=None)
    attempt = record.tasks[StepKey("addressable-split-and-part")].last
    assert attempt.status is AttemptStatus.UNKNOWN and attempt.evidence == "history only: Glue was not asked"
    past_retention = read_history(case["history"]["events"], case["describe"], spec=SPEC, env_name="dev",
                                  glue=RecordedGlue({}))  # fmt: skip
    forgotten = past_retention.tasks[StepKey("addressable-split-and-part")].last
    assert forgotten.evidence.startswith("history only: Glue no longer knows run jr_")


def test_an_sns_alert_after_a_catch_does_not_replace_the_glue_error() -> None:
    case = load(
        next(p for p in CASES if p.name == "console-sync-map-catch--fails-at-create-part-addressable-ids-er-table.json")
    )
    record = read_history(case["history"]["events"], case["describe"], spec=SPEC, env_name="dev", glue=None)
    failed = record.tasks[StepKey("create-part-addressable-ids-er-table")].last
    assert failed.error_type == "InjectedFault" and "SNS" not in (failed.error_message or "")
    assert "NotifyFailure" in record.not_in_pipeline


def offline_cli(case: dict[str, Any], tmp_path: Path, command: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`flywheel sfn COMMAND --history ... --describe ... --json` in a subprocess with no AWS
    credentials or configuration at all: what an on-call engineer saved, read on a laptop."""
    history = tmp_path / "history.json"
    history.write_text(json.dumps(case["history"]))
    described = tmp_path / "describe.json"
    described.write_text(json.dumps(case["describe"]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        PYTHONPATH=str(REPO), NO_COLOR="1", AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent"
    )
    argv = [sys.executable, "-m", "flywheel", "sfn", command, "--env", "dev", "--history", str(history),
            "--describe", str(described), "--json", "--home", str(tmp_path / "home"), *extra]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.e2e  # a flywheel process per case
@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_sfn_status_reads_a_saved_history_offline(path: Path, tmp_path: Path) -> None:
    """What an on-call engineer saved with `aws stepfunctions get-execution-history --output json` and
    `describe-execution`, read on a laptop with no AWS access at all."""
    case = load(path)
    result = offline_cli(case, tmp_path, "status")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["glue_asked"] is False
    shown = {s["key"]: s["attempt_status"] for s in body["steps"]}
    assert shown == statuses(case, None)
    for key, expected in expected_statuses(case).items():  # the history alone may not know; it never lies
        assert shown[key] in (expected, "unknown"), (key, expected, shown[key])
        if case["expected"]["failed"] == [key] and not case["note"]:  # a fault the history records itself
            assert shown[key] == "failed", key
    for step in body["steps"]:
        if step["attempt_status"] != "not_run" and not step["evidence"].startswith("history ("):
            assert step["evidence"] == "history only: Glue was not asked", step


def test_a_polling_loop_in_the_history_tells_the_run_state_offline() -> None:
    """A console machine that polls with `aws-sdk:glue:getJobRun` (AWS docs, "Call AWS services from
    Step Functions": the SDK task's output is the API response, `{"JobRun": {...}}`) records the run's
    state in its own history: offline, the failed run reads failed, not unknown, and the polls are not
    listed as tasks outside the pipeline."""
    case = load(next(p for p in CASES if p.name == "console-sdk-polling--fails-at-prepare-part-tables.json"))
    record = read_history(case["history"]["events"], case["describe"], spec=SPEC, env_name="dev", glue=None)
    attempt = record.tasks[StepKey("prepare-part-tables")].last
    assert attempt.status is AttemptStatus.FAILED and attempt.error_type == "InjectedFault"
    assert attempt.evidence == "history (the machine's GetJobRun said FAILED)"
    assert not [name for name in record.not_in_pipeline if name.endswith("_Check")]


def test_a_heartbeat_timeout_leaves_the_step_running_in_glue_not_failed() -> None:
    """`HeartbeatSeconds` ran out (AWS docs, "Task workflow state": the task fails with
    `States.HeartbeatTimeout`; moto says `States.Timeout`) while the Glue run went on: with Glue the
    step is running (re-attach, never a second run); offline it is unknown, never succeeded."""
    case = load(next(p for p in CASES if "er-table-stops-beating" in p.name))
    key = StepKey("create-part-addressable-ids-er-table")
    live = read_history(
        case["history"]["events"], case["describe"], spec=SPEC, env_name="dev", glue=RecordedGlue(case["glue_runs"])
    )
    assert live.tasks[key].last.status is AttemptStatus.RUNNING and live.tasks[key].last.task_outcome == "timed out"
    assert [t.key for t in live.still_running] == [key]
    offline = read_history(case["history"]["events"], case["describe"], spec=SPEC, env_name="dev", glue=None)
    assert offline.tasks[key].last.status is AttemptStatus.UNKNOWN


def test_hand_written_optimized_callback_histories_read_as_the_docs_describe_them() -> None:
    """moto cannot run `arn:aws:states:::glue:startJobRun.waitForTaskToken`; these histories follow the
    Step Functions API reference ("HistoryEvent", "TaskScheduledEventDetails", "TaskTimedOutEventDetails")
    and "Error handling in Step Functions" (`States.HeartbeatTimeout`); see histories/handwritten.py.
    A heartbeat that ran out leaves the step running in Glue; a run STOPPING after an abort is ending,
    not running (the Glue executor's own rule), so the recovery reruns it."""
    beat = load(next(p for p in CASES if p.name.startswith("handwritten-optimized-callback--er-table-heartbeat")))
    record = read_history(
        beat["history"]["events"], beat["describe"], spec=SPEC, env_name="dev", glue=RecordedGlue(beat["glue_runs"])
    )
    attempt = record.tasks[StepKey("create-part-addressable-ids-er-table")].last
    assert (attempt.integration, attempt.task_outcome, attempt.status) == (
        "callback",
        "timed out",
        AttemptStatus.RUNNING,
    )
    offline = read_history(beat["history"]["events"], beat["describe"], spec=SPEC, env_name="dev", glue=None)
    unknown = offline.tasks[StepKey("create-part-addressable-ids-er-table")].last
    assert (unknown.status, unknown.error_type) == (AttemptStatus.UNKNOWN, "States.HeartbeatTimeout")
    aborted = load(next(p for p in CASES if p.name.startswith("handwritten-optimized-callback--aborted")))
    record = read_history(
        aborted["history"]["events"],
        aborted["describe"],
        spec=SPEC,
        env_name="dev",
        glue=RecordedGlue(aborted["glue_runs"]),
    )
    stopping = record.tasks[StepKey("prepare-part-tables")].last
    assert (stopping.glue_state, stopping.status) == ("STOPPING", AttemptStatus.FAILED)
    assert record.still_running == ()


RECOVERY_SAMPLE = [
    "console-sync-map-catch--fails-at-register-part-tables[infobase_attributes]",
    "console-sdk-polling--fails-at-prepare-part-tables",
    "console-callback-sdk--fails-at-create-part-addressable-ids-er-table",
    "console-sdk-heartbeat--er-table-stops-beating-while-its-run-goes-on",
    "console-sync-map-catch--aborted-while-infobase-split-runs",
    "handwritten-optimized-callback--split-infobase-fails-in-the-parallel",
]


@pytest.mark.e2e  # a flywheel process per case
@pytest.mark.parametrize("name", RECOVERY_SAMPLE)
def test_sfn_recover_previews_the_plan_of_a_saved_history(name: str, tmp_path: Path) -> None:
    """`flywheel sfn recover --history FILE --dry-run --json`: cases whose facts the history holds by
    itself (a `.sync` run, a callback failure, a polling loop, a task cut off while its run went on)
    plan exactly the expected reruns without asking Glue; nothing is journaled."""
    case = load(next(p for p in CASES if p.stem == name))
    result = offline_cli(case, tmp_path, "recover", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["to_run"] == case["expected"]["rerun"]
    assert not list((tmp_path / "home").rglob("*.sqlite*"))


@pytest.mark.e2e
def test_sfn_recover_with_a_saved_history_only_previews(tmp_path: Path) -> None:
    case = load(CASES[0])
    result = offline_cli(case, tmp_path, "recover")
    assert result.returncode == 2
    assert "--dry-run" in result.stderr and "Traceback" not in result.stderr


def test_a_distributed_map_says_its_iterations_are_elsewhere() -> None:
    """A distributed Map runs its iterations as child executions: the parent history holds only
    `MapRunStarted` with the map run's ARN (Step Functions API reference, "MapRunStartedEventDetails";
    developer guide, "Using Map state in Distributed mode"). Its steps are not guessed: a warning names
    the state and the map run."""
    events = [
        {"id": 1, "type": "ExecutionStarted", "timestamp": "2026-12-01T02:00:00+00:00",
         "executionStartedEventDetails": {"input": "{}", "stateMachineArn": "arn:aws:states:us-east-1:1:m"}},
        {"id": 2, "previousEventId": 1, "type": "MapStateEntered", "timestamp": "2026-12-01T02:00:01+00:00",
         "stateEnteredEventDetails": {"name": "Step2_RegisterPartTables", "input": "{}"}},
        {"id": 3, "previousEventId": 2, "type": "MapStateStarted", "timestamp": "2026-12-01T02:00:01+00:00",
         "mapStateStartedEventDetails": {"length": 2}},
        {"id": 4, "previousEventId": 3, "type": "MapRunStarted", "timestamp": "2026-12-01T02:00:02+00:00",
         "mapRunStartedEventDetails": {"mapRunArn": "arn:aws:states:us-east-1:1:mapRun:m/Step2:abc"}},
    ]  # fmt: skip
    record = read_history(events, None, spec=SPEC, env_name="dev", glue=None)
    assert record.tasks == {} and record.status.value == "RUNNING"
    (warning,) = record.warnings
    assert "Step2_RegisterPartTables" in warning and "mapRun:m/Step2:abc" in warning
