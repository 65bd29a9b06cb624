"""What a redrive would restart, on state machines written by hand and their histories written by hand.

Expected results come from the documentation, not from the code under test:
- "Redriving executions in Step Functions"
  (https://docs.aws.amazon.com/step-functions/latest/dg/redrive-executions.html) and the RedriveExecution
  API reference (https://docs.aws.amazon.com/step-functions/latest/apireference/API_RedriveExecution.html):
  a redrive reruns the same definition from the unsuccessful states (those without a `...StateExited`
  event); in a `Parallel` or an inline `Map` only the branches and iterations that failed or aborted;
  the states that succeeded are not rerun.
- "GetExecutionHistory" and "HistoryEvent" (Step Functions API reference): the event shapes (`id`,
  `previousEventId`, `type`, `stateEnteredEventDetails.name`, `taskFailedEventDetails.error`, ...) and
  "ExecutionRedrivenEventDetails" (`redriveCount`) for an execution redriven before.
- "Handling errors in Step Functions workflows": a `Catch` that handles an error moves on to its `Next`
  state, so the task exits (`TaskStateExited`).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from flywheel.aws.redrive import redrive_scope

GLUE = "arn:aws:states:::glue:startJobRun.sync"
SNS = "arn:aws:states:::sns:publish"


class History:
    """Events as GetExecutionHistory returns them; each event follows the previous one unless `after`."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, kind: str, after: int | None = None, **details: Any) -> int:
        event_id = len(self.events) + 1
        previous = after if after is not None else (self.events[-1]["id"] if self.events else 0)
        event: dict[str, Any] = {
            "id": event_id,
            "previousEventId": previous,
            "type": kind,
            "timestamp": f"2026-01-01T02:00:{event_id:02d}Z",
        }
        if kind.endswith("StateEntered"):
            event["stateEnteredEventDetails"] = {"name": details.pop("name"), "input": "{}"}
        elif kind.endswith("StateExited"):
            event["stateExitedEventDetails"] = {"name": details.pop("name"), "output": "{}"}
        if details:
            event[kind[0].lower() + kind[1:] + "EventDetails"] = details
        self.events.append(event)
        return event_id

    def task(self, name: str, outcome: str = "succeeded", after: int | None = None, resource: str = GLUE) -> int:
        """A task state entered, its call scheduled and started, then `succeeded` (and exited), `failed`
        (no Exit: nothing caught it), `caught` (failed, then exited through a Catch) or `running`."""
        kind, _, action = resource.rpartition(":::")[2].partition(":")
        self.add("TaskStateEntered", after, name=name)
        self.add("TaskScheduled", resourceType=kind, resource=action, region="us-east-1", parameters="{}")
        self.add("TaskStarted", resourceType=kind, resource=action)
        if outcome == "running":
            return self.events[-1]["id"]
        if outcome == "succeeded":
            self.add("TaskSucceeded", resourceType=kind, resource=action, output="{}")
        else:
            self.add("TaskFailed", resourceType=kind, resource=action, error="States.TaskFailed", cause="{}")
        if outcome == "failed":
            return self.events[-1]["id"]
        return self.add("TaskStateExited", name=name)


def _glue(next_state: str | None = None, catch_to: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"Type": "Task", "Resource": GLUE, "Parameters": {"JobName": "job"}}
    if catch_to:
        state["Catch"] = [{"ErrorEquals": ["States.ALL"], "Next": catch_to}]
    state.update({"Next": next_state} if next_state else {"End": True})
    return state


