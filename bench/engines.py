"""DuckDB vs Spark on the db-refresh jobs: step 1 (addressable split) and step 5 (ER table), side by side.

For each size (default 1M and 5M addressable rows, as many infobase rows) the raw data is generated
once; steps 1-4 are run once on DuckDB to register the part tables step 5 reads. Then every measurement
is one fresh process running one step on one engine, with the parameters the runner gives that step in
the `local` environment (pipeline.yaml, project.yaml), except that both engines get the same two cores
and 4 GB: DuckDB `threads: 2`, Spark `local[2]` with a 4g driver heap.

Wall time and peak memory come from the kernel's accounting (`os.wait4` on the process; the driver stays
small, because Linux counts a parent's resident memory at fork time in a child's peak). Spark's JVM is a
child of that process: the process stops its SparkContext and waits for the JVM before it exits, so the
JVM's peak is in the accounting too, and the figure reported is the Python process's peak plus the
JVM's (each at its own peak: an upper bound of the two together). Spark's figures include starting the
JVM, which every Spark step pays; it is also shown on its own.

Run: `make bench-engines` (the Spark venv), or `python bench/engines.py --sizes 100000 --repeat 1`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "engines.json"
STEPS = {1: "addressable-split-and-part", 5: "create-part-addressable-ids-er-table"}
ENGINES = ("duckdb", "spark")
SETUP_KEYS = (
    "addressable-split-and-part",
    "infobase-split-and-part",
    "register-part-tables[addressable_ids]",
    "register-part-tables[infobase_attributes]",
    "prepare-part-tables",
)


# --------------------------------------------------------------------------- in the measured process


def step_params(home: Path, key_text: str, engine: str) -> dict[str, Any]:
    """What the runner would give the key locally, on `engine`, with the benchmark's cores and memory.

    Each engine writes its own copy of the step's output (its own split_root / er_root, and for step 5
    its own copy of the catalog); step 5 of both engines reads the part tables the DuckDB setup registered.
    """
    from flywheel.params import resolve_params
    from flywheel.spec import load_project

    project = load_project("db-refresh")
    spec = project.spec
    key = next(k for k in spec.keys if str(k) == key_text)
    params = resolve_params(spec, key, "local", project.config.environment("local"), str(home), engine=engine)
    params.update(
        {
            "threads": 2,
            "memory_limit": "4GB",
            "spark_master": "local[2]",
            "temp_directory": str(home / "tmp" / engine),
            "monitor_fail_on_breach": False,
        }
    )
    if key.step == STEPS[1]:
        params["split_root"] = str(home / "data" / f"split_{engine}")
    if key.step == STEPS[5]:  # its own ER table, registered in its own copy of the catalog
        params["er_root"] = str(home / "data" / f"er_{engine}")
        own = home / f"catalog_{engine}.duckdb"
        if not own.exists():
            shutil.copyfile(params["catalog"], own)
        params["catalog"] = str(own)
    return params


def run_one(home: Path, key_text: str, engine: str) -> dict[str, Any]:
    """Run one step in this process; on Spark, stop the JVM and wait for it so the kernel counts it."""
    from flywheel.entry import call_job
    from flywheel.invocation import StepInvocation
    from flywheel.pipelines.db_refresh import engine as engines

    params = step_params(home, key_text, engine)
    step, _, context = key_text.partition("[")
    started = time.perf_counter()
    session_seconds = 0.0
    if engine == "spark":  # start the JVM first, to show what it costs on its own
        engines.open_session(params)
        session_seconds = time.perf_counter() - started
    body = call_job(
        StepInvocation(
            pipeline="db-refresh",
            step=step,
            context=context.rstrip("]") or None,
            run_id=1,
            attempt=1,
            env="local",
            job=_job_of(step),
            params=params,
        )
    )
    seconds = time.perf_counter() - started
    if engine == "spark":
        _stop_spark_and_wait()
    return {
        "ok": body["ok"],
        "error": body.get("error_message"),
        "metrics": body.get("metrics"),
        "seconds_in_process": round(seconds, 3),
        "session_seconds": round(session_seconds, 3),
        "self_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "children_maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    }


def _job_of(step: str) -> str:
    from flywheel.spec import load_project

    return load_project("db-refresh").spec.step(step).job or ""


def _stop_spark_and_wait() -> None:
    from pyspark import SparkContext

    context = SparkContext._active_spark_context
    if context is None:
        return
    gateway = context._gateway
    context.stop()
    process = getattr(gateway, "proc", None)
    gateway.shutdown()
    if process is not None:
        if process.stdin is not None:
            process.stdin.close()  # the JVM exits when its stdin closes
        process.wait(timeout=60)


# --------------------------------------------------------------------------- the driver


def measure(home: Path, key_text: str, engine: str) -> dict[str, Any]:
    """One fresh process; wall time and peak memory from os.wait4."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    out = home / "tmp" / f"measure-{os.getpid()}-{time.monotonic_ns()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "--child", str(home), key_text, engine, str(out)]
    began = time.perf_counter()
    with open(home / "tmp" / f"{engine}.log", "ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0 or not out.exists():
        raise RuntimeError(f"{engine} {key_text} exited {status}; see {home / 'tmp' / (engine + '.log')}")
    child = json.loads(out.read_text())
    if not child["ok"]:
        raise RuntimeError(f"{engine} {key_text} failed: {child['error']}")
    peak_kb = child["self_maxrss_kb"] + (child["children_maxrss_kb"] if engine == "spark" else 0)
    return {
        "engine": engine,
        "key": key_text,
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak_kb / 1024),
        "wait4_maxrss_mb": round(usage.ru_maxrss / 1024),
        "jvm_start_s": child["session_seconds"] if engine == "spark" else None,
        "rows_written": (child["metrics"] or {}).get("rows_written") or (child["metrics"] or {}).get("er_rows"),
    }


