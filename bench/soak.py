"""Random-kill soak: kill a db-refresh run at random moments, resume, and compare with an uninterrupted run.

Beside the 52 fixed kill points of `tests/reliability/test_kill_resume.py`, this kills at seeded random
moments of a run with its usual parallelism, in one of three ways:
- `runner`: SIGKILL the runner alone (its fork server then stops the steps);
- `machine`: freeze and SIGKILL the runner and every process it started, as a power cut would;
- `step`: SIGKILL one running step process; the runner goes on and records the step as crashed.

After each kill, `flywheel resume` is run until the run is finished (one resume is expected), then the
outputs must equal the uninterrupted run's, `flywheel verify` must pass, and no step that had
succeeded before the kill may run again. Results go to `bench/results/soak.json`; `docs/recovery.md`
quotes them.

    make soak                  # N=200, seed 20261203
    make soak N=20 SEED=7
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.reliability.support import descendants, events, flywheel, kill_tree, snapshot, start  # noqa: E402

from flywheel.events import RunFinished, RunOutcome, StepStarted, StepSucceeded  # noqa: E402

ROWS, DATA_SEED = 600, 7
MODES = ("runner", "machine", "step")


def step_processes(runner_pid: int) -> list[int]:
    """Processes running a step: descendants of the runner that are not its direct children (the fork
    server is one of those) and have no children of their own."""
    tree = descendants(runner_pid)
    parents = set()
    for pid in tree:
        try:
            parents.add(int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]))
        except (OSError, IndexError, ValueError):
            continue
    return [pid for pid in tree if pid not in parents and pid not in _children(runner_pid)]


def _children(pid: int) -> set[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return set()
    return {int(p) for p in found}


def one(
    base: Path, raw: Path, oracle: dict[str, Any], seconds: float, rng: random.Random, i: int, keep: Path | None
) -> dict[str, Any]:
    home = base / f"home-{i}"
    shutil.copytree(raw, home / "data" / "raw")
    mode = rng.choice(MODES)
    moment = round(rng.uniform(0.02, 0.98), 3)
    runner = start(home, "run")
    time.sleep(moment * seconds)
    killed = mode
    if mode == "step":
        victims = step_processes(runner.pid)
        if victims:
            os.kill(rng.choice(victims), signal.SIGKILL)
        else:  # between steps: nothing runs a step at this moment, so the runner is the one killed
            killed = "runner (no step was running)"
            runner.kill()
    elif mode == "machine":
        kill_tree(runner.pid)
    else:
        runner.kill()
    runner.wait()

    before = events(home).get(1, [])
    succeeded_before = {str(e.key) for e in before if isinstance(e, StepSucceeded)}
    resumes, problems = 0, []
    while True:
        history = events(home) if (home / "journal.sqlite").exists() else {}
        if not history:  # killed before the run was recorded: nothing to resume, `run` starts it
            if flywheel(home, "run").returncode != 0:
                problems.append("the run after a kill before the first event failed")
            break
        finished = [e for e in history[max(history)] if isinstance(e, RunFinished)]
        if finished and finished[0].outcome is RunOutcome.SUCCEEDED:
            break
        if resumes == 3:
            problems.append("not finished after 3 resumes")
            break
        resumed = flywheel(home, "resume")
        resumes += 1
        if resumed.returncode not in (0, 1):
            problems.append(f"resume exited {resumed.returncode}: {resumed.stderr.strip()[-300:]}")
            break
    history = events(home)
    rerun = {str(e.key) for run, evs in history.items() if run > 1 for e in evs if isinstance(e, StepStarted)}
    if mode != "step" and succeeded_before & rerun:
        problems.append(f"succeeded before the kill but ran again: {sorted(succeeded_before & rerun)}")
    try:
        if snapshot(home) != oracle:
            problems.append("outputs differ from the uninterrupted run's")
    except Exception as exc:  # an unreadable output is a finding, not the end of the soak
        problems.append(f"outputs unreadable: {exc}")
    verified = flywheel(home, "verify")
    if verified.returncode != 0:
        problems.append(f"verify exited {verified.returncode}: {verified.stdout.strip()[-400:]}")
    if problems and keep is not None:  # the evidence, for a post-mortem
        shutil.copytree(home, keep / f"home-{i}", symlinks=True, dirs_exist_ok=True)
    shutil.rmtree(home, ignore_errors=True)
    return {"i": i, "mode": killed, "moment": moment, "resumes": resumes, "ok": not problems, "problems": problems}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="how many killed runs")
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.json")
    parser.add_argument("--keep", type=Path, default=None, help="copy the home of every failed case here")
    parser.add_argument("--only", type=int, default=None, help="run only case I (same draws as the full soak)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="flywheel-soak-") as tmp:
        base = Path(tmp)
        raw = base / "raw"
        made = flywheel(
            base / "oracle", "data", "generate", "--rows", str(ROWS), "--seed", str(DATA_SEED), "--root", str(raw)
        )
        assert made.returncode == 0, made.stderr
        oracle_home = base / "oracle"
        shutil.copytree(raw, oracle_home / "data" / "raw")
        t0 = time.monotonic()
        assert flywheel(oracle_home, "run").returncode == 0
        seconds = time.monotonic() - t0
        oracle = snapshot(oracle_home)
        results = []
        for i in range(args.n):
            if args.only is not None and i != args.only:
                rng.choice(MODES), rng.uniform(0.02, 0.98)  # the same draws as the full soak
                continue
            result = one(base, raw, oracle, seconds, rng, i, args.keep)
            results.append(result)
            mark = "ok" if result["ok"] else "FAILED " + "; ".join(result["problems"])
            print(f"{i + 1}/{args.n} {result['mode']} at {result['moment']:.3f}: {mark}", flush=True)
    passed = sum(r["ok"] for r in results)
    summary = {
        "n": args.n,
        "seed": args.seed,
        "passed": passed,
        "by_mode": {m: sum(1 for r in results if r["mode"] == m) for m in {r["mode"] for r in results}},
        "oracle_run_seconds": round(seconds, 2),
        "total_seconds": round(time.monotonic() - began, 1),
        "failures": [r for r in results if not r["ok"]],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}))
    return 0 if passed == args.n else 1


if __name__ == "__main__":
    raise SystemExit(main())
