"""Local executors: a subprocess per attempt (the default), or a thread for light Python steps.

The subprocess starts in its own session so that a timeout, Ctrl-C or SIGTERM stops the whole
process group: nothing is left orphaned. A crash or a kill of the step is an outcome, never the
runner's death.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flywheel.disk import DISK_FULL, DISK_FULL_EXIT, why_writes_fail
from flywheel.entry import JOB_PATH_VARIABLE
from flywheel.executors.base import Attempt, Outcome
from flywheel.executors.forkserver import ForkServer
from flywheel.logtail import tail

_GRACE_SECONDS = 5.0
_POLL_SECONDS = 0.2


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the step's process group, then SIGKILL what is left after a grace period."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(_GRACE_SECONDS)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _tail(path: Path, lines: int = 20) -> list[str]:
    """The last non-blank lines of a step's log (for its error message)."""
    return [line for line in tail(path, lines * 4, max_bytes=16384).lines if line.strip()][-lines:]


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


@dataclass
class _Watch:
    done: threading.Event
    thread: threading.Thread
    reason: str | None = None


def _watch(stop: Callable[[], None], cancel: threading.Event, timeout: float | None, started: float) -> _Watch:
    """Stop the step's process group on cancel or timeout, from a side thread, so the main wait stays
    a blocking `waitpid` instead of a polling loop."""
    watch = _Watch(done=threading.Event(), thread=threading.Thread())

    def run() -> None:
        while not watch.done.wait(_POLL_SECONDS):
            if cancel.is_set():
                watch.reason = "cancelled"
            elif timeout is not None and time.monotonic() - started > timeout:
                watch.reason = "timeout"
            else:
                continue
            stop()
            return

    watch.thread = threading.Thread(target=run, name="flywheel-watch", daemon=True)
    watch.thread.start()
    return watch


