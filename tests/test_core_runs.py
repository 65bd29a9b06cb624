"""Real tiny pipelines, real subprocesses, a real journal: fail, resume, and nothing finished runs twice.

Each step records its execution in a file and writes an output hashed from its inputs' outputs, so a
resumed run must end with exactly the outputs of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from flywheel import api
from flywheel.fingerprints import OutputFingerprinter
from flywheel.planner import Mode, PlanRequest
from flywheel.spec import StepKey
from flywheel.state import RunStatus, StepStatus
from tests.conftest import REPO, SHAPES, Sandbox, step

pytestmark = pytest.mark.e2e

FAILURE_POINTS = {
    "linear": ["b"],
    "diamond": ["c", "d"],
    "parallel-pair": ["b"],
    "fan-out": ["b[y]"],
    "fan-out-join": ["c[x]", "d"],
}


def reference_outputs(tmp_path: Path, shape: str) -> dict[str, str]:
    """What an uninterrupted run produces (the oracle), in a separate home."""
    other = Sandbox(root=tmp_path / "ref-project", home=tmp_path / "ref-home")
    other.root.mkdir()
    other.write(SHAPES[shape])
    session = api.open_session(str(other.pipeline), home=other.home)
    result = api.execute(session, PlanRequest())
    assert result.state.status is RunStatus.SUCCEEDED
    return other.outputs()


@pytest.mark.parametrize(("shape", "failing"), [(shape, key) for shape, keys in FAILURE_POINTS.items() for key in keys])
def test_resume_after_a_failure_finishes_the_run_without_rerunning_finished_work(
    sandbox: Sandbox, tmp_path: Path, shape: str, failing: str
) -> None:
    sandbox.write(SHAPES[shape])
    session = api.open_session(str(sandbox.pipeline))
    sandbox.fail(failing, "the source file is missing")

    first = api.execute(session, PlanRequest())
    assert first.state.status is RunStatus.FAILED
    failed = [str(k) for k in first.state.failed_keys]
    assert failed == [failing]
    finished_first = {str(k) for k, s in first.state.steps.items() if s.status is StepStatus.SUCCEEDED}

    sandbox.fix(failing)
    second = api.execute(session, PlanRequest(mode=Mode.RESUME))
    assert second.state.status is RunStatus.SUCCEEDED
    assert second.state.started is not None and second.state.started.parent_run == first.run_id

    rerun = set(sandbox.executed_in(second.run_id))
    assert not (rerun & finished_first), "a step that had succeeded ran again"
    assert failing in rerun
    assert {str(k) for k in session.spec.keys} == finished_first | rerun
    assert sandbox.outputs() == reference_outputs(tmp_path, shape)


def test_a_resume_of_a_resume_still_knows_where_outputs_came_from(sandbox: Sandbox) -> None:
    sandbox.write(SHAPES["fan-out-join"])
    session = api.open_session(str(sandbox.pipeline))
    sandbox.fail("c[y]")
    first = api.execute(session, PlanRequest())
    sandbox.fix("c[y]")
    sandbox.fail("e")
    second = api.execute(session, PlanRequest(mode=Mode.RESUME))
    sandbox.fix("e")
    third = api.execute(session, PlanRequest(mode=Mode.RESUME))

    assert third.state.status is RunStatus.SUCCEEDED
    produced = {str(k): s.produced_by for k, s in third.state.steps.items()}
    assert produced == {
        "a": first.run_id,
        "b": first.run_id,
        "c[x]": first.run_id,
        "c[y]": second.run_id,
        "d": second.run_id,
        "e": third.run_id,
    }
    assert third.state.started is not None
    assert third.state.started.root_run == first.run_id and third.state.started.parent_run == second.run_id


def test_retries_with_backoff_then_success(sandbox: Sandbox) -> None:
    flaky = step("a", 1, retry={"attempts": 3, "backoff_seconds": 0.05, "jitter": 0})
    flaky["command"] = (
        'n=$(cat "$FLYWHEEL_HOME/n" 2>/dev/null || echo 0); echo $((n+1)) > "$FLYWHEEL_HOME/n"; [ $n -ge 2 ]'
    )
    del flaky["job"]
    sandbox.write([flaky])
    result = api.execute(api.open_session(str(sandbox.pipeline)), PlanRequest())
    assert result.state.status is RunStatus.SUCCEEDED
    assert result.state.step(result.planned.plan.decisions[0].key).attempts == 3


def test_a_step_that_times_out_fails_and_leaves_no_process_behind(sandbox: Sandbox) -> None:
    slow = step("a", 1, timeout=0.5)
    slow["command"] = 'echo $$ > "$FLYWHEEL_HOME/pid"; sleep 30'
    del slow["job"]
    sandbox.write([slow])
    started = time.monotonic()
    result = api.execute(api.open_session(str(sandbox.pipeline)), PlanRequest())
    assert time.monotonic() - started < 15
    a = result.state.step(result.planned.plan.decisions[0].key)
    assert a.status is StepStatus.FAILED and a.error_type == "Timeout"
    pid = int((sandbox.home / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_step_that_crashes_or_is_killed_is_a_failed_step_not_a_dead_runner(sandbox: Sandbox) -> None:
    killed = step("a", 1)
    killed["command"] = "kill -9 $$"
    del killed["job"]
    crashed = step("b", 2)
    crashed["command"] = "exit 7"
    del crashed["job"]
    sandbox.write([killed, crashed])
    result = api.execute(api.open_session(str(sandbox.pipeline)), PlanRequest())
    a, b = (result.state.step(d.key) for d in result.planned.plan.decisions)
    assert (a.status, a.error_type, a.exit_code) == (StepStatus.FAILED, "Killed", -9)
    assert "SIGKILL" in (a.error_message or "")
    assert (b.status, b.exit_code) == (StepStatus.FAILED, 7)


def test_independent_work_goes_on_when_a_branch_fails(sandbox: Sandbox) -> None:
    sandbox.write(SHAPES["diamond"])
    sandbox.fail("b")
    result = api.execute(api.open_session(str(sandbox.pipeline)), PlanRequest())
    statuses = {str(k): s.status.value for k, s in result.state.steps.items()}
    assert statuses == {"a": "succeeded", "b": "failed", "c": "succeeded"}
    assert "d" not in sandbox.executed_in(result.run_id)


class FailingAround(OutputFingerprinter):
    """The default fingerprinter, except that it fails on the steps named: as reading a job's code or
    checking its outputs does when a disk or a bucket fails under it."""

    def __init__(self, session: api.Session, *, prepare: str = "", record: str = "") -> None:
        env = session.project.config.environment(session.env_name)
        super().__init__(session.spec, session.env_name, env, session.home)
        self.prepare, self.record = prepare, record

    def step_fingerprint(self, key: StepKey, params: Mapping[str, Any]) -> str | None:
        if key.step == self.prepare:
            raise OSError(f"cannot read the code of {key}")
        return super().step_fingerprint(key, params)

    def output_records(
        self, key: StepKey, declared: Sequence[str], reported: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
    ) -> tuple[Mapping[str, Any], ...]:
        if key.step == self.record:
            raise OSError(f"cannot read the outputs of {key}")
        return super().output_records(key, declared, reported, params)


def test_when_flywheel_fails_around_a_step_that_step_fails_and_a_resume_finishes_the_run(sandbox: Sandbox) -> None:
    sandbox.write(SHAPES["diamond"])
    session = api.open_session(str(sandbox.pipeline))

    first = api.execute(
        session, PlanRequest(), api.RunOptions(fingerprinter=FailingAround(session, prepare="b", record="c"))
    )

    b, c, d = (first.state.step(StepKey(k)) for k in "bcd")
    assert first.state.status is RunStatus.FAILED
    assert (b.status, b.error_type) == (StepStatus.FAILED, "RecordingError")
    assert b.error_message is not None and "could not prepare this step: OSError: cannot read the code of b" in (
        b.error_message
    )
    assert "b" not in sandbox.executed_in(first.run_id), "a step that could not be prepared does not run"
    assert (c.status, c.error_type) == (StepStatus.FAILED, "RecordingError")
    assert c.error_message is not None and "could not record the outputs of this step (it finished)" in (
        c.error_message
    )
    assert d.status is StepStatus.NOT_STARTED, "nothing runs downstream of a step that failed"

    resumed = api.execute(api.open_session(str(sandbox.pipeline)), PlanRequest(mode=Mode.RESUME))

    assert resumed.state.status is RunStatus.SUCCEEDED
    assert sorted(sandbox.executed_in(resumed.run_id)) == ["b", "c", "d"]


# -- the CLI, in a subprocess, as an operator types it -------------------------------------------


def test_operator_story_fail_status_dry_run_resume(sandbox: Sandbox) -> None:
    sandbox.write(SHAPES["fan-out-join"])
    sandbox.fail("d", "SchemaMappingError: invalid match key type EMAIL")

    run = sandbox.cli("run", "pipeline.yaml")
    assert run.returncode == 1, run.stderr
    status = sandbox.cli("status", "-p", "pipeline.yaml")
    assert status.returncode == 0
    assert "❌" in status.stdout and "invalid match key type EMAIL" in status.stdout
    assert "flywheel resume 1" in status.stdout

    dry = sandbox.cli("resume", "--dry-run", "--json", "-p", "pipeline.yaml")
    plan = json.loads(dry.stdout)
    assert plan["to_run"] == ["d", "e"]
    assert [d["action"] for d in plan["decisions"]] == ["reuse", "reuse", "reuse", "reuse", "run", "run"]
    assert sandbox.executed_in(2) == []  # a dry run runs nothing

    sandbox.fix("d")
    resumed = sandbox.cli("resume", "1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert sandbox.executed_in(2) == ["d", "e"]
    assert "reused from run 1" in resumed.stdout

    runs = sandbox.cli("runs", "--json", "-p", "pipeline.yaml")
    assert [(r["run_id"], r["status"], r["parent_run"]) for r in json.loads(runs.stdout)] == [
        (2, "succeeded", 1),
        (1, "failed", None),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--skip-steps", "1,2,9"], "there is no step 9"),
        (["--skip-steps", "1 2"], "no successful run"),
        (["--skip-steps", "1", "2"], "looks like step numbers"),
        (["--only", "c[q]"], "has no context 'q'"),
        (["--env", "staging"], "unknown environment 'staging'"),
        (["--set", "a.timeout"], "is not STEP.SETTING=VALUE"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_2_and_no_traceback(
    sandbox: Sandbox, args: list[str], message: str
) -> None:
    sandbox.write(SHAPES["fan-out-join"])
    typed_without_pipeline = args == ["--skip-steps", "1", "2"]
    result = sandbox.cli("run", *args) if typed_without_pipeline else sandbox.cli("run", "pipeline.yaml", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "fix:" in result.stderr or "Usage" in result.stderr
    assert sandbox.executions() == []


def test_skip_steps_typed_with_spaces_or_ranges_reuses_the_latest_success(sandbox: Sandbox) -> None:
    sandbox.write(SHAPES["linear"])
    sandbox.cli("run", "pipeline.yaml", check=True)
    result = sandbox.cli("run", "pipeline.yaml", "--skip-steps=1, 2")
    assert result.returncode == 0, result.stderr
    assert sandbox.executed_in(2) == ["c"]
    status = sandbox.cli("status", "2", "--json")
    steps = {s["key"]: s for s in json.loads(status.stdout)["steps"]}
    assert steps["a"]["status"] == "reused" and steps["a"]["reused_from"] == 1


def test_ctrl_c_stops_cleanly_marks_the_run_interrupted_and_resume_finishes_it(sandbox: Sandbox) -> None:
    sandbox.write([step("a", 1), step("b", 2, ["a"], params={"inputs": ["a"], "sleep": 30})])
    env = {**os.environ, "FLYWHEEL_HOME": str(sandbox.home), "PYTHONPATH": str(REPO)}
    runner = subprocess.Popen(
        [sys.executable, "-m", "flywheel", "run", "pipeline.yaml"],
        cwd=sandbox.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while "b" not in {k for _, k in sandbox.executions()} and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.send_signal(signal.SIGINT)
    stopping = time.monotonic()
    out, err = runner.communicate(timeout=30)
    assert time.monotonic() - stopping < 10, "stopping took longer than the grace period"
    assert runner.returncode == 130, out + err
    assert "Traceback" not in err
    status = sandbox.json("status", "1")
    assert status["status"] == "interrupted"
    assert {s["key"]: s["status"] for s in status["steps"]} == {"a": "succeeded", "b": "interrupted"}
    leftover = subprocess.run(["pgrep", "-f", "tests.support.jobs"], capture_output=True, text=True)
    assert str(runner.pid) not in leftover.stdout

    assert sandbox.json("resume", "--dry-run", "-p", "pipeline.yaml")["to_run"] == ["b"]


def test_validate_reports_every_problem_with_its_location(sandbox: Sandbox) -> None:
    sandbox.write(
        [
            step("a", 1, ["c"]),
            step("b", 1, ["ghost"]),
            step("c", 3, ["a"], contexts=["ok", "Bad Name"]),
            {**step("d", 4), "executor": "kubernetes"},
            {**step("a", 5)},
        ]
    )
    result = sandbox.cli("validate", "pipeline.yaml")
    assert result.returncode == 2
    problems = result.stderr
    for expected in (
        "duplicate number 1",
        "unknown dependency 'ghost'",
        "context name 'Bad Name'",
        "unknown executor 'kubernetes'",
        "duplicate step id 'a'",
        "dependency cycle: a -> c -> a",
        "pipeline.yaml:",
    ):
        assert expected in problems, f"{expected!r} missing from:\n{problems}"
    assert "Traceback" not in problems


def test_one_runner_per_pipeline_and_env_the_second_is_refused_naming_the_holder(sandbox: Sandbox) -> None:
    sandbox.write([step("a", 1, params={"inputs": [], "sleep": 20})])
    env = {**os.environ, "FLYWHEEL_HOME": str(sandbox.home), "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(
        [sys.executable, "-m", "flywheel", "run", "pipeline.yaml"],
        cwd=sandbox.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not sandbox.executions() and time.monotonic() < deadline:
            time.sleep(0.05)
        second = sandbox.cli("run", "pipeline.yaml")
        assert second.returncode == 3
        assert f"(pid {first.pid})" in second.stderr and "already being run by" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(30)
    assert first.returncode == 130


def test_only_a_step_without_inputs_runs_on_a_fresh_home_and_one_that_needs_inputs_is_refused(
    sandbox: Sandbox,
) -> None:
    sandbox.write(SHAPES["linear"])
    first = sandbox.cli("run", "pipeline.yaml", "--only", "a")
    assert first.returncode == 0, first.stderr
    assert sandbox.executed_in(1) == ["a"]
    refused = sandbox.cli("run", "pipeline.yaml", "--only", "c")
    assert refused.returncode == 2
    assert "cannot run c: its dependency b neither runs nor has a success to reuse" in refused.stderr


def test_the_fork_server_imports_the_environments_shared_libraries_once_for_every_step(sandbox: Sandbox) -> None:
    """Heavy libraries the jobs share are imported by the run's fork server, not by each step."""
    job = "tests.support.jobs:report_preload"
    sandbox.write(
        [
            {"id": "a", "number": 1, "title": "A", "job": job},
            {"id": "b", "number": 2, "title": "B", "job": job, "depends_on": ["a"]},
        ]
    )
    (sandbox.root / "project.yaml").write_text(
        yaml.safe_dump({"environments": {"local": {"preload": ["tests.support.preload_probe"]}}})
    )

    sandbox.cli("run", "pipeline.yaml", check=True)

    reports = [json.loads((sandbox.home / "out" / f"{step}.json").read_text()) for step in ("a", "b")]
    importers = {r["imported_by"] for r in reports}
    assert None not in importers, "the steps found the module already imported"
    assert len(importers) == 1, "one process imported it for both steps"
    assert importers.isdisjoint({r["step_pid"] for r in reports}), "and it was not a step"


