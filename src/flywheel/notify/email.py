"""The email channel: one plain-text message over SMTP (optionally STARTTLS and login), standard library.

The password comes from the environment variable the configuration names; SMTP errors are reported by
type and server reply, never with the credentials.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from flywheel.notify.base import Message, NotifyError, Redactor


class EmailNotifier:
    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        user: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
        redactor: Redactor | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = tuple(recipients)
        self.user = user
        self._password = password
        self.starttls = starttls
        self.timeout = timeout
        self.redactor = (redactor or Redactor()).extend(password)

    def __repr__(self) -> str:
        return f"EmailNotifier({self.name!r}, {self.host}:{self.port})"

    def compose(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = self.redactor(message.title)
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.recipients)
        mail["Date"] = formatdate(localtime=True)
        mail["Message-ID"] = make_msgid(domain="flywheel")
        mail["X-Flywheel-Run"] = str(message.run_id)
        mail["X-Flywheel-Kind"] = message.kind.value
        mail.set_content(self.redactor(message.text) + "\n")
        return mail

    def send(self, message: Message) -> None:
        mail = self.compose(message)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.user and self._password:
                    smtp.login(self.user, self._password)
                smtp.send_message(mail)
        except smtplib.SMTPException as exc:
            raise NotifyError(
                self.redactor(f"email {self.name} via {self.host}:{self.port}: {type(exc).__name__}: {exc}")
            ) from None
        except OSError as exc:
            raise NotifyError(
                self.redactor(f"email {self.name}: cannot reach {self.host}:{self.port} ({exc})")
            ) from None
