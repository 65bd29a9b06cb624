"""The webhook channel: a Slack-compatible JSON POST (`text` plus `blocks`), with the standard library.

The URL is a secret (a Slack incoming-webhook URL is its own credential): it comes from the environment
variable the configuration names and never appears in an error, a log line or the journal.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from flywheel.notify.base import Message, NotifyError, Redactor

MAX_SECTION = 2900  # Slack refuses a section text over 3000 characters


def _mrkdwn(text: str) -> str:
    """Slack's three escapes; everything else is shown as written."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(message: Message) -> dict[str, Any]:
    """The JSON body: `text` for any Slack-compatible receiver (Mattermost, Teams' Slack mode, ...),
    `blocks` for Slack's layout."""
    body = "\n".join(message.lines)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": message.title[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(body)[:MAX_SECTION]}},
    ]
    if message.resume_command:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"`{_mrkdwn(message.resume_command)}`"}]}
        )
    return {"text": message.text, "blocks": blocks}


class WebhookNotifier:
    def __init__(self, name: str, url: str, *, timeout: float = 10.0, redactor: Redactor | None = None) -> None:
        self.name = name
        self._url = url
        self.timeout = timeout
        # the URL (and its path, which holds a Slack token) is masked as a whole
        self.redactor = (redactor or Redactor()).extend(
            url, urlsplit(url).path if len(urlsplit(url).path) > 8 else None
        )

    def __repr__(self) -> str:
        return f"WebhookNotifier({self.name!r})"

    def send(self, message: Message) -> None:
        scheme = urlsplit(self._url).scheme
        if scheme not in ("http", "https"):
            raise NotifyError(f"webhook {self.name}: the URL must be http or https, not {scheme or 'empty'}")
        data = json.dumps(payload(self._redacted(message))).encode()
        request = urllib.request.Request(
            self._url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "flywheel"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # the scheme is checked above
                response.read(4096)
        except urllib.error.HTTPError as exc:
            raise NotifyError(
                self.redactor(f"webhook {self.name}: the receiver answered HTTP {exc.code} {exc.reason}")
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NotifyError(self.redactor(f"webhook {self.name}: cannot post ({reason})")) from None

    def _redacted(self, message: Message) -> Message:
        from dataclasses import replace

        return replace(
            message,
            title=self.redactor(message.title),
            lines=tuple(self.redactor(line) for line in message.lines),
        )
