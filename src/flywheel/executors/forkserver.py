"""A fork server: each step still runs in its own process, without paying Python's start-up each time.

The runner starts one small server per run (`python -m flywheel.executors.forkserver [MODULE ...]`)
that has imported only the light entry point, and the environment's `preload` modules (libraries the
jobs share, such as DuckDB: half a second a step otherwise). For each attempt the server forks a child that starts a new
session (so the runner can stop its whole process group), sends its output to the attempt's log,
takes the attempt's environment, imports the job fresh and runs it. Forking costs a few milliseconds
where a fresh interpreter costs tens, which is what keeps a 200-step chain at seconds, not minutes.

Protocol: JSON lines. Requests on the server's stdin: `{"id", "argv" | "invocation", "log", "env",
"cwd", "path"}`; replies on its stdout: `{"id", "pid"}` when forked, `{"id", "status"}` (a wait status)
when the child ends. The server is single-threaded (forking from a threaded process is unsafe); it
learns of ended children through SIGCHLD on a wake-up pipe. When its stdin closes (the runner ended,
or was killed) it stops every child it started: no step outlives its runner.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_GRACE_SECONDS = 5.0


# -- the server (runs in its own process) ---------------------------------------------------------


def _child(request: Mapping[str, Any], keep_fds: tuple[int, ...]) -> None:
    """In the forked child: become a session leader with the attempt's log, env and path; run; exit."""
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        for fd in (log, null, *keep_fds):
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if request.get("argv"):
            os.execv(request["argv"][0], request["argv"])
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the process's own stdout
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        for entry in request.get("path") or []:  # after the standard library: a project's `types.py` or
            if entry not in sys.path:  # `random.py` must not shadow the modules every step imports
                sys.path.append(entry)
        from flywheel.entry import flush_output, run_invocation
        from flywheel.invocation import StepInvocation

        code = run_invocation(StepInvocation.from_json(request["invocation"]))
        flush_output()
        os._exit(code)
    except BaseException as exc:  # the child must never return into the server's loop
        try:
            os.write(2, f"flywheel fork server: the step could not start: {exc!r}\n".encode())
        finally:
            os._exit(70)


def serve(preload: tuple[str, ...] = ()) -> None:
    import importlib

    import flywheel.entry  # noqa: F401 - imported once here, inherited by every child

    for module in preload:  # the environment's shared libraries, inherited the same way
        with contextlib.suppress(Exception):  # a step that needs a broken module reports it in its own log
            importlib.import_module(module)

    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides when steps stop
    children: dict[int, Any] = {}
    out = sys.stdout
    selector = selectors.DefaultSelector()
    stdin = sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer
    in_fd = stdin.fileno()
    selector.register(in_fd, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    pending = b""
    open_input = True

    def reply(body: Mapping[str, Any]) -> None:
        out.write(json.dumps(body) + "\n")
        out.flush()

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            request_id = children.pop(pid, None)
            if request_id is not None:
                reply({"id": request_id, "status": status})

    while open_input or children:
        if not open_input:
            _stop_all(children)
            reap()
            break
        for key, _ in selector.select(timeout=1.0):
            if key.fd == wake_read:
                os.read(wake_read, 4096)
                reap()
                continue
            chunk = os.read(in_fd, 65536)
            if not chunk:
                open_input = False
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request, (wake_read, wake_write, selector.fileno()))
                children[pid] = request["id"]
                reply({"id": request["id"], "pid": pid})
        reap()


def _stop_all(children: dict[int, Any]) -> None:
    for pid in list(children):
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + _GRACE_SECONDS
    while children and time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            children.pop(pid, None)
        else:
            time.sleep(0.05)
    for pid in list(children):
        _signal_group(pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# -- the client (in the runner) -------------------------------------------------------------------


@dataclass
class _Pending:
    forked: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    pid: int = 0
    status: int = 0


class ForkServer:
    """The runner's handle on its fork server; safe to use from the runner's step threads."""

    def __init__(self, preload: tuple[str, ...] = ()) -> None:
        self._process = subprocess.Popen(
            # -P (safe path): the caller's working folder is not put on sys.path, so a `types.py` or
            # `logging.py` there cannot shadow the standard library in the server or in any step
            [sys.executable, "-P", "-m", "flywheel.executors.forkserver", *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self._lock = threading.Lock()
        self._next = 0
        self._pending: dict[int, _Pending] = {}
        self._reader = threading.Thread(target=self._read, name="flywheel-forkserver", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            body = json.loads(line)
            slot = self._pending.pop(body["id"], None) if "status" in body else self._pending.get(body["id"])
            if slot is None:
                continue
            if "pid" in body:
                slot.pid = body["pid"]
                slot.forked.set()
            else:
                slot.status = body["status"]
                slot.ended.set()
        for slot in list(self._pending.values()):  # the server died: nothing more will come
            slot.status = slot.status or (128 + signal.SIGKILL) << 8
            slot.forked.set()
            slot.ended.set()

    @property
    def alive(self) -> bool:
        return self._process.poll() is None

    def start(self, request: dict[str, Any]) -> tuple[int, _Pending]:
        with self._lock:
            self._next += 1
            request_id = self._next
            slot = self._pending[request_id] = _Pending()
            assert self._process.stdin is not None
            self._process.stdin.write((json.dumps({**request, "id": request_id}) + "\n").encode())
            self._process.stdin.flush()
        slot.forked.wait()
        return slot.pid, slot

    def wait(self, slot: _Pending) -> int:
        """The child's exit code; negative for a signal, as subprocess reports it."""
        slot.ended.wait()
        return os.waitstatus_to_exitcode(slot.status) if slot.status else 0

    def close(self) -> None:
        """Close the server's input: it stops any child still running and exits by itself. Nothing is
        running when a run ends normally, so the runner does not wait for the server's own exit."""
        if self._process.stdin is not None and not self._process.stdin.closed:
            self._process.stdin.close()


def main() -> None:
    serve(tuple(sys.argv[1:]))


if __name__ == "__main__":
    main()
