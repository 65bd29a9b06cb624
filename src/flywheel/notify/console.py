"""The console channel: the same message the team gets, written to the operator's terminal."""

from __future__ import annotations

from collections.abc import Callable

from flywheel.notify import Message, Redactor


class ConsoleNotifier:
    """Writes each message through `write` (the CLI passes a Rich console's print), indented under the
    progress lines so that the cause, the hints and the resume command stand out."""

    name = "console"

    def __init__(self, write: Callable[[str], None], redactor: Redactor | None = None) -> None:
        self.write = write
        self.redactor = redactor or Redactor()

    def send(self, message: Message) -> None:
        text = "\n".join([f"  {message.title}", *(f"      {line}" for line in message.lines)])
        self.write(self.redactor(text))
