"""Start a resume from the dashboard in its own process, and find the run it became.

Never in the server: the runner installs signal handlers, holds the pipeline's lock for as long as the
run lasts and must outlive a closed browser tab or a restarted dashboard. So a resume is exactly the
command an operator would type, `python -m flywheel resume RUN --yes`, with the same home, in a new
session (Ctrl-C on the dashboard does not reach it). The page then follows the new run through the
journal, like any other run.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel.journal import Journal
from flywheel.logtail import tail


@dataclass
class ResumeJob:
    id: str
    source_run: int
    pipeline: str
    env: str
    started_at: float
    command: tuple[str, ...]
    output: Path
    process: subprocess.Popen[bytes]
    run_id: int | None = None
    exit_code: int | None = field(default=None)

    @property
    def running(self) -> bool:
        return self.exit_code is None


class Launcher:
    """Resume processes started by this dashboard, by job id. One at a time per pipeline and environment."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._jobs: dict[str, ResumeJob] = {}
        self._lock = threading.Lock()

    def active(self, pipeline: str, env: str) -> ResumeJob | None:
        with self._lock:
            return next(
                (j for j in self._jobs.values() if j.running and (j.pipeline, j.env) == (pipeline, env)),
                None,
            )

    def start(
        self,
        source_run: int,
        *,
        pipeline: str,
        env: str,
        definition: str | None,
        cwd: Path,
        note: str,
    ) -> ResumeJob:
        """Start `flywheel resume SOURCE --yes` for this home; return at once."""
        job_id = secrets.token_hex(6)
        folder = self.home / "ui"
        folder.mkdir(parents=True, exist_ok=True)
        output = folder / f"resume-{source_run}-{job_id}.log"
        command = [sys.executable, "-m", "flywheel", "resume", str(source_run), "--yes", "--env", env]
        command += ["--home", str(self.home), "--note", note]
        if definition:
            command += ["--pipeline", definition]
        environment = {**os.environ, "FLYWHEEL_HOME": str(self.home), "NO_COLOR": "1"}
        with output.open("wb") as sink:
            process = subprocess.Popen(
                command,
                cwd=cwd,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        job = ResumeJob(
            id=job_id,
            source_run=source_run,
            pipeline=pipeline,
            env=env,
            started_at=time.time(),
            command=tuple(command),
            output=output,
            process=process,
        )
        with self._lock:
            self._jobs[job_id] = job
        threading.Thread(target=self._reap, args=(job,), name=f"resume-{job_id}", daemon=True).start()
        return job

    def _reap(self, job: ResumeJob) -> None:
        """Wait for the process so it never lingers as a zombie, and keep its exit code."""
        code = job.process.wait()
        with self._lock:
            job.exit_code = code

    def get(self, job_id: str) -> ResumeJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def find_run(self, job: ResumeJob, journal: Journal) -> int | None:
        """The run the job started: the newest run of its pipeline and env that continues its source run."""
        if job.run_id is not None:
            return job.run_id
        for row in journal.runs(job.pipeline, job.env, limit=20):
            if row.created < job.started_at - 1:
                break
            started = journal.run_started(row.run_id)
            if started is not None and started.parent_run == job.source_run:
                job.run_id = row.run_id
                return row.run_id
        return None

    def describe(self, job: ResumeJob, journal: Journal) -> dict[str, Any]:
        """The job as JSON for the page: its run once it has one, or how it ended."""
        run_id = self.find_run(job, journal)
        exit_code = job.exit_code
        return {
            "job": job.id,
            "source_run": job.source_run,
            "run_id": run_id,
            "url": f"/runs/{run_id}" if run_id is not None else None,
            "state": "running" if exit_code is None else "exited",
            "exit_code": exit_code,
            "output": _tail(job.output) if exit_code is not None and run_id is None else "",
        }


def _tail(path: Path, limit: int = 4000) -> str:
    """The end of a resume's console output, about `limit` characters of it."""
    return "\n".join(tail(path, 10_000, max_bytes=limit).lines)
