"""Orchestrator benchmarks: flywheel's own cost with steps that do nothing.

Workloads (the same as the peers' figures in docs/benchmarks.md):
  W1  a 7-step pipeline shaped like db-refresh (s1 and s2 in parallel, s3 over two contexts, s4..s7)
  W2  W1 failed at s5, then resumed after the fix (only s5, s6, s7 run)
  W3  a chain of 200 steps, and 200 independent steps joined by one
plus the planner and journal on their own (library API) and planning a resume over 10,000 runs.

Whole-process figures are the median of N fresh processes after a warm-up, wall time and peak RSS
from the kernel's accounting (os.wait4), with the load average before and after (the machine is
shared). Run: `make bench` (or `uv run python bench/orchestrator.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
NOOP = "bench.jobs:noop"
FAIL = "bench.jobs:fail_when_marked"


def w1_steps(job: str = NOOP) -> list[dict[str, Any]]:
    def s(i: int, deps: Sequence[int] = (), **kw: Any) -> dict[str, Any]:
        return {"id": f"s{i}", "number": i, "title": f"S{i}", "job": job, "depends_on": [f"s{d}" for d in deps], **kw}

    return [
        s(1),
        s(2),
        s(3, [1, 2], contexts={"a": {}, "b": {}}),
        s(4, [3]),
        s(5, [4]),
        s(6, [5]),
        s(7, [6]),
    ]


def chain(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"s{i}", "number": i, "title": f"S{i}", "job": NOOP, "depends_on": [f"s{i - 1}"] if i > 1 else []}
        for i in range(1, n + 1)
    ]


def fan_out(n: int) -> list[dict[str, Any]]:
    steps = [{"id": f"s{i}", "number": i, "title": f"S{i}", "job": NOOP} for i in range(1, n + 1)]
    steps.append(
        {"id": "join", "number": n + 1, "title": "J", "job": NOOP, "depends_on": [f"s{i}" for i in range(1, n + 1)]}
    )
    return steps


def write_pipeline(folder: Path, steps: list[dict[str, Any]], executor: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.yaml").write_text(
        yaml.safe_dump({"pipeline": folder.name, "params": {"marks": "{home}/marks"}, "steps": steps})
    )
    if executor:
        (folder / "project.yaml").write_text(
            yaml.safe_dump({"environments": {"local": {"executor": executor, "max_parallel": 4}}})
        )
    return folder / "pipeline.yaml"


def timed(argv: Sequence[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """Wall seconds, peak RSS (MiB, largest process) and exit code of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def measure(
    name: str,
    argv: Sequence[str],
    *,
    cwd: Path,
    runs: int,
    prepare: Callable[[Path], None] | None = None,
    expect: int = 0,
) -> dict[str, Any]:
    walls, mems = [], []
    load_before = load_average()
    for i in range(runs + 1):  # the first is a warm-up
        home = Path(tempfile.mkdtemp(prefix="fw-bench-home-"))
        env = {**os.environ, "FLYWHEEL_HOME": str(home), "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
        if prepare:
            prepare(home)
        wall, mem, code = timed(argv, env, cwd)
        shutil.rmtree(home, ignore_errors=True)
        if code != expect:
            raise SystemExit(f"{name}: {' '.join(argv)} exited {code}, expected {expect}")
        if i:
            walls.append(wall)
            mems.append(mem)
    row = {
        "workload": name,
        "wall_median_s": round(statistics.median(walls), 3),
        "wall_min_s": round(min(walls), 3),
        "wall_max_s": round(max(walls), 3),
        "peak_mib": round(statistics.median(mems), 1),
        "runs": runs,
        "load_before": load_before,  # other work on this shared machine slows every figure
        "load_after": load_average(),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    print(json.dumps(row), flush=True)
    return row


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` prints them."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def flywheel_argv(*args: str) -> list[str]:
    return [str(REPO / ".venv" / "bin" / "flywheel"), *args]


def library_overheads(root: Path) -> list[dict[str, Any]]:
    """Planner plus journal per step, and planning a resume over a 10,000-run journal (library API)."""
    sys.path.insert(0, str(REPO))
    from flywheel import api
    from flywheel.events import RunFinished, RunOutcome, RunStarted, StepFailed, StepStarted, StepSucceeded
    from flywheel.executors.local import InProcessExecutor
    from flywheel.planner import Mode, PlanRequest

    rows = []
    pipeline = write_pipeline(root / "lib-chain", chain(200))
    home = root / "lib-home"
    session = api.open_session(str(pipeline), home=home)
    api.execute(session, PlanRequest(), api.RunOptions(executor=InProcessExecutor()))  # warm
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        api.execute(session, PlanRequest(), api.RunOptions(executor=InProcessExecutor()))
        samples.append((time.perf_counter() - start) / 200 * 1000)
    rows.append(
        {
            "workload": "planner+journal per step (200-chain, in-process no-op)",
            "ms_per_step": round(statistics.median(samples), 3),
        }
    )

    big = write_pipeline(root / "w1-10k", w1_steps())
    home = root / "home-10k"
    session = api.open_session(str(big), home=home)
    keys = session.spec.keys
    with session.journal() as journal:
        now = time.time()
        for n in range(10_000):
            run_id = journal.new_run(session.pipeline, session.env_name)
            events: list[Any] = [RunStarted(run_id=run_id, at=now, pipeline=session.pipeline, env="local")]
            for key in keys:
                events.append(StepStarted(run_id=run_id, at=now, step=key.step, context=key.context))
                if key.step == "s5" and n == 9_999:
                    events.append(StepFailed(run_id=run_id, at=now, step=key.step, error_type="E"))
                    break
                events.append(StepSucceeded(run_id=run_id, at=now, step=key.step, context=key.context, duration=60))
            failed = n == 9_999
            events.append(
                RunFinished(run_id=run_id, at=now, outcome=RunOutcome.FAILED if failed else RunOutcome.SUCCEEDED)
            )
            journal.append(*events)
    samples = []
    for _ in range(7):
        start = time.perf_counter()
        planned = api.dry_run(session, PlanRequest(mode=Mode.RESUME))
        samples.append((time.perf_counter() - start) * 1000)
    assert [str(k) for k in planned.plan.keys(planned.plan.decisions[0].action.RUN)] == ["s5", "s6", "s7"]
    rows.append(
        {
            "workload": "plan a resume, journal of 10,000 runs (library API)",
            "ms": round(statistics.median(samples[1:]), 2),
        }
    )
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows, home, big  # type: ignore[return-value]


def main() -> None:
    runs = int(os.environ.get("BENCH_RUNS", "5"))
    root = Path(tempfile.mkdtemp(prefix="fw-bench-"))
    results: list[dict[str, Any]] = []
    for executor in ("subprocess", "inprocess"):
        w1 = write_pipeline(root / f"w1-{executor}", w1_steps(FAIL), executor)
        results.append(measure(f"W1 run ({executor})", flywheel_argv("run", str(w1)), cwd=root, runs=runs))

        def fail_then(home: Path, w1: Path = w1) -> None:
            (home / "marks").mkdir(parents=True)
            (home / "marks" / "s5").touch()
            env = {**os.environ, "FLYWHEEL_HOME": str(home), "PYTHONPATH": str(REPO)}
            subprocess.run(flywheel_argv("run", str(w1)), env=env, stdout=subprocess.DEVNULL, check=False)
            (home / "marks" / "s5").unlink()

        results.append(
            measure(
                f"W2 resume ({executor})",
                flywheel_argv("resume", "-p", str(w1)),
                cwd=root,
                runs=runs,
                prepare=fail_then,
            )
        )
        c = write_pipeline(root / f"chain-{executor}", chain(200), executor)
        results.append(
            measure(f"W3 chain of 200 ({executor})", flywheel_argv("run", str(c)), cwd=root, runs=max(1, runs // 2))
        )
        f = write_pipeline(root / f"fan-{executor}", fan_out(200), executor)
        results.append(
            measure(f"W3 fan-out 200 ({executor})", flywheel_argv("run", str(f)), cwd=root, runs=max(1, runs // 2))
        )
    lib_rows, home_10k, big = library_overheads(root)  # type: ignore[misc]
    results += lib_rows

    def keep_10k(home: Path) -> None:
        shutil.rmtree(home)
        shutil.copytree(home_10k, home)

    results.append(
        measure(
            "resume --dry-run, journal of 10,000 runs (whole process)",
            flywheel_argv("resume", "--dry-run", "-p", str(big)),
            cwd=root,
            runs=runs,
            prepare=keep_10k,
        )
    )
    out = REPO / "bench" / "results" / "orchestrator.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
