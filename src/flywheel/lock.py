"""One runner per pipeline and environment: runs share output locations.

A local lock is an `flock` on a file in the home. The kernel drops it when the holder dies (SIGKILL,
power loss), so a lock left by a dead process is taken over without any guessing; the file keeps the
holder's identity so a refusal can name who holds it and since when.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from flywheel.errors import RunLocked


@dataclass(frozen=True)
class Holder:
    user: str
    host: str
    pid: int
    since: float
    run_id: int | None = None
    command: str = ""

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        run = f" on run {self.run_id}" if self.run_id else ""
        return f"{self.user}@{self.host} (pid {self.pid}) since {when}{run}"


class Lock(Protocol):
    """What a run lock offers: the local `RunLock` and the cross-machine lock of AWS environments."""

    def holder(self) -> Holder | None: ...

    def acquire(self, *, run_id: int | None = None, command: str = "") -> Lock: ...

    def update(self, *, run_id: int | None, command: str = "") -> None: ...

    def release(self) -> None: ...

    def __enter__(self) -> Lock: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def holds_run(lock: Lock, run_id: int) -> bool:
    """Whether a live runner on this machine is working on `run_id` (run ids are per journal)."""
    holder = lock.holder()
    return holder is not None and holder.run_id == run_id and holder.host == current_identity()[1]


def current_identity() -> tuple[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = os.environ.get("USER", "unknown")
    return user, socket.gethostname()


class RunLock:
    def __init__(self, home: Path, pipeline: str, env: str) -> None:
        self.path = home / "locks" / f"{pipeline}.{env}.lock"
        self.pipeline = pipeline
        self.env = env
        self._fd: int | None = None
        self.took_over: Holder | None = None

    def holder(self) -> Holder | None:
        """Who holds the lock now, or None when it is free (a dead holder does not hold it)."""
        if not self.path.exists():
            return None
        fd = os.open(self.path, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return self._read() or Holder("unknown", "unknown", 0, 0.0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def _read(self) -> Holder | None:
        try:
            return Holder(**json.loads(self.path.read_text() or "{}"))
        except (OSError, ValueError, TypeError):
            return None

    def acquire(self, *, run_id: int | None = None, command: str = "") -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self._read()
            who = holder.describe() if holder else "another process"
            raise RunLocked(
                f"{self.pipeline} in {self.env} is already being run by {who}",
                fix="wait for that run to finish (`flywheel status`), or stop it; two runners would "
                "overwrite each other's outputs",
            ) from None
        previous = self._read()
        if previous is not None and previous.pid:
            self.took_over = previous
        self._fd = fd
        self.update(run_id=run_id, command=command)
        return self

    def update(self, *, run_id: int | None, command: str = "") -> None:
        assert self._fd is not None
        user, host = current_identity()
        body = json.dumps(
            {
                "user": user,
                "host": host,
                "pid": os.getpid(),
                "since": time.time(),
                "run_id": run_id,
                "command": command,
            }
        ).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, body, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