CATCH_SNS_FAIL = {
    "StartAt": "Run Glue job",
    "States": {
        "Run Glue job": _glue("Done", catch_to="Notify failure"),
        "Notify failure": {"Type": "Task", "Resource": SNS, "Parameters": {}, "Next": "Pipeline failed"},
        "Pipeline failed": {"Type": "Fail", "Error": "GlueJobFailed"},
        "Done": {"Type": "Succeed"},
    },
}
TASK_CHAIN = {"StartAt": "Prepare", "States": {"Prepare": _glue("Report"), "Report": _glue()}}
PARALLEL = {
    "StartAt": "Split",
    "States": {
        "Split": {
            "Type": "Parallel",
            "Branches": [
                {"StartAt": "Split A", "States": {"Split A": _glue()}},
                {"StartAt": "Split B", "States": {"Split B": _glue()}},
            ],
            "Next": "Report",
        },
        "Report": _glue(),
    },
}


def test_a_catch_to_sns_then_fail_is_refused_naming_the_fail_state_and_the_task() -> None:
    history = History()
    history.add("ExecutionStarted")
    history.task("Run Glue job", "caught")
    history.task("Notify failure", resource=SNS)
    history.add("FailStateEntered", name="Pipeline failed")
    history.add("ExecutionFailed", error="GlueJobFailed")
    scope = redrive_scope(CATCH_SNS_FAIL, history.events)
    assert [(r.name, r.type) for r in scope.restarts] == [("Pipeline failed", "Fail")]
    assert not scope.reruns_failed_task
    assert scope.refusal is not None
    assert "Fail state Pipeline failed" in scope.refusal
    assert "Glue task Run Glue job (States.TaskFailed)" in scope.refusal


def test_a_plain_task_chain_redrives_the_failed_task_not_the_one_that_succeeded() -> None:
    history = History()
    history.add("ExecutionStarted")
    history.task("Prepare")
    history.task("Report", "failed")
    history.add("ExecutionFailed", error="States.TaskFailed")
    scope = redrive_scope(TASK_CHAIN, history.events)
    assert [(r.name, r.type, r.glue) for r in scope.restarts] == [("Report", "Task", True)]
    assert [f.name for f in scope.failed] == ["Report"]
    assert scope.reruns_failed_task and scope.refusal is None


def test_a_failed_alert_after_a_catch_would_rerun_the_alert_not_the_glue_task() -> None:
    history = History()
    history.add("ExecutionStarted")
    history.task("Run Glue job", "caught")
    history.task("Notify failure", "failed", resource=SNS)
    history.add("ExecutionFailed", error="SNS.AuthorizationErrorException")
    scope = redrive_scope(CATCH_SNS_FAIL, history.events)
    assert [(r.name, r.type, r.glue) for r in scope.restarts] == [("Notify failure", "Task", False)]
    assert scope.refusal is not None
    assert "Glue task Run Glue job (States.TaskFailed) failed and exited through its Catch" in scope.refusal
    assert "restarts from Task state Notify failure" in scope.refusal


def test_a_task_that_timed_out_without_a_catch_is_rerun() -> None:
    """ "Handling errors": a task past its `TimeoutSeconds` fails with `States.Timeout` (`TaskTimedOut`)."""
    history = History()
    history.add("ExecutionStarted")
    history.task("Prepare")
    history.add("TaskStateEntered", name="Report")
    history.add("TaskScheduled", resourceType="glue", resource="startJobRun.sync")
    history.add("TaskTimedOut", resourceType="glue", resource="startJobRun.sync", error="States.Timeout")
    history.add("ExecutionFailed", error="States.Timeout")
    scope = redrive_scope(TASK_CHAIN, history.events)
    assert [r.name for r in scope.restarts] == ["Report"]
    assert [(f.name, f.error, f.exited) for f in scope.failed] == [("Report", "States.Timeout", False)]
    assert scope.reruns_failed_task