def prepare(home: Path, rows: int, seed: int) -> None:
    """Raw data, then steps 1-4 on DuckDB in this process: the part tables step 5 reads."""
    from flywheel.entry import call_job
    from flywheel.invocation import StepInvocation
    from flywheel.pipelines.db_refresh.sample_data import generate

    generate(home / "data" / "raw", rows=rows, seed=seed, files=8)
    for key_text in SETUP_KEYS:
        params = step_params(home, key_text, "duckdb")
        params["split_root"] = str(home / "data" / "split_part")  # where step 3's storage roots point
        step, _, context = key_text.partition("[")
        body = call_job(
            StepInvocation("db-refresh", step, context.rstrip("]") or None, 1, 1, "local", _job_of(step), params)
        )
        if not body["ok"]:
            raise RuntimeError(f"setup {key_text}: {body['error_message']}")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def table(results: list[Mapping[str, Any]]) -> str:
    lines = [
        "| rows | step | engine | wall | peak memory | of which JVM start | load (1/5/15 min) |",
        "|---:|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        jvm = f"{r['jvm_start_s']:.1f} s" if r["jvm_start_s"] is not None else "–"
        lines.append(
            f"| {r['rows']:,} | {r['step']} | {r['engine']} | {r['wall_s']:.1f} s | {r['peak_rss_mb']:,} MB "
            f"| {jvm} | {r['load_before']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,5000000", help="addressable rows, comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="measurements per step and engine (best is kept)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="flywheel-bench-engines-"))
    results: list[dict[str, Any]] = []
    started = time.time()
    try:
        for rows in (int(s) for s in args.sizes.split(",")):
            home = work / f"rows-{rows}"
            shutil.rmtree(home, ignore_errors=True)
            print(f"preparing {rows:,} rows (raw data, steps 1-4 on DuckDB) ...", flush=True)
            # In a process of its own: a child's peak RSS counts its parent's at fork time (Linux keeps
            # the pre-exec high-water mark), so this driver must stay small.
            subprocess.run(
                [sys.executable, __file__, "--prepare", str(home), str(rows), str(args.seed)],
                check=True,
                env={**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"},
            )
            for number, step in STEPS.items():
                for engine in ENGINES:
                    runs = []
                    for _ in range(args.repeat):
                        load = load_average()
                        runs.append({**measure(home, step, engine), "load_before": load})
                    best = min(runs, key=lambda r: r["wall_s"])
                    row = {"rows": rows, "step": f"{number} {step}", **best, "runs": runs}
                    results.append(row)
                    print(
                        f"{rows:>10,}  step {number}  {engine:<6}  {best['wall_s']:7.1f} s  "
                        f"{best['peak_rss_mb']:6,} MB  (load {best['load_before']})",
                        flush=True,
                    )
            shutil.rmtree(home, ignore_errors=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    document = {
        "benchmark": "engines",
        "driver_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\nwritten to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, home_arg, key_arg, engine_arg, out_arg = sys.argv
        Path(out_arg).write_text(json.dumps(run_one(Path(home_arg), key_arg, engine_arg)))
    elif len(sys.argv) > 1 and sys.argv[1] == "--prepare":
        _, _, home_arg, rows_arg, seed_arg = sys.argv
        prepare(Path(home_arg), int(rows_arg), int(seed_arg))
    else:
        main()