def test_the_in_process_executor_runs_shell_steps_through_one_fork_server_and_closes_it(sandbox: Sandbox) -> None:
    """A shell step needs a process even when Python jobs run in the runner's threads: one subprocess
    executor serves every shell step of the run, and its fork server ends with the run."""
    sandbox.write(
        [
            {"id": "a", "number": 1, "title": "A", "command": "echo a >> $FLYWHEEL_PARAM_HOME/shell.txt"},
            {
                "id": "b",
                "number": 2,
                "title": "B",
                "command": "echo b >> $FLYWHEEL_PARAM_HOME/shell.txt",
                "depends_on": ["a"],
            },
        ]
    )
    (sandbox.root / "project.yaml").write_text(yaml.safe_dump({"environments": {"local": {"executor": "inprocess"}}}))

    def fork_servers() -> list[str]:
        """Live fork servers started by this process (a closed one exits by itself: wait for that)."""
        deadline = time.monotonic() + 10
        while True:
            children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
            alive = [
                c
                for c in children
                if b"forkserver" in Path(f"/proc/{c}/cmdline").read_bytes()
                and Path(f"/proc/{c}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            ]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.05)

    before = fork_servers()
    session = api.open_session(str(sandbox.pipeline), None, sandbox.home)
    result = api.execute(session, PlanRequest(), api.RunOptions())
    assert result.outcome is not None and result.outcome.value == "succeeded"
    assert (sandbox.home / "shell.txt").read_text() == "a\nb\n"
    assert fork_servers() == before