def test_a_retry_that_succeeded_is_no_failure() -> None:
    history = History()
    history.add("ExecutionStarted")
    history.add("TaskStateEntered", name="Prepare")
    history.add("TaskScheduled", resourceType="glue", resource="startJobRun.sync")
    history.add("TaskFailed", resourceType="glue", resource="startJobRun.sync", error="Glue.ThrottlingException")
    history.add("TaskScheduled", resourceType="glue", resource="startJobRun.sync")
    history.add("TaskSucceeded", resourceType="glue", resource="startJobRun.sync", output="{}")
    history.add("TaskStateExited", name="Prepare")
    history.task("Report", "running")
    history.add("ExecutionTimedOut")
    scope = redrive_scope(TASK_CHAIN, history.events)
    assert scope.failed == ()
    assert [r.name for r in scope.restarts] == ["Report"] and scope.reruns_failed_task


def test_a_parallel_redrives_only_the_failed_branch_and_its_task() -> None:
    history = History()
    history.add("ExecutionStarted")
    history.add("ParallelStateEntered", name="Split")
    started = history.add("ParallelStateStarted")
    a = history.add("TaskStateEntered", started, name="Split A")
    b = history.add("TaskStateEntered", started, name="Split B")
    history.add("TaskScheduled", a, resourceType="glue", resource="startJobRun.sync")
    history.add("TaskScheduled", b, resourceType="glue", resource="startJobRun.sync")
    history.add("TaskSucceeded", 6, resourceType="glue", resource="startJobRun.sync", output="{}")
    history.add("TaskStateExited", name="Split A")
    failed = history.add("TaskFailed", 7, resourceType="glue", resource="startJobRun.sync", error="GlueJobFailed")
    history.add("ParallelStateFailed", failed)
    history.add("ExecutionFailed", error="GlueJobFailed")
    scope = redrive_scope(PARALLEL, history.events)
    assert [r.name for r in scope.restarts] == ["Split B"]  # not the Parallel itself, not the branch that succeeded
    assert scope.reruns_failed_task


def _exported_like() -> dict[str, Any]:
    """The shape `flywheel sfn export` gives a Parallel group, written out by hand: each branch catches its
    task's failure and ends with a marker, so the sibling finishes; the group fails after the Parallel."""
    branch = {
        "StartAt": "Split A",
        "States": {
            "Split A": _glue(catch_to="Split A_Failed"),
            "Split A_Failed": {"Type": "Pass", "Result": "failed", "End": True},
        },
    }
    return {
        "StartAt": "Split",
        "States": {
            "Split": {
                "Type": "Parallel",
                "Branches": [branch, {"StartAt": "Split B", "States": {"Split B": _glue()}}],
                "Next": "Join",
            },
            "Join": {
                "Type": "Choice",
                "Choices": [{"Variable": "$[0]", "StringEquals": "failed", "Next": "Split_Failed"}],
                "Default": "Report",
            },
            "Split_Failed": {"Type": "Fail", "Error": "flywheel.StepFailed"},
            "Report": _glue(),
        },
    }


def _branches_start(history: History) -> int:
    history.add("ExecutionStarted")
    history.add("ParallelStateEntered", name="Split")
    return history.add("ParallelStateStarted")


def test_a_branch_that_caught_its_failure_is_not_rerun_the_fail_after_the_parallel_is() -> None:
    history = History()
    started = _branches_start(history)
    history.task("Split A", "caught", after=started)
    history.add("PassStateEntered", name="Split A_Failed")
    history.add("PassStateExited", name="Split A_Failed")
    history.task("Split B", after=started)
    history.add("ParallelStateSucceeded")
    history.add("ParallelStateExited", name="Split")
    history.add("ChoiceStateEntered", name="Join")
    history.add("ChoiceStateExited", name="Join")
    history.add("FailStateEntered", name="Split_Failed")
    history.add("ExecutionFailed", error="flywheel.StepFailed")
    scope = redrive_scope(_exported_like(), history.events)
    assert [(r.name, r.type) for r in scope.restarts] == [("Split_Failed", "Fail")]
    assert scope.refusal is not None and "Glue task Split A" in scope.refusal


