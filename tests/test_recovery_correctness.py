"""Recovery never reuses what is not valid, never loops, and never calls a run that did nothing a success.

Each test is one of the ways an on-call engineer broke the promise on the old code, replayed through
the real CLI on a tiny pipeline: a -> b[x], b[y] -> c -> d, every output declared.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.conftest import Sandbox
from tests.ui.conftest import serve_in_thread

pytestmark = pytest.mark.e2e


def status_of(sandbox: Sandbox, run_id: int) -> dict[str, Any]:
    body: dict[str, Any] = sandbox.json("status", str(run_id), "-p", "pipeline.yaml")
    return body


def steps_of(sandbox: Sandbox, run_id: int) -> dict[str, str]:
    return {s["key"]: s["status"] for s in status_of(sandbox, run_id)["steps"]}


def test_only_leaves_everything_downstream_not_executed_and_the_run_is_partial_until_resumed(chain: Sandbox) -> None:
    chain.cli("run", "pipeline.yaml", check=True)
    uninterrupted = chain.outputs()

    only = chain.cli("run", "pipeline.yaml", "--only", "2", "--yes")
    assert only.returncode == 0, only.stderr  # it did what was asked
    assert chain.executed_in(2) == ["b[x]", "b[y]"]
    assert status_of(chain, 2)["status"] == "partial"
    assert steps_of(chain, 2) == {
        "a": "reused",
        "b[x]": "succeeded",
        "b[y]": "succeeded",
        "c": "skipped",
        "d": "skipped",
    }
    assert "2 step(s) left not executed: c, d" in chain.cli("status", "2", "-p", "pipeline.yaml").stdout
    assert chain.cli("verify", "2", "-p", "pipeline.yaml").returncode == 1  # c and d were not produced by run 2

    resumed = chain.cli("resume", "-p", "pipeline.yaml", "--yes")  # the latest run with work left: run 2
    assert resumed.returncode == 0, resumed.stderr
    assert chain.executed_in(3) == ["c", "d"]
    assert status_of(chain, 3)["status"] == "succeeded"
    assert chain.cli("verify", "3", "-p", "pipeline.yaml").returncode == 0
    assert chain.outputs() == uninterrupted


def test_a_mark_without_the_outputs_is_refused_and_a_forced_one_does_not_trap_resume(chain: Sandbox) -> None:
    chain.fail("c")
    assert chain.cli("run", "pipeline.yaml").returncode == 1
    chain.fix("c")

    refused = chain.cli("mark", "1", "3", "--succeeded", "--note", "rebuilt by hand", "-p", "pipeline.yaml")
    assert refused.returncode == 2
    assert "c.txt is missing" in refused.stderr and "--force" in refused.stderr
    assert steps_of(chain, 1)["c"] == "failed"  # nothing recorded

    forced = chain.cli("mark", "1", "3", "--succeeded", "--note", "rebuilt by hand", "--force", "-p", "pipeline.yaml")
    assert forced.returncode == 0, forced.stderr
    assert "a resume reruns it while they are missing" in forced.stdout

    plan = chain.json("resume", "1", "--dry-run", "-p", "pipeline.yaml")
    why = {d["key"]: (d["action"], d["reason"]) for d in plan["decisions"]}
    assert why["c"][0] == "run" and "marked succeeded without it" in why["c"][1]
    assert why["d"][0] == "run"
    assert chain.cli("resume", "1", "--yes", "-p", "pipeline.yaml").returncode == 0
    assert chain.executed_in(2) == ["c", "d"]
    assert chain.cli("verify", "2", "-p", "pipeline.yaml").returncode == 0


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--skip-steps=2", "--only", "2"], "--only"),
        (["--skip-steps=3", "--from-step", "3"], "--from-step"),
        (["--skip-steps", "b[x]", "--only", "b[x]"], "--only"),
    ],
)
def test_a_step_both_skipped_and_selected_is_a_usage_error_naming_both_flags(
    chain: Sandbox, flags: list[str], named: str
) -> None:
    chain.cli("run", "pipeline.yaml", check=True)
    contradiction = chain.cli("run", "pipeline.yaml", *flags, "--yes")
    assert contradiction.returncode == 2
    assert "--skip-steps" in contradiction.stderr and named in contradiction.stderr
    assert "Traceback" not in contradiction.stderr
    assert [r["run_id"] for r in chain.json("runs", "-p", "pipeline.yaml")] == [1]  # nothing journaled


def test_a_run_that_would_run_nothing_is_refused(chain: Sandbox) -> None:
    chain.cli("run", "pipeline.yaml", check=True)
    nothing = chain.cli("run", "pipeline.yaml", "--skip-steps=1-4", "--yes")
    assert nothing.returncode == 2 and "runs nothing" in nothing.stderr
    assert [r["run_id"] for r in chain.json("runs", "-p", "pipeline.yaml")] == [1]


def test_a_run_recovered_through_a_resume_of_a_resume_is_not_recovered_again_without_again(chain: Sandbox) -> None:
    chain.fail("b[y]")
    assert chain.cli("run", "pipeline.yaml").returncode == 1
    assert chain.cli("resume", "1", "--yes", "-p", "pipeline.yaml").returncode == 1  # cause not fixed yet
    chain.fix("b[y]")
    assert chain.cli("resume", "2", "--yes", "-p", "pipeline.yaml").returncode == 0  # run 3 recovers 2, so 1

    twice = chain.cli("resume", "1", "--yes", "-p", "pipeline.yaml")
    assert twice.returncode == 2
    assert "run 1 was already recovered by run 3" in twice.stderr and "--again" in twice.stderr
    assert [r["run_id"] for r in chain.json("runs", "-p", "pipeline.yaml")] == [3, 2, 1]
    shown = chain.cli("status", "1", "-p", "pipeline.yaml").stdout
    assert "recovered by run 3" in shown and "flywheel resume 1" not in shown
    assert status_of(chain, 1)["resume_command"] is None

    deliberate = chain.json("resume", "1", "--again", "--dry-run", "-p", "pipeline.yaml")
    assert [d["key"] for d in deliberate["decisions"] if d["action"] == "run"] == ["b[y]", "c", "d"]

    with serve_in_thread(chain.home) as served:  # the dashboard applies the same rule
        client = served.client()
        reply = client.post("/runs/1/resume", csrf=client.csrf("/runs/1"), origin=client.origin)
        assert reply.status == 409 and "already recovered by run 3" in reply.json()["error"]
        listing = client.get("/runs").body
    marks = dict(re.findall(r'data-run="(\d+)" data-status="(\w+)"', listing))
    assert marks == {"3": "succeeded", "2": "failed", "1": "failed"}
    rows = {row.split('"')[1]: row for row in listing.split("<tr data-run=")[1:]}
    recovered = {run: m.group(1) for run, row in rows.items() if (m := re.search(r'data-recovered-by="(\d+)"', row))}
    assert recovered == {"2": "3", "1": "3"} and "open-failure" not in listing


def test_the_run_list_marks_a_failed_run_nobody_recovered_as_open(chain: Sandbox) -> None:
    chain.fail("c")
    assert chain.cli("run", "pipeline.yaml").returncode == 1
    with serve_in_thread(chain.home) as served:
        listing = served.client().get("/runs").body
    assert 'class="open-failure"' in listing and "data-recovered-by" not in listing


def test_mark_names_the_step_with_contexts_says_when_there_is_nothing_to_mark_and_logs_names_bad_contexts(
    chain: Sandbox,
) -> None:
    chain.fail("b[x]")
    chain.fail("b[y]")
    assert chain.cli("run", "pipeline.yaml").returncode == 1
    for context in ("x", "y"):  # the operator produced both outputs by hand
        (chain.home / "out" / f"b[{context}].txt").write_text(f"rebuilt {context}")

    both = chain.cli("mark", "1", "2", "--succeeded", "--note", "rebuilt both", "-p", "pipeline.yaml")
    assert both.returncode == 0, both.stderr
    assert "b[x] marked succeeded in run 1" in both.stdout and "b[y] marked succeeded in run 1" in both.stdout
    assert "continue with:  flywheel resume 1" in both.stdout

    again = chain.cli("mark", "1", "1", "--succeeded", "--note", "a was fine", "-p", "pipeline.yaml")
    assert again.returncode == 0
    assert "a already succeeded in run 1: nothing to mark" in again.stdout
    assert "continue with" not in again.stdout
    marked = [e for e in json.loads(chain.cli("status", "1", "--json", "-p", "pipeline.yaml").stdout)["steps"]]
    assert [s["key"] for s in marked if s["status"] == "marked"] == ["b[x]", "b[y]"]

    unknown = chain.cli("logs", "1", "--step", "b[nope]", "-p", "pipeline.yaml")
    assert unknown.returncode == 2
    assert "no context 'nope'" in unknown.stderr and "x, y" in unknown.stderr


def test_the_run_list_and_the_dashboard_show_a_request_as_the_flags_that_repeat_it(chain: Sandbox) -> None:
    chain.cli("run", "pipeline.yaml", check=True)
    chain.cli("run", "pipeline.yaml", "--skip-steps=1", "--force", "--yes", check=True)
    listed = chain.cli("runs", "-p", "pipeline.yaml").stdout
    assert "run --skip-steps=1 --force" in listed
    with serve_in_thread(chain.home) as served:
        page = served.client().get("/runs").body
    assert "run --skip-steps=1 --force" in page and "--skip=" not in page
