"""What the dashboard's pages cost at 10,000 runs: the runs grid, needs-attention, incidents, a run's
page, and the log viewer on a 100 MB log.

    uv run python bench/dashboard.py                 # 10,000 runs in a scratch home
    uv run python bench/dashboard.py --runs 1000 --repeat 20

A journal of db-refresh-shaped runs is written through the journal API (the events a real run
appends, in the same order: 8 keys, step 3 with its two contexts; about 1 run in 8 fails at a random
key and is resumed, half of those resumes reusing everything upstream, and some incidents get a
note), then the real dashboard (uvicorn on 127.0.0.1, the same app `flywheel ui` serves) is asked for
each page over HTTP. Reported: the first request after the journal was written (it builds the run
index: a one-off cost per home), the median and worst of `--repeat` requests after that, and the
same page after one more run was appended (the index catches up with that run only). Then one more
failed run whose step wrote a 100 MB log: its page, the log viewer (the capped tail) and one live-follow
poll (`?from=`) near the end of the log.
Results go to bench/results/dashboard.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from flywheel.events import (
    IncidentNoted,
    RunFinished,
    RunOutcome,
    RunStarted,
    StepFailed,
    StepReused,
    StepStarted,
    StepSucceeded,
)
from flywheel.journal import open_journal
from flywheel.spec import StepKey
from flywheel.ui.app import Settings, create_app
from flywheel.ui.security import Guard

RESULTS = Path(__file__).resolve().parent / "results" / "dashboard.json"
KEYS = [
    StepKey("addressable-split-and-part"),
    StepKey("infobase-split-and-part"),
    StepKey("register-part-tables", "addressable_ids"),
    StepKey("register-part-tables", "infobase_attributes"),
    StepKey("prepare-part-tables"),
    StepKey("create-part-addressable-ids-er-table"),
    StepKey("generate-data-monitor-report"),
    StepKey("generate-cleanrooms-report"),
]
PAGES = ["/runs", "/runs?attention=1", "/runs?status=failed", "/incidents", "/incidents/report?since=all"]


def write_runs(home: Path, count: int, seed: int) -> int:
    """Append `count` runs' events (most failures resumed, some resumes failing again, some failures left
    for a later fresh run to supersede); returns the number of runs written."""
    rng = random.Random(seed)
    clock = time.time() - count * 600.0
    written = 0
    with open_journal(home) as journal:
        while written < count:
            run_id = journal.new_run("db-refresh", "dev")
            written += 1
            clock += 600.0
            events: list[Any] = [
                RunStarted(run_id=run_id, at=clock, pipeline="db-refresh", env="dev", user="bench", host="bench")
            ]
            failing = KEYS[rng.randrange(len(KEYS))] if rng.random() < 0.125 else None
            for key in KEYS:
                clock += rng.uniform(5, 60)
                events.append(StepStarted(run_id=run_id, at=clock, step=key.step, context=key.context, attempt=1))
                took = rng.uniform(5, 60)
                if key == failing:
                    events.append(
                        StepFailed(
                            run_id=run_id,
                            at=clock + took,
                            step=key.step,
                            context=key.context,
                            attempt=1,
                            duration=took,
                            error_type="AnalysisException",
                            error_message=f"Table or view not found: part_{rng.randrange(4)}",
                        )
                    )
                    break
                events.append(
                    StepSucceeded(
                        run_id=run_id, at=clock + took, step=key.step, context=key.context, attempt=1, duration=took
                    )
                )
            outcome = RunOutcome.FAILED if failing else RunOutcome.SUCCEEDED
            events.append(RunFinished(run_id=run_id, at=clock + 1, outcome=outcome))
            journal.append(*events)
            if failing is None or written >= count:
                continue
            if rng.random() < 0.2:
                journal.append(  # what `flywheel incident note` appends
                    IncidentNoted(
                        run_id=run_id, at=clock + 2, cause="late delivery", fix="re-ran the export", user="bench@bench"
                    )
                )
            if rng.random() < 0.3:  # nobody resumed it: the next fresh success supersedes the incident
                continue
            resume = journal.new_run("db-refresh", "dev")
            written += 1
            clock += 600.0
            resumed: list[Any] = [
                RunStarted(
                    run_id=resume,
                    at=clock,
                    pipeline="db-refresh",
                    env="dev",
                    parent_run=run_id,
                    root_run=run_id,
                    user="bench",
                    host="bench",
                )
            ]
            reached, resume_fails = False, rng.random() < 0.2  # a failed resume joins the incident
            for key in KEYS:
                reached = reached or key == failing
                if not reached:
                    resumed.append(
                        StepReused(
                            run_id=resume,
                            at=clock,
                            step=key.step,
                            context=key.context,
                            source_run=run_id,
                            duration=30.0,
                        )
                    )
                    continue
                clock += 30
                resumed.append(StepStarted(run_id=resume, at=clock, step=key.step, context=key.context, attempt=1))
                if resume_fails:
                    resumed.append(
                        StepFailed(
                            run_id=resume,
                            at=clock + 5,
                            step=key.step,
                            context=key.context,
                            attempt=1,
                            duration=5.0,
                            error_type="AnalysisException",
                            error_message="Table or view not found: part_9",
                        )
                    )
                    break
                resumed.append(
                    StepSucceeded(
                        run_id=resume, at=clock + 20, step=key.step, context=key.context, attempt=1, duration=20.0
                    )
                )
            ended = RunOutcome.FAILED if resume_fails else RunOutcome.SUCCEEDED
            resumed.append(RunFinished(run_id=resume, at=clock + 21, outcome=ended))
            journal.append(*resumed)
    return written


def write_big_log_run(home: Path, megabytes: int) -> tuple[int, str]:
    """One failed run whose only attempt wrote `megabytes` MB of log; its id and the log's name."""
    with open_journal(home) as journal:
        run_id = journal.new_run("db-refresh", "dev")
        log = home / "logs" / f"run-{run_id}" / "addressable-split-and-part.attempt-1.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        line = "INFO reading part 0042 of the raw addressable files: 131072 rows, 9.4 MB\n"
        with open(log, "w") as handle:
            for _ in range(megabytes * 1024 * 1024 // len(line)):
                handle.write(line)
            handle.write("ERROR AnalysisException: Table or view not found: part_7\n")
        now = time.time()
        key = KEYS[0]
        journal.append(
            RunStarted(run_id=run_id, at=now, pipeline="db-refresh", env="dev", user="bench", host="bench"),
            StepStarted(run_id=run_id, at=now, step=key.step, attempt=1, log_path=str(log)),
            StepFailed(
                run_id=run_id,
                at=now + 1,
                step=key.step,
                attempt=1,
                duration=1.0,
                error_type="AnalysisException",
                error_message="Table or view not found: part_7",
            ),
            RunFinished(run_id=run_id, at=now + 2, outcome=RunOutcome.FAILED),
        )
    return run_id, log.name


def timed(port: int, page: str, repeat: int) -> dict[str, float]:
    get(port, page)
    times = [get(port, page) for _ in range(repeat)]
    print(f"{page[:60]:60} median {statistics.median(times):7.1f} ms   max {max(times):7.1f} ms")
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


def get(port: int, path: str) -> float:
    began = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 200, (path, response.status)
    return (time.perf_counter() - began) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--seed", type=int, default=20261203)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="fw-bench-ui-")) / "home"
    home.mkdir(parents=True)
    began = time.perf_counter()
    written = write_runs(home, args.runs, args.seed)
    print(f"wrote {written} runs in {time.perf_counter() - began:.1f} s into {home}")

    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(Settings(home=home, guard=Guard.for_bind("127.0.0.1", port, None)))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)

    results: dict[str, Any] = {"runs": written, "pages": {}}
    first = get(port, PAGES[0])
    results["first_request_ms"] = round(first, 1)
    print(f"first request (builds the run index): {first:.0f} ms")
    for page in PAGES:
        results["pages"][page] = timed(port, page, args.repeat)
    write_runs_after = write_runs(home, 1, args.seed + 1)
    caught_up = get(port, PAGES[0])
    results["after_one_more_run_ms"] = round(caught_up, 1)
    print(f"/runs after {write_runs_after} more run (the index folds it alone): {caught_up:.0f} ms")

    big, name = write_big_log_run(home, 100)
    size = (home / "logs" / f"run-{big}" / name).stat().st_size
    viewer = f"/runs/{big}/logs/{name}/view"
    for page in (f"/runs/{big}", viewer, f"{viewer}?from={size - 4096}&line=1"):
        results["pages"][page.replace(str(big), "N", 1)] = timed(port, page, args.repeat)
    server.should_exit = True
    thread.join(10)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