def test_an_abort_while_a_sibling_ran_would_rerun_the_sibling_not_the_branch_that_failed() -> None:
    history = History()
    started = _branches_start(history)
    history.task("Split A", "caught", after=started)
    history.add("PassStateEntered", name="Split A_Failed")
    history.add("PassStateExited", name="Split A_Failed")
    history.task("Split B", "running", after=started)
    history.add("ExecutionAborted", error="Operator")
    scope = redrive_scope(_exported_like(), history.events)
    assert [r.name for r in scope.restarts] == ["Split B"]
    assert scope.refusal is not None
    assert scope.refusal.startswith("Glue task Split A (States.TaskFailed) failed and exited through its Catch")
    assert "restarts from Glue task Split B" in scope.refusal


def test_an_aborted_task_chain_redrives_the_task_that_was_running() -> None:
    history = History()
    history.add("ExecutionStarted")
    history.task("Prepare", "running")
    history.add("ExecutionAborted", error="Operator")
    scope = redrive_scope(TASK_CHAIN, history.events)
    assert [r.name for r in scope.restarts] == ["Prepare"] and scope.reruns_failed_task


@pytest.mark.parametrize("second", ["failed", "succeeded"])
def test_after_a_redrive_only_what_is_still_unfinished_counts(second: str) -> None:
    """ExecutionRedrivenEventDetails: the redriven states are entered again in the same history."""
    history = History()
    history.add("ExecutionStarted")
    history.task("Prepare", "failed")
    history.add("ExecutionFailed", error="States.TaskFailed")
    history.add("ExecutionRedriven", redriveCount=1)
    history.task("Prepare", second)
    if second == "succeeded":
        history.task("Report", "failed")
    history.add("ExecutionFailed", error="States.TaskFailed")
    scope = redrive_scope(TASK_CHAIN, history.events)
    expected = ["Prepare"] if second == "failed" else ["Report"]
    assert [r.name for r in scope.restarts] == expected
    assert [f.name for f in scope.failed] == expected
    assert scope.reruns_failed_task


def test_an_inline_map_redrives_the_failed_iteration_once() -> None:
    definition = {
        "StartAt": "Per table",
        "States": {
            "Per table": {
                "Type": "Map",
                "ItemProcessor": {"StartAt": "Register", "States": {"Register": _glue()}},
                "End": True,
            }
        },
    }
    history = History()
    history.add("ExecutionStarted")
    history.add("MapStateEntered", name="Per table")
    started = history.add("MapStateStarted", length=2)
    first = history.add("MapIterationStarted", started, name="Per table", index=0)
    second = history.add("MapIterationStarted", started, name="Per table", index=1)
    history.task("Register", after=first)
    history.add("MapIterationSucceeded", name="Per table", index=0)
    history.task("Register", "failed", after=second)
    history.add("MapIterationFailed", name="Per table", index=1)
    history.add("MapStateFailed")
    history.add("ExecutionFailed", error="States.TaskFailed")
    scope = redrive_scope(definition, history.events)
    assert [(r.name, r.type) for r in scope.restarts] == [("Register", "Task")]
    assert scope.reruns_failed_task


def test_a_runtime_error_outside_any_task_is_refused() -> None:
    definition = {
        "StartAt": "Pick date",
        "States": {"Pick date": {"Type": "Pass", "InputPath": "$.missing", "Next": "Prepare"}, "Prepare": _glue()},
    }
    history = History()
    history.add("ExecutionStarted")
    history.add("PassStateEntered", name="Pick date")
    history.add("ExecutionFailed", error="States.Runtime")
    scope = redrive_scope(definition, history.events)
    assert [(r.name, r.type) for r in scope.restarts] == [("Pick date", "Pass")]
    assert scope.refusal is not None and "no task runs" in scope.refusal


def test_a_definition_as_json_text_reads_as_the_dict() -> None:
    history = History()
    history.add("ExecutionStarted")
    history.task("Prepare", "failed")
    history.add("ExecutionFailed")
    assert redrive_scope(json.dumps(TASK_CHAIN), history.events) == redrive_scope(TASK_CHAIN, history.events)
