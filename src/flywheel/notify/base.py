"""The notifier contract every channel meets: the message, the channel protocol, its error, redaction.

Its own module so that channels living elsewhere (SNS, with the AWS code) depend on the contract
only, never on the package that builds the channels (that would be a cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from flywheel.durations import duration, when
from flywheel.redaction import AWS_SECRET_VARIABLES as AWS_SECRET_VARIABLES
from flywheel.redaction import Redactor as Redactor

MAX_ERROR_CHARS = 1500


class MessageKind(StrEnum):
    FAILED = "failed"
    RECOVERED = "recovered"
    OVERDUE = "overdue"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Message:
    """One notification: a one-line title (an email subject) and plain-text lines."""

    kind: MessageKind
    title: str
    lines: tuple[str, ...]
    pipeline: str
    env: str
    run_id: int
    step: str | None = None
    resume_command: str | None = None
    brief: tuple[str, ...] = ()  # for a terminal that already shows the progress lines: the advice only

    @property
    def text(self) -> str:
        return "\n".join((self.title, *self.lines))


class Notifier(Protocol):
    name: str

    def send(self, message: Message) -> None:
        """Deliver the message or raise `NotifyError` (with no secret in its text)."""
        ...


class NotifyError(Exception):
    """A channel could not deliver. Its text is already redacted."""


def duration_text(seconds: float | None) -> str:
    """A duration in a message: the units of `flywheel status`, `?` when unknown."""
    return duration(seconds, unknown="?")


def when_text(at: float) -> str:
    return when(at, seconds=False)


class Unavailable:
    """A channel that cannot work as configured (a secret's variable is unset, SNS is missing).

    It fails on each send, so the journal records every alert that did not go out, and the run goes on.
    """

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem

    def send(self, message: Message) -> None:
        raise NotifyError(self.problem)
