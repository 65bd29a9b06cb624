"""One runner per pipeline and environment, for real: two operators resume at once, a runner dies.

Two resumes started together: exactly one proceeds, the other is refused with the holder's user, host,
pid and start time. A runner killed with SIGKILL leaves its lock to be taken over, but not while a step
it started is still writing: the resume names that process and how to stop it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flywheel.lock import RunLock, current_identity
from tests.conftest import REPO, Sandbox, step

pytestmark = pytest.mark.e2e


def start(sandbox: Sandbox, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "FLYWHEEL_HOME": str(sandbox.home), "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "flywheel", *args],
        start_new_session=True,
        cwd=sandbox.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_holder(lock: RunLock, pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = lock.holder()
        if holder is not None and holder.pid == pid and holder.run_id is not None:
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} never took the lock")


def test_two_operators_resume_at_once_exactly_one_proceeds_and_the_other_is_told_who(sandbox: Sandbox) -> None:
    sandbox.write([step("a", 1), step("b", 2, ["a"], params={"inputs": ["a"], "sleep": 3, "sleep_only": "b"})])
    sandbox.fail("b")
    sandbox.cli("run", "pipeline.yaml")
    sandbox.fix("b")

    first, second = start(sandbox, "resume", "-p", "pipeline.yaml"), start(sandbox, "resume", "-p", "pipeline.yaml")
    outcomes = {p.pid: (p.wait(60), *p.communicate()) for p in (first, second)}
    codes = sorted(code for code, _, _ in outcomes.values())
    assert codes == [0, 3], outcomes
    (winner,) = [pid for pid, (code, _, _) in outcomes.items() if code == 0]
    (refusal,) = [err for code, _, err in outcomes.values() if code == 3]
    user, host = current_identity()
    held = re.search(
        r"is already being run by (\S+)@(\S+) \(pid (\d+)\) since (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", refusal
    )
    assert held is not None, refusal
    assert (held.group(1), held.group(2), int(held.group(3))) == (user, host, winner)
    assert "fix: wait for that run to finish" in refusal
    assert sandbox.executed_in(2) == ["b"] and sandbox.executed_in(3) == []


def start_slow_run(sandbox: Sandbox) -> subprocess.Popen[str]:
    """A run whose first step takes a minute; returns once that step is running."""
    sandbox.write([step("a", 1, params={"inputs": [], "sleep": 60}), step("b", 2, ["a"])])
    runner = start(sandbox, "run", "pipeline.yaml")
    wait_for_holder(RunLock(sandbox.home, "tiny", "local"), runner.pid)
    record = sandbox.home / "record.txt"
    deadline = time.monotonic() + 30
    while not (record.exists() and "1 a" in record.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return runner


def test_a_lock_left_by_a_killed_runner_is_taken_over(sandbox: Sandbox) -> None:
    runner = start_slow_run(sandbox)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    assert RunLock(sandbox.home, "tiny", "local").holder() is None  # the kernel dropped the dead runner's flock

    sandbox.write([step("a", 1), step("b", 2, ["a"])])  # the operator drops the slow setting
    resumed = sandbox.cli("resume", "-p", "pipeline.yaml")
    assert resumed.returncode == 0, resumed.stderr
    assert sandbox.executed_in(2) == ["a", "b"]
    assert "interrupted" in sandbox.cli("status", "1", "-p", "pipeline.yaml").stdout


def test_a_step_left_running_by_a_dead_runner_is_named_before_anything_reruns_it(sandbox: Sandbox) -> None:
    runner = start_slow_run(sandbox)
    runner.send_signal(signal.SIGSTOP)  # freeze the runner, then kill it with its fork server:
    for child in children(runner.pid):  # nothing is left to stop the step
        os.kill(child, signal.SIGKILL)
    runner.send_signal(signal.SIGKILL)
    runner.wait()

    refused = sandbox.cli("resume", "-p", "pipeline.yaml")
    assert refused.returncode == 2
    found = re.search(r"run 1.s runner died but 1 of its step processes still run: a \(pid (\d+)\)", refused.stderr)
    assert found is not None, refused.stderr
    orphan = int(found.group(1))
    assert f"kill -TERM -- -{orphan}" in refused.stderr  # the step leads its own process group
    os.killpg(orphan, signal.SIGTERM)
    _wait_gone(orphan)
    sandbox.write([step("a", 1), step("b", 2, ["a"])])
    assert sandbox.cli("resume", "-p", "pipeline.yaml").returncode == 0
    assert sandbox.executed_in(2) == ["a", "b"]


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _wait_gone(pid: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
