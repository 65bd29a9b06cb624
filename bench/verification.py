"""What verifying outputs before a resume costs, per step, on a finished db-refresh run.

    uv run python bench/verification.py --home /tmp/fw-bench/home            # measure a finished run
    uv run python bench/verification.py --home /tmp/fw-bench/home --rows 10000000 --make

`--make` first generates sample data and runs db-refresh in that home. Each measurement is a fresh
process (so one-time costs such as importing DuckDB for the catalog are counted where they fall), run
3 times after a warm-up; the median is reported, with each step's budget: max(1% of the time the step
took, 100 ms). `--first` measures the first check after a run (the catalog not yet read since the
run changed it: DuckDB is imported), `--cold` drops the page cache first (root only). Results go to
bench/results/verification[-first][-cold].json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "verification.json"

PROBE = """
import json, sys, time
began = time.perf_counter()
from flywheel import api
from flywheel.app.facts import default_fingerprinter, verify_key
from flywheel.params import resolve_outputs
session = api.open_session()
state = api.status(session).state
fp = default_fingerprinter(session)
rows = []
for key in session.spec.keys:  # first verify every step, as a resume does
    step = state.step(key)
    checked = verify_key(fp, key, step.outputs, step.duration or 0.0)
    assert all(c.ok for c in checked.checks), [c for c in checked.checks if not c.ok]
    rows.append({
        "key": str(key), "step_seconds": step.duration,
        "verify_seconds": checked.seconds, "budget_seconds": checked.budget,
    })
for row, key in zip(rows, session.spec.keys):  # then record them, as the runner does at each success
    params = fp.params(key)
    t0 = time.perf_counter()
    records = fp.output_records(key, resolve_outputs(session.spec, key, params), (), params)
    row["record_seconds"] = time.perf_counter() - t0
    row["outputs"] = [{"uri": r.get("uri"), "files": r.get("count"), "bytes": r.get("size")} for r in records]
print(json.dumps({"rows": rows, "process_seconds": time.perf_counter() - began}))
"""


def _flywheel(home: Path, *args: str) -> None:
    env = {**os.environ, "FLYWHEEL_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "flywheel", *args], check=True, env=env, cwd=home.parent)


def _prepare(home: Path, *, first: bool, cold: bool) -> None:
    """`first`: as right after a run, before anything read the catalog (no kept catalog fingerprints).
    `cold`: nothing in the page cache (needs root), as on a machine that did something else meanwhile."""
    if first:
        for sidecar in home.glob("*.fingerprints.json"):
            sidecar.unlink()
    if cold:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def measure(home: Path, repeats: int = 3, *, first: bool = False, cold: bool = False) -> dict[str, Any]:
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "PYTHONPATH": str(REPO / "src")}
    runs = []
    for _ in range(repeats + 1):  # the first is a warm-up
        _prepare(home, first=first, cold=cold)
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
        runs.append(json.loads(out.stdout))
    runs = runs[1:]
    keys = [r["key"] for r in runs[0]["rows"]]
    table = []
    for i, key in enumerate(keys):
        first = runs[0]["rows"][i]
        table.append(
            {
                "key": key,
                "step_seconds": first["step_seconds"],
                "budget_seconds": first["budget_seconds"],
                "record_seconds": statistics.median(r["rows"][i]["record_seconds"] for r in runs),
                "verify_seconds": statistics.median(r["rows"][i]["verify_seconds"] for r in runs),
                "outputs": first["outputs"],
            }
        )
    return {
        "home": str(home),
        "first_check_after_run": first,
        "cold_page_cache": cold,
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
        "steps": table,
        "verify_total_seconds": sum(t["verify_seconds"] for t in table),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--make", action="store_true", help="generate data and run db-refresh first")
    parser.add_argument("--first", action="store_true", help="measure the first check after a run")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each measurement")
    args = parser.parse_args()
    home = args.home.resolve()
    if args.make:
        _flywheel(home, "data", "generate", "--rows", str(args.rows))
        _flywheel(home, "run")
    result = measure(home, first=args.first, cold=args.cold)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    name = "verification" + ("-first" if args.first else "") + ("-cold" if args.cold else "")
    RESULTS.with_name(f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| step | took | budget | record | verify | outputs |")
    print("|---|---:|---:|---:|---:|---|")
    for row in result["steps"]:
        files = sum(o.get("files") or 1 for o in row["outputs"])
        size = sum(o.get("bytes") or 0 for o in row["outputs"])
        print(
            f"| {row['key']} | {row['step_seconds']:.1f} s | {row['budget_seconds'] * 1000:.0f} ms "
            f"| {row['record_seconds'] * 1000:.1f} ms | {row['verify_seconds'] * 1000:.1f} ms "
            f"| {files} files, {size / 1e6:.0f} MB |"
        )
    print(f"\nall steps: {result['verify_total_seconds'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
