"""The runbook's warnings, made checks: an operator's stories on tiny real pipelines, through the CLI.

"Verify data/state before resuming", "did you fix the root cause?", "data/state corrupted: need a full
refresh", "re-run only that context if possible", "test the fix manually if possible": each is a story
here, told with real subprocesses, a real journal and real files.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Sandbox, step

pytestmark = pytest.mark.e2e


def fan_out(sandbox: Sandbox, **b_extra: Any) -> None:
    """a -> b[x], b[y] -> c, every output declared."""
    sandbox.write(
        [
            step("a", 1, outputs=["{out}/a.txt"]),
            step("b", 2, ["a"], contexts=["x", "y"], outputs=["{out}/b[{context}].txt"], **b_extra),
            step("c", 3, ["b"], outputs=["{out}/c.txt"]),
        ]
    )


def plan_of(sandbox: Sandbox, *args: str) -> dict[str, Any]:
    result = sandbox.cli("resume", "--dry-run", "--json", "-p", "pipeline.yaml", *args)
    assert result.returncode == 0, result.stderr
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def reasons(plan: dict[str, Any]) -> dict[str, str]:
    return {d["key"]: f"{d['action']}: {d['reason']}" for d in plan["decisions"]}


def test_a_step_whose_outputs_vanished_is_rerun_with_its_downstream_and_the_plan_says_why(sandbox: Sandbox) -> None:
    fan_out(sandbox)
    sandbox.fail("c")
    assert sandbox.cli("run", "pipeline.yaml").returncode == 1
    sandbox.fix("c")
    (sandbox.home / "out" / "b[y].txt").unlink()

    plan = plan_of(sandbox)
    assert plan["to_run"] == ["b[y]", "c"]
    assert reasons(plan)["b[y]"].startswith("run: outputs from run 1 no longer verify:")
    assert reasons(plan)["b[y]"].endswith("b[y].txt gone")
    assert reasons(plan)["b[x]"] == "reuse: succeeded in run 1"

    assert sandbox.cli("resume", "-p", "pipeline.yaml").returncode == 0
    assert sandbox.executed_in(2) == ["b[y]", "c"]


def test_a_changed_output_is_rerun_too(sandbox: Sandbox) -> None:
    fan_out(sandbox)
    sandbox.fail("c")
    sandbox.cli("run", "pipeline.yaml")
    sandbox.fix("c")
    (sandbox.home / "out" / "a.txt").write_text("edited by hand")
    plan = plan_of(sandbox)
    assert plan["to_run"] == ["a", "b[x]", "b[y]", "c"]
    assert "a.txt size changed from 64 to 14 bytes" in reasons(plan)["a"]


def test_when_outputs_of_several_finished_steps_are_gone_resume_proposes_a_full_refresh(sandbox: Sandbox) -> None:
    fan_out(sandbox)
    sandbox.fail("c")
    sandbox.cli("run", "pipeline.yaml")
    sandbox.fix("c")
    (sandbox.home / "out" / "a.txt").unlink()
    (sandbox.home / "out" / "b[x].txt").unlink()

    result = sandbox.cli("resume", "-p", "pipeline.yaml")
    assert result.returncode == 2
    assert "the state of run 1 is beyond repair: outputs of 2 finished steps are gone" in result.stderr
    assert "start a full refresh with `flywheel run`" in result.stderr
    assert "or rebuild from the earliest lost step with `flywheel run --from-step 1`" in result.stderr
    assert sandbox.cli("run", "pipeline.yaml").returncode == 0


def test_when_the_journal_of_the_run_is_lost_resume_proposes_a_full_refresh(sandbox: Sandbox) -> None:
    fan_out(sandbox)
    sandbox.fail("c")
    sandbox.cli("run", "pipeline.yaml")

    lost = sandbox.cli("resume", "7", "-p", "pipeline.yaml")
    assert lost.returncode == 2
    assert "no run 7 in the journal" in lost.stderr and "full refresh with `flywheel run`" in lost.stderr

    with sqlite3.connect(sandbox.home / "journal.sqlite") as db:
        db.execute("DELETE FROM events WHERE run_id = 1 AND kind = 'run_started'")
    damaged = sandbox.cli("resume", "1", "-p", "pipeline.yaml")
    assert damaged.returncode == 2
    assert "the journal of run 1 is incomplete" in damaged.stderr and "flywheel run" in damaged.stderr


def test_a_resume_where_nothing_changed_since_the_failure_asks_whether_the_cause_was_fixed(sandbox: Sandbox) -> None:
    fan_out(sandbox)
    sandbox.fail("b[x]", "source file truncated")
    assert sandbox.cli("run", "pipeline.yaml").returncode == 1

    unchanged = sandbox.cli("resume", "-p", "pipeline.yaml")
    assert unchanged.returncode == 2
    assert "nothing changed since b[x] failed in run 1 (InjectedFault: source file truncated)" in unchanged.stderr
    assert "Did you fix the root cause?" in unchanged.stderr and "--yes" in unchanged.stderr
    assert "same error is likely" in plan_of(sandbox)["warnings"][0]

    anyway = sandbox.cli("resume", "-p", "pipeline.yaml", "--yes")
    assert anyway.returncode == 1  # it failed again, as warned
    assert sandbox.executed_in(2) == ["b[x]"]

    sandbox.fix("b[x]")  # the fix touches what the step reads: no warning
    assert plan_of(sandbox)["warnings"] == []
    assert sandbox.cli("resume", "-p", "pipeline.yaml").returncode == 0
    assert sandbox.executed_in(3) == ["b[x]", "c"]


def test_a_timeout_is_fixed_by_raising_it_for_one_run_which_makes_nothing_stale(sandbox: Sandbox) -> None:
    fan_out(sandbox, timeout="1s")
    sandbox.write(
        [
            step("a", 1, outputs=["{out}/a.txt"]),
            step(
                "b",
                2,
                ["a"],
                contexts=["x", "y"],
                outputs=["{out}/b[{context}].txt"],
                timeout="1s",
                params={"inputs": ["a"], "sleep": 2, "sleep_only": "b"},
            ),
            step("c", 3, ["b"], outputs=["{out}/c.txt"]),
        ]
    )
    failed = sandbox.cli("run", "pipeline.yaml", "--json")
    assert failed.returncode == 1
    steps = {s["key"]: s for s in json.loads(failed.stdout)["steps"]}
    assert steps["b[x]"]["error_type"] == "Timeout"

    plan = plan_of(sandbox, "--set", "b.timeout=30s")
    assert plan["warnings"] == []  # a timeout is a resource cause: no "did you fix it?"
    assert plan["to_run"] == ["b[x]", "b[y]", "c"]

    resumed = sandbox.cli("resume", "-p", "pipeline.yaml", "--set", "b.timeout=30s")
    assert resumed.returncode == 0, resumed.stderr
    assert sandbox.executed_in(2) == ["b[x]", "b[y]", "c"]


def job_beside_pipeline(sandbox: Sandbox) -> Path:
    module = sandbox.root / "jobs_here" / "work.py"
    module.parent.mkdir()
    (module.parent / "__init__.py").write_text("")
    module.write_text("from tests.support.jobs import record as run\n")
    sandbox.write(
        [
            step("a", 1, outputs=["{out}/a.txt"], job="jobs_here.work:run"),
            step("b", 2, ["a"], outputs=["{out}/b.txt"]),
            step("c", 3, ["b"], outputs=["{out}/c.txt"]),
        ]
    )
    return module


def test_a_step_whose_code_changed_is_stale_and_rerun_unless_kept_with_reuse_stale(sandbox: Sandbox) -> None:
    module = job_beside_pipeline(sandbox)
    sandbox.fail("c")
    sandbox.cli("run", "pipeline.yaml")
    sandbox.fix("c")
    module.write_text(module.read_text() + "# normalise zip codes\n")

    plan = plan_of(sandbox)
    assert plan["to_run"] == ["a", "b", "c"]
    assert reasons(plan)["a"] == "run: stale since run 1: code jobs_here.work changed"
    assert reasons(plan)["b"] == "run: upstream a reruns"

    kept = plan_of(sandbox, "--reuse-stale")
    assert kept["to_run"] == ["c"]
    assert "kept by --reuse-stale" in reasons(kept)["a"]
    assert sandbox.cli("resume", "-p", "pipeline.yaml", "--reuse-stale").returncode == 0
    status = sandbox.cli("status", "2", "-p", "pipeline.yaml")
    assert "reused from run 1 (stale, kept)" in status.stdout
    events = sandbox.cli("status", "2", "--json", "-p", "pipeline.yaml")
    assert json.loads(events.stdout)["status"] == "succeeded"


def test_an_operator_marks_a_step_fixed_outside_flywheel_and_resume_continues_past_it(sandbox: Sandbox) -> None:
    fan_out(sandbox)
    sandbox.fail("b[x]", "partition missing")
    sandbox.cli("run", "pipeline.yaml")
    (sandbox.home / "out" / "b[x].txt").write_text("rebuilt by hand")  # the outside fix

    marked = sandbox.cli(
        "mark", "1", "b[x]", "--succeeded", "--note", "rebuilt b[x] by hand (INC-42)", "-p", "pipeline.yaml"
    )
    assert marked.returncode == 0, marked.stderr
    status = sandbox.cli("status", "1", "-p", "pipeline.yaml")
    assert "☑️" in status.stdout and "marked succeeded" in status.stdout
    shown = {
        s["key"]: s for s in json.loads(sandbox.cli("status", "1", "--json", "-p", "pipeline.yaml").stdout)["steps"]
    }
    assert shown["b[x]"]["status"] == "marked" and shown["b[x]"]["note"] == "rebuilt b[x] by hand (INC-42)"

    with sqlite3.connect(sandbox.home / "journal.sqlite") as db:
        (body,) = db.execute("SELECT body FROM events WHERE kind = 'step_marked'").fetchone()
    (record,) = json.loads(body)["outputs"]
    assert record["uri"].endswith("b[x].txt") and record["kind"] == "file"

    assert sandbox.cli("resume", "-p", "pipeline.yaml").returncode == 0
    assert sandbox.executed_in(2) == ["c"]
    assert (sandbox.home / "out" / "b[x].txt").read_text() == "rebuilt by hand"


def test_resume_reruns_only_the_failed_context_and_only_reruns_one_context(sandbox: Sandbox) -> None:
    fan_out(sandbox)
    sandbox.fail("b[y]")
    sandbox.cli("run", "pipeline.yaml")
    sandbox.fix("b[y]")
    assert sandbox.cli("resume", "-p", "pipeline.yaml").returncode == 0
    assert sandbox.executed_in(2) == ["b[y]", "c"]

    only = sandbox.cli("run", "pipeline.yaml", "--only", "b[x]")
    assert only.returncode == 0, only.stderr
    assert sandbox.executed_in(3) == ["b[x]"]


def test_verify_checks_every_output_of_a_run_and_fails_when_one_is_missing(sandbox: Sandbox) -> None:
    fan_out(sandbox)
    assert sandbox.cli("run", "pipeline.yaml").returncode == 0
    ok = sandbox.cli("verify", "-p", "pipeline.yaml")
    assert ok.returncode == 0, ok.stdout
    assert "all outputs verified" in ok.stdout and ok.stdout.count("✅") >= 8

    (sandbox.home / "out" / "c.txt").unlink()
    broken = sandbox.cli("verify", "1", "--json", "-p", "pipeline.yaml")
    assert broken.returncode == 1
    report = {s["key"]: s for s in json.loads(broken.stdout)["steps"]}
    assert report["c"]["outputs"][0]["status"] == "missing" and report["a"]["ok"]


def test_try_runs_one_step_into_a_scratch_home_and_records_nothing(sandbox: Sandbox) -> None:
    fan_out(sandbox)
    sandbox.fail("b[x]", "bad schema mapping")
    sandbox.cli("run", "pipeline.yaml")
    recorded = (sandbox.home / "record.txt").read_text()

    still = sandbox.cli("try", "b[x]", "-p", "pipeline.yaml")
    assert still.returncode == 1
    assert "b[x] fails: InjectedFault: bad schema mapping" in still.stdout and "log " in still.stdout

    sandbox.fix("b[x]")
    tried = sandbox.cli("try", "b[x]", "--json", "-p", "pipeline.yaml")
    assert tried.returncode == 0, tried.stderr
    body = json.loads(tried.stdout)
    scratch = Path(body["scratch"])
    assert body["succeeded"] and (scratch / "data" / "out" / "b[x].txt").exists()
    assert not (sandbox.home / "out" / "b[x].txt").exists()
    assert (sandbox.home / "record.txt").read_text() == recorded

    runs = json.loads(sandbox.cli("runs", "--json", "-p", "pipeline.yaml").stdout)
    assert [r["run_id"] for r in runs] == [1]
    assert sandbox.cli("resume", "-p", "pipeline.yaml").returncode == 0
    assert sandbox.executed_in(2) == ["b[x]", "c"]


PROJECT = {
    "default_env": "local",
    "environments": {
        "local": {"executor": "subprocess"},
        "prod": {"executor": "subprocess", "require_note": True, "confirm": True},
    },
}


def test_in_prod_every_rule_bent_needs_a_note_and_every_run_says_who_from_where_with_which_code(
    sandbox: Sandbox,
) -> None:
    fan_out(sandbox)
    (sandbox.root / "project.yaml").write_text(yaml.safe_dump(PROJECT))
    sandbox.fail("c")
    assert sandbox.cli("run", "pipeline.yaml", "--env", "prod", "--yes").returncode == 1
    sandbox.fix("c")

    for bend in (["--skip-steps=1"], ["--force"], ["--reuse-stale"]):
        refused = sandbox.cli("resume", "-p", "pipeline.yaml", "--env", "prod", "--yes", *bend)
        assert refused.returncode == 2 and "need --note" in refused.stderr, bend
    unmarked = sandbox.cli("mark", "1", "c", "--succeeded", "-p", "pipeline.yaml", "--env", "prod")
    assert unmarked.returncode == 2 and "--note" in unmarked.stderr
    unconfirmed = sandbox.cli("resume", "-p", "pipeline.yaml", "--env", "prod")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr

    resumed = sandbox.cli(
        "resume",
        "-p",
        "pipeline.yaml",
        "--env",
        "prod",
        "--yes",
        "--reuse-stale",
        "--note",
        "INC-7: c's source re-delivered",
    )
    assert resumed.returncode == 0, resumed.stderr
    status = json.loads(sandbox.cli("status", "2", "--json", "-p", "pipeline.yaml", "--env", "prod").stdout)
    assert status["user"] and status["host"] and status["code_version"]
    shown = sandbox.cli("status", "2", "-p", "pipeline.yaml", "--env", "prod").stdout
    assert f"by {status['user']}@{status['host']}" in shown and f"code {status['code_version']}" in shown


def test_a_run_killed_before_its_first_event_is_resumed_from_the_start(sandbox: Sandbox) -> None:
    from flywheel.journal import open_journal

    fan_out(sandbox)
    with open_journal(sandbox.home) as journal:  # the runner allocated run 1, then died
        journal.new_run("tiny", "local")
    plan = plan_of(sandbox)
    assert plan["to_run"] == ["a", "b[x]", "b[y]", "c"] and plan["warnings"] == []
    assert sandbox.cli("resume", "-p", "pipeline.yaml").returncode == 0
    assert sandbox.executed_in(2) == ["a", "b[x]", "b[y]", "c"]


def test_at_a_terminal_the_operator_is_asked_and_no_stops_the_resume(sandbox: Sandbox) -> None:
    import os
    import pty
    import subprocess
    import sys

    from tests.conftest import REPO

    fan_out(sandbox)
    sandbox.fail("b[x]", "source file truncated")
    sandbox.cli("run", "pipeline.yaml")

    def answer(reply: str) -> subprocess.CompletedProcess[str]:
        controller, terminal = pty.openpty()
        env = {**os.environ, "FLYWHEEL_HOME": str(sandbox.home), "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
        os.write(controller, reply.encode())
        try:
            return subprocess.run(
                [sys.executable, "-m", "flywheel", "resume", "-p", "pipeline.yaml"],
                stdin=terminal,
                capture_output=True,
                text=True,
                env=env,
                cwd=sandbox.root,
                timeout=60,
            )
        finally:
            os.close(controller)
            os.close(terminal)

    declined = answer("n\n")
    assert declined.returncode == 2
    assert "same error is likely" in declined.stderr and "Resume anyway?" in declined.stdout
    assert sandbox.executed_in(2) == []
    accepted = answer("y\n")
    assert accepted.returncode == 1  # the operator chose to go on; it failed again, as warned
    assert sandbox.executed_in(2) == ["b[x]"]
