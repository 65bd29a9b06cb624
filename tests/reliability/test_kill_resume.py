"""Kill the runner anywhere in a db-refresh run: one `flywheel resume` finishes it, with the same outputs.

An uninterrupted run on small sample data is the oracle. Then, for each kill point, a fresh home runs
the same pipeline on the same data, the runner is killed with SIGKILL, and `flywheel resume` finishes
the run. The outputs must equal the oracle's in content, no step that had succeeded may run again, and
`flywheel verify` must pass.

Kill points (52, reproducible):
- after each journal append of a run (18: the run's start, each step's start and success, its end),
  through the seam `FLYWHEEL_TEST_KILL_AFTER_EVENT=N`, steps one at a time so the order is fixed;
- between each step's output commit and its success event (8), `FLYWHEEL_TEST_KILL_BEFORE_SUCCESS=N`;
- at 26 seeded random moments of a run with its usual parallelism: half kill the runner alone (its fork
  server then stops the steps), half freeze and kill the runner and every process it started, as a
  power cut would.

Time budget: 10 minutes on 2 cores with `make test-slow` (measured: 8 min 50 s serially; 6 min 58 s with
`pytest -m slow -n 2 tests/reliability` on a busier machine); each kill point costs about one run of the
pipeline on small data.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flywheel.events import StepReused, StepStarted, StepSucceeded
from tests.reliability.support import events, flywheel, kill_tree, snapshot, start

pytestmark = pytest.mark.slow

ROWS, SEED = 600, 7
APPENDS = 18  # run started, 8 x (step started, step succeeded), run finished
KEYS = 8
RANDOM_SEED = 20261127
RANDOM_POINTS = 26


@dataclass(frozen=True)
class KillPoint:
    kind: str  # after-event | before-success | runner-at | machine-at
    value: float

    def __str__(self) -> str:
        if self.kind in ("after-event", "before-success"):
            return f"{self.kind}-{int(self.value)}"
        return f"{self.kind}-{self.value:.3f}"


def kill_points() -> list[KillPoint]:
    moments = random.Random(RANDOM_SEED)
    return [
        *(KillPoint("after-event", n) for n in range(1, APPENDS + 1)),
        *(KillPoint("before-success", n) for n in range(1, KEYS + 1)),
        *(
            KillPoint("runner-at" if i % 2 else "machine-at", round(moments.uniform(0.02, 0.98), 3))
            for i in range(RANDOM_POINTS)
        ),
    ]


@dataclass(frozen=True)
class Oracle:
    raw: Path
    snapshot: dict[str, Any]
    seconds: float


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    base = tmp_path_factory.mktemp("oracle")
    home = base / "home"
    raw = base / "raw"
    generated = flywheel(home, "data", "generate", "--rows", str(ROWS), "--seed", str(SEED), "--root", str(raw))
    assert generated.returncode == 0, generated.stderr
    shutil.copytree(raw, home / "data" / "raw")
    began = time.monotonic()
    run = flywheel(home, "run", "--max-parallel", "1")
    seconds = time.monotonic() - began
    assert run.returncode == 0, run.stdout + run.stderr
    (only,) = events(home).values()
    appended = [e for e in only if not isinstance(e, StepReused) and e.kind.value != "contexts_resolved"]
    assert len(appended) == APPENDS, "the pipeline's shape changed: update APPENDS and KEYS"
    return Oracle(raw=raw, snapshot=snapshot(home), seconds=seconds)


@pytest.mark.parametrize("point", kill_points(), ids=str)
def test_a_killed_run_is_finished_by_one_resume_with_the_outputs_of_an_uninterrupted_run(
    point: KillPoint, oracle: Oracle, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    shutil.copytree(oracle.raw, home / "data" / "raw")

    if point.kind == "after-event":
        killed = flywheel(
            home, "run", "--max-parallel", "1", env={"FLYWHEEL_TEST_KILL_AFTER_EVENT": str(int(point.value))}
        )
        assert killed.returncode == -9, killed.stdout + killed.stderr
    elif point.kind == "before-success":
        killed = flywheel(
            home, "run", "--max-parallel", "1", env={"FLYWHEEL_TEST_KILL_BEFORE_SUCCESS": str(int(point.value))}
        )
        assert killed.returncode == -9, killed.stdout + killed.stderr
    else:
        runner = start(home, "run")
        time.sleep(point.value * oracle.seconds)
        if point.kind == "machine-at":
            kill_tree(runner.pid)
        else:
            runner.kill()
        runner.wait()

    crashed = events(home).get(1, [])
    finished = any(e.kind.value == "run_finished" for e in crashed)
    told = ""
    if not (home / "journal.sqlite").exists() or not events(home):  # killed before the run was recorded
        refused = flywheel(home, "resume")
        assert refused.returncode == 2 and "start one with `flywheel run`" in refused.stderr, refused.stderr
        assert flywheel(home, "run").returncode == 0
    elif not finished:
        resumed = flywheel(home, "resume")
        told = resumed.stdout + resumed.stderr
        assert resumed.returncode == 0, told

    assert snapshot(home) == oracle.snapshot
    history = events(home)
    succeeded_before = {e.key for e in crashed if isinstance(e, StepSucceeded)}
    if not finished and 1 in history and 2 in history:
        rerun = {e.key for e in history[2] if isinstance(e, StepStarted)}
        reused = {e.key for e in history[2] if isinstance(e, StepReused)}
        assert not succeeded_before & rerun, f"a step that had succeeded ran again:\n{told}"
        assert reused == succeeded_before
    verified = flywheel(home, "verify")
    assert verified.returncode == 0, verified.stdout
