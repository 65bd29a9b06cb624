"""One error base with a headline, a fix and an exit code: user mistakes are not crashes.

Only the CLI prints and exits; library code raises these.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented process exit codes (README, `flywheel --help`)."""

    OK = 0
    STEP_FAILED = 1
    USAGE = 2
    BACKEND = 3
    INTERRUPTED = 130


class FlywheelError(Exception):
    """An error the operator can act on. `fix` says what to do about it."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, *, fix: str | None = None, details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.details = details


class UsageError(FlywheelError):
    """Bad flags, unknown steps, a request that cannot be planned."""


class DefinitionError(FlywheelError):
    """The pipeline definition or project configuration is invalid; `details` lists every problem."""


class PlanRefused(FlywheelError):
    """The request would run a step on missing inputs, or reuse what cannot be reused."""


class RunLocked(FlywheelError):
    """Another runner holds the pipeline and environment."""

    exit_code = ExitCode.BACKEND


class BackendError(FlywheelError):
    """The environment or a backend (AWS, disk, journal) failed us."""

    exit_code = ExitCode.BACKEND


class NotFound(FlywheelError):
    """A run, step or incident that does not exist."""
