"""The Step Functions export: golden files for db-refresh, and the generic grouping rules on tiny specs.

Regenerate the golden files after an intended change with `FLYWHEEL_UPDATE_GOLDEN=1 pytest tests/aws`,
then read the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flywheel.aws.asl import GLUE_TIMEOUT_MARGIN_SECONDS, SKIP_FLAGS, export_asl, placements, to_json
from flywheel.errors import DefinitionError
from flywheel.spec import EnvironmentSpec, PipelineSpec, StepKey, load_project

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("FLYWHEEL_UPDATE_GOLDEN") == "1"


def _tasks(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every Glue task state of a definition, branches included."""
    out: dict[str, dict[str, Any]] = {}
    for name, state in definition["States"].items():
        if state.get("Resource", "").startswith("arn:aws:states:::glue:"):
            out[name] = state
        for branch in state.get("Branches", ()):
            out.update(_tasks(branch))
    return out


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_db_refresh_matches_golden_file(env_name: str) -> None:
    project = load_project("db-refresh")
    text = to_json(export_asl(project.spec, env_name, project.config.environment(env_name)))
    golden = GOLDEN / f"db-refresh-{env_name}.asl.json"
    if UPDATE:
        golden.write_text(text)
    assert golden.exists(), f"missing {golden}: run with FLYWHEEL_UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"{golden.name} differs: regenerate with FLYWHEEL_UPDATE_GOLDEN=1 and review"


def test_db_refresh_shape_follows_the_runbook() -> None:
    project = load_project("db-refresh")
    definition = export_asl(project.spec, "dev", project.config.environment("dev"))
    states = definition["States"]
    step1 = states["Step1_ParallelSplitJobs"]
    assert step1["Type"] == "Parallel"
    assert [len(b["States"]) for b in step1["Branches"]] == [5, 5]  # check, task, notify, failed, skipped
    step2 = states["Step2_RegisterPartTables"]
    assert step2["Type"] == "Parallel" and len(step2["Branches"]) == 2
    for name in ("Step3_PreparePartTables", "Step4_CreateERTable", "Step5_DataMonitorReport", "Step6_CleanroomsReport"):
        assert states[name]["Type"] == "Task"
        assert states[f"{name}_Check"]["Type"] == "Choice"
        # redrivable: the task's error fails the execution in the task, which a redrive reruns ("Redriving
        # executions": it restarts the states without an Exited event); the EventBridge rule alerts
        assert "Catch" not in states[name], name
        assert f"{name}_Notify" not in states and f"{name}_Failed" not in states
    tasks = _tasks(definition)
    assert len(tasks) == 8
    task = tasks["Step2_RegisterPartTables_infobase_attributes"]
    assert task["Parameters"]["JobName"] == "omc-flywheel-dev-register-part-tables"
    args = task["Parameters"]["Arguments"]
    assert args["--flywheel_step"] == "register-part-tables"
    assert args["--flywheel_context"] == "infobase_attributes"
    assert args["--flywheel_env"] == "dev"
    assert args["--flywheel_execution.$"] == "$$.Execution.Id"
    assert json.loads(args["--flywheel_params"])["table"] == "infobase_attributes"
    assert task["Parameters"]["Timeout"] == 30  # the step allows 1800 s
    assert task["TimeoutSeconds"] == 1800 + GLUE_TIMEOUT_MARGIN_SECONDS
    assert task["Catch"][0]["Next"] == "Step2_RegisterPartTables_infobase_attributes_Notify"
    notify = next(b for b in step2["Branches"] if "infobase" in b["StartAt"])["States"][
        "Step2_RegisterPartTables_infobase_attributes_Notify"
    ]
    assert "flywheel sfn recover {} --env dev" in notify["Parameters"]["Message.$"]
    assert notify["Next"] == "Step2_RegisterPartTables_infobase_attributes_Failed"


def _spec(steps: list[dict[str, Any]]) -> PipelineSpec:
    return PipelineSpec.model_validate({"pipeline": "tiny", "steps": steps})


def _step(step_id: str, number: int, deps: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "number": number, "title": step_id, "job": "m:f", "depends_on": deps or [], **extra}


def test_generic_grouping_fan_out_then_join() -> None:
    spec = _spec(
        [
            _step("a", 1, cloud={"state": "Both"}),
            _step("b", 2, cloud={"state": "Both"}),
            _step("c", 3, ["a", "b"], contexts={"x": {}, "y": {}}),
            _step("d", 4, ["c"], retry={"attempts": 3, "backoff_seconds": 5}),
        ]
    )
    definition = export_asl(spec, "dev", EnvironmentSpec())
    states = definition["States"]
    assert states["ComputeSkipFlags"]["Next"] == "Both"
    assert states["Both"]["Next"] == "Both_Outcome"
    assert states["Both_Join"]["Default"] == "Step3_C"  # a failed branch goes to Both_Failed instead
    assert [b["StartAt"] for b in states["Step3_C"]["Branches"]] == ["Step3_C_x_Check", "Step3_C_y_Check"]
    assert states["Step3_C_Join"]["Default"] == "Step4_D_Check"
    assert states["Step4_D"]["Next"] == "Done"
    assert states["Step4_D_Check"]["Choices"][0]["Next"] == "Done"  # skipping the last step ends the run
    retry = states["Step4_D"]["Retry"][-1]
    assert retry == {
        "ErrorEquals": ["States.TaskFailed"],
        "IntervalSeconds": 5,
        "MaxAttempts": 2,
        "BackoffRate": 2.0,
        "JitterStrategy": "FULL",
    }
    # a task of its own fails the execution itself (redrivable); a branch task catches, to spare its siblings
    assert "Catch" not in states["Step4_D"] and "Step4_D_Failed" not in states
    x_branch = states["Step3_C"]["Branches"][0]["States"]
    assert x_branch["Step3_C_x"]["Catch"][0]["Next"] == "Step3_C_x_Failed"  # no SNS topic: no _Notify
    assert "Step3_C_x_Notify" not in x_branch
    branch = states["Step3_C"]["Branches"][1]["States"]
    assert branch["Step3_C_y_Check"]["Choices"][0] == {
        "Or": [
            {"Variable": f"$.{SKIP_FLAGS}.c", "BooleanEquals": True},
            {"Variable": f"$.{SKIP_FLAGS}.c__y", "BooleanEquals": True},
        ],
        "Next": "Step3_C_y_Skipped",
    }
    assert [p.key for p in placements(spec, "dev")] == [
        StepKey("a"),
        StepKey("b"),
        StepKey("c", "x"),
        StepKey("c", "y"),
        StepKey("d"),
    ]


def test_dependent_steps_cannot_share_a_state() -> None:
    spec = _spec([_step("a", 1, cloud={"state": "S"}), _step("b", 2, ["a"], cloud={"state": "S"})])
    with pytest.raises(DefinitionError) as caught:
        export_asl(spec, "dev", EnvironmentSpec())
    assert "both are in state S" in caught.value.details[0]


def test_shell_steps_cannot_be_exported() -> None:
    spec = _spec([{"id": "a", "number": 1, "title": "a", "command": "true"}])
    with pytest.raises(DefinitionError, match="cannot be exported"):
        export_asl(spec, "dev", EnvironmentSpec())


def test_export_is_pure_and_does_not_import_boto3() -> None:
    code = (
        "import sys; from flywheel.spec import load_project; from flywheel.aws.asl import export_asl; "
        "p = load_project('db-refresh'); export_asl(p.spec, 'dev', p.config.environment('dev')); "
        "print('boto3' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