def _stop_pid_group(pid: int, wait: Callable[[], object]) -> None:
    """SIGTERM a step's process group, SIGKILL it if it is still there after the grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        if sig is signal.SIGTERM and wait():
            return


class SubprocessExecutor:
    """Each attempt in its own process and session, its output in the attempt's log.

    Processes are forked from a per-run fork server (see `forkserver`); `FLYWHEEL_FORKSERVER=0` starts a
    fresh interpreter per attempt instead.
    """

    name = "subprocess"

    def __init__(self, preload: tuple[str, ...] = ()) -> None:
        self._use_fork_server = os.environ.get("FLYWHEEL_FORKSERVER", "1") != "0"
        self._preload = preload
        self._fork_server: ForkServer | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the fork server now rather than at the first step: the runner calls this before it
        plans, so the server's own start-up (tens of milliseconds) overlaps the planning."""
        if self._use_fork_server:
            self._server()

    def _server(self) -> ForkServer:
        with self._lock:
            if self._fork_server is None or not self._fork_server.alive:
                self._fork_server = ForkServer(self._preload)
            return self._fork_server

    def close(self) -> None:
        with self._lock:
            if self._fork_server is not None:
                self._fork_server.close()
                self._fork_server = None

    def _popen(
        self, attempt: Attempt, env: dict[str, str], invocation_json: str, cancel: threading.Event, started: float
    ) -> tuple[int, _Watch]:
        argv = (
            ["/bin/bash", "-c", attempt.command]
            if attempt.command is not None
            else [sys.executable, "-P", "-m", "flywheel.entry"]  # -P: the caller's folder is not on sys.path
        )
        with attempt.log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if attempt.command is None else subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
            if attempt.command is None and process.stdin is not None:
                try:
                    process.stdin.write(invocation_json.encode())
                    process.stdin.close()
                except BrokenPipeError:
                    pass
            stopped = _watch(lambda: _stop_group(process), cancel, attempt.timeout, started)
            return process.wait(), stopped

    def execute(self, attempt: Attempt, cancel: threading.Event) -> Outcome:
        inv = attempt.invocation
        attempt.log_path.parent.mkdir(parents=True, exist_ok=True)
        result_path = attempt.log_path.with_suffix(".result.json")
        result_path.unlink(missing_ok=True)
        env = dict(os.environ)
        env.update(
            FLYWHEEL_RUN_ID=str(inv.run_id),
            FLYWHEEL_STEP=inv.step,
            FLYWHEEL_CONTEXT=inv.context or "",
            FLYWHEEL_ATTEMPT=str(inv.attempt),
            FLYWHEEL_PARAMS=json.dumps(dict(inv.params), default=str),
        )
        if attempt.pythonpath and attempt.command is not None:  # a shell step's scripts import from the project
            env["PYTHONPATH"] = os.pathsep.join([*attempt.pythonpath, *filter(None, [env.get("PYTHONPATH")])])
        elif attempt.pythonpath:  # a job step: after the standard library, never before it (`entry.main`)
            env[JOB_PATH_VARIABLE] = os.pathsep.join(attempt.pythonpath)
        for name, value in inv.params.items():
            if isinstance(value, str | int | float | bool):
                env[f"FLYWHEEL_PARAM_{name.upper().replace('-', '_')}"] = str(value)
        invocation_json = type(inv)(**{**inv.__dict__, "result_path": str(result_path)}).to_json()
        started = time.monotonic()
        if self._use_fork_server:
            server = self._server()
            pid, slot = server.start(
                {
                    "argv": ["/bin/bash", "-c", attempt.command] if attempt.command is not None else None,
                    "invocation": invocation_json,
                    "log": str(attempt.log_path),
                    "env": env,
                    "cwd": os.getcwd(),
                    "path": list(attempt.pythonpath),
                }
            )
            stopped = _watch(
                lambda: _stop_pid_group(pid, lambda: slot.ended.wait(_GRACE_SECONDS)), cancel, attempt.timeout, started
            )
            code = server.wait(slot)
        else:
            code, stopped = self._popen(attempt, env, invocation_json, cancel, started)
        stopped.done.set()
        stopped.thread.join()
        if stopped.reason == "cancelled":
            return Outcome(
                succeeded=False,
                cancelled=True,
                exit_code=code,
                error_type="Interrupted",
                error_message="stopped by the operator",
            )
        if stopped.reason == "timeout":
            return Outcome(
                succeeded=False,
                timed_out=True,
                exit_code=code,
                error_type="Timeout",
                error_message=f"timed out after {attempt.timeout:g}s (raise it with --set {inv.step}.timeout=...)",
            )
        return self._outcome(code, result_path, attempt.log_path, attempt.command is not None)

    @staticmethod
    def _outcome(code: int, result_path: Path, log_path: Path, is_command: bool) -> Outcome:
        body: dict[str, object] = {}
        if result_path.exists():
            try:
                body = json.loads(result_path.read_text())
            except (OSError, ValueError):
                body = {}
        if code == 0 and (is_command or body.get("ok")):
            outputs = body.get("outputs") or []
            return Outcome(succeeded=True, exit_code=0, outputs=tuple(outputs))  # type: ignore[arg-type]
        if code < 0:
            return Outcome(
                succeeded=False,
                exit_code=code,
                error_type="Killed",
                error_message=f"the step's process was killed by {_signal_name(code)}",
            )
        if body and not body.get("ok"):
            return Outcome(
                succeeded=False,
                exit_code=code,
                error_type=str(body.get("error_type") or "Error"),
                error_message=str(body.get("error_message") or ""),
            )
        if code == DISK_FULL_EXIT and not body and not is_command:
            return Outcome(
                succeeded=False,
                exit_code=code,
                error_type=DISK_FULL,
                error_message=f"the step could not write its result beside {log_path}: "
                f"{why_writes_fail(log_path.parent)}",
            )
        tail = _tail(log_path, 1)
        return Outcome(
            succeeded=False,
            exit_code=code,
            error_type="CommandFailed" if is_command else "Crashed",
            error_message=f"exited with code {code}" + (f": {tail[-1]}" if tail else ""),
        )


class InProcessExecutor:
    """Runs a Python job in a thread of the runner: no process start-up, no isolation.

    For light steps only: a timeout cannot stop a thread, and a crash takes the runner with it.
    """

    name = "inprocess"

    def __init__(self) -> None:
        self._shell: SubprocessExecutor | None = None  # for shell steps, made once and closed with this one
        self._lock = threading.Lock()

    def start(self) -> None:
        """Nothing to start: Python jobs run in the runner's own threads."""

    def close(self) -> None:
        with self._lock:
            shell, self._shell = self._shell, None
        if shell is not None:
            shell.close()

    def execute(self, attempt: Attempt, cancel: threading.Event) -> Outcome:
        from flywheel.entry import call_job

        if attempt.command is not None:  # a shell step needs a process: one subprocess executor per run
            with self._lock:
                if self._shell is None:
                    self._shell = SubprocessExecutor()
                shell = self._shell
            return shell.execute(attempt, cancel)
        body = call_job(attempt.invocation)
        if body["ok"]:
            return Outcome(succeeded=True, exit_code=0, outputs=tuple(body.get("outputs") or ()))
        return Outcome(
            succeeded=False,
            exit_code=1,
            error_type=str(body["error_type"]),
            error_message=str(body["error_message"]),
        )
