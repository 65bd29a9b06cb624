"""The console channel: the same message the team gets, written to the operator's terminal."""

from __future__ import annotations

from collections.abc import Callable

from flywheel.notify.base import Message, Redactor


class ConsoleNotifier:
    """Writes each message through `write` (the CLI passes a Rich console's print), indented under the
    progress lines. A failure is already on a progress line, so only its advice is written: the cause,
    the hints and a fix recorded for the same error before."""

    name = "console"

    def __init__(self, write: Callable[[str], None], redactor: Redactor | None = None) -> None:
        self.write = write
        self.redactor = redactor or Redactor()

    def send(self, message: Message) -> None:
        if message.brief:
            text = "\n".join(f"      {line}" for line in message.brief)
        else:
            text = "\n".join([f"  {message.title}", *(f"      {line}" for line in message.lines)])
        self.write(self.redactor(text))
