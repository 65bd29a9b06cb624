"""db-refresh on the embedded engine: the whole pipeline at N rows, and step 1 beside a raw DuckDB COPY.

    uv run python bench/pipeline.py --rows 10000000          # whole pipeline, wall time and peak memory
    uv run python bench/pipeline.py --rows 5000000 --step1   # step 1 vs `COPY ... (PARTITION_BY ...)`

Memory is the peak of the *sum* of resident memory over the runner and every step process (steps 1 and
2 run side by side), sampled from /proc every 0.2 s; wall time is the whole `flywheel run` process.
The raw DuckDB query does the same work as step 1: the same input files and explicit schema, the same
normalisation, the same dedupe rule (latest last_seen, ties to the smallest remaining fields) and the
same bucket expression, written hive-partitioned with COPY.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FLYWHEEL = [sys.executable, "-m", "flywheel"]


def _tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(rss.get(pid, 0) for pid in tree)


def timed(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    peak = 0
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.2):
            peak = max(peak, _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {err[-2000:]}")
    return {"wall_s": round(wall, 1), "peak_tree_gib": round(peak / 2**30, 2)}


def cpu_probe() -> float:
    """Seconds for a fixed pure-Python loop: this VM's speed drifts by up to half between minutes, so
    every result carries the probe taken before and after it (~0.58 s at the VM's best)."""
    start = time.perf_counter()
    sum(range(30_000_000))
    return round(time.perf_counter() - start, 2)


def generate(home: Path, rows: int, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [*FLYWHEEL, "data", "generate", "--rows", str(rows), "--seed", "7", "--root", str(home / "data" / "raw")],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


RAW_STEP1 = """
SET memory_limit = '4GB'; SET threads = 1; SET preserve_insertion_order = false;
COPY (
  WITH clean AS (
    SELECT {clean_columns}, last_seen
    FROM read_csv('{files}', header = true, auto_detect = false,
                  columns = {{'id': 'VARCHAR', 'hashed_email': 'VARCHAR', 'hashed_phone': 'VARCHAR',
                             'maid': 'VARCHAR', 'ip': 'VARCHAR', 'zip': 'VARCHAR', 'household_id': 'VARCHAR',
                             'last_seen': 'TIMESTAMP'}})
  ), kept AS (
    SELECT * FROM clean WHERE regexp_matches(id, '^[0-9a-f]{{64}}$')
    QUALIFY row_number() OVER (PARTITION BY id ORDER BY last_seen DESC NULLS LAST, hashed_email NULLS LAST,
      hashed_phone NULLS LAST, maid NULLS LAST, ip NULLS LAST, zip NULLS LAST, household_id NULLS LAST) = 1
  )
  SELECT *, (('0x' || substr(sha256(id), 1, 8))::BIGINT % {n}) AS id_part FROM kept
) TO '{target}' (FORMAT parquet, PARTITION_BY (id_part));
"""


def _trimmed(column: str, lower: bool) -> str:
    """Step 1's canonical forms (`canonical.py`): spaces cut only where one starts or ends the value."""
    value = f"CASE WHEN starts_with({column}, ' ') OR ends_with({column}, ' ') THEN trim({column}) ELSE {column} END"
    return f"nullif({'lower(' + value + ')' if lower else value}, '') AS {column}"


CLEAN_COLUMNS = ", ".join(
    _trimmed(column, lower=column in ("id", "hashed_email", "hashed_phone", "maid"))
    for column in ("id", "hashed_email", "hashed_phone", "maid", "ip", "zip", "household_id")
)


def step_seconds(home: Path) -> dict[str, float]:
    """Each step's duration in the last run, as the journal recorded it (a context after `[`)."""
    with sqlite3.connect(home / "journal.sqlite") as journal:
        rows = journal.execute(
            "SELECT step, context, json_extract(body, '$.duration') FROM events "
            "WHERE kind = 'step_succeeded' AND run_id = (SELECT max(run_id) FROM events) ORDER BY seq"
        ).fetchall()
    return {f"{step}[{context}]" if context else step: round(seconds, 1) for step, context, seconds in rows}


def raw_step1(home: Path, n_parts: int) -> dict[str, Any]:
    target = home / "raw-copy"
    shutil.rmtree(target, ignore_errors=True)
    files = str(home / "data" / "raw" / "addressable_ids" / "*.csv.gz")
    sql = RAW_STEP1.format(files=files, n=n_parts, target=target, clean_columns=CLEAN_COLUMNS)
    code = f"import duckdb; duckdb.connect().execute({sql!r})"
    return timed([sys.executable, "-c", code], dict(os.environ))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--step1", action="store_true", help="step 1 beside a raw DuckDB COPY")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fw-pipeline-bench-"))
    env = {**os.environ, "FLYWHEEL_HOME": str(home)}
    result: dict[str, Any] = {"rows": args.rows, "load_before": os.getloadavg()[0], "cpu_probe_before_s": cpu_probe()}
    try:
        result["generate_s"] = round(generate(home, args.rows, env), 1)
        if args.step1:
            result["step1_flywheel"] = timed([*FLYWHEEL, "run", "db-refresh", "--only", "1"], env)
            result["step1_raw_duckdb_copy"] = raw_step1(home, 16)
            ratio = result["step1_flywheel"]["wall_s"] / result["step1_raw_duckdb_copy"]["wall_s"]
            result["step1_ratio"] = round(ratio, 2)
        else:
            result["pipeline"] = timed([*FLYWHEEL, "run", "db-refresh"], env)
            result["steps_s"] = step_seconds(home)
        result["load_after"] = os.getloadavg()[0]
        result["cpu_probe_after_s"] = cpu_probe()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(result), flush=True)
    out = REPO / "bench" / "results" / f"pipeline-{args.rows}{'-step1' if args.step1 else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
