"""Notifications: observers fed by journal events that tell people a step failed, a run recovered, or a
step is running far past its usual time.

Every channel is a `Notifier` (`name`, `send(message)`); `NotifierObserver` adapts one to the runner's
observer seam, so the runner journals a channel's failure as `NotifierFailed` under that channel's
name and the run goes on. Messages are composed once per event by a shared `Composer` and carry what
an operator needs to act: the step, the error, the run (and execution ARN), the classified cause and
hints, a fix recorded for the same error before, and the exact command that resumes.

Secrets (a webhook URL, an SMTP password, AWS keys) are read from the environment variables that the
configuration names, and are masked by `Redactor` in everything a channel sends, raises or logs.

SNS (`kind: sns`) lives with the AWS code: `flywheel.aws.sns` is expected to offer
`build_sns_notifier(spec: NotifierSpec, env: EnvironmentSpec, redactor: Redactor) -> Notifier`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from flywheel.events import Event, RunFinished, RunInterrupted, RunOutcome, RunStarted, StepFailed, StepStarted
from flywheel.spec import EnvironmentSpec, NotifierSpec, PipelineSpec

if TYPE_CHECKING:
    from flywheel.journal import Journal
    from flywheel.notify.overdue import OverdueWatch

from flywheel.notify.base import (
    AWS_SECRET_VARIABLES,
    MAX_ERROR_CHARS,
    Message,
    MessageKind,
    Notifier,
    NotifyError,
    Redactor,
    Unavailable,
    duration_text,
    when_text,
)

log = logging.getLogger(__name__)

__all__ = [
    "AWS_SECRET_VARIABLES",
    "MAX_ERROR_CHARS",
    "Composer",
    "History",
    "Message",
    "MessageKind",
    "Notifier",
    "NotifierObserver",
    "NotifyError",
    "Redactor",
    "Unavailable",
    "build_channels",
    "build_notifiers",
    "duration_text",
    "when_text",
]

# ---------------------------------------------------------------------------------------------
# composing messages from events


class History:
    """Read-only journal access for messages: earlier fixes and the incident a run closes.

    Each use opens and closes its own connection: alerts are rare, and an observer that outlives its
    run (a dashboard's) must not hold the journal open.
    """

    def __init__(self, home: Path, spec: PipelineSpec) -> None:
        self.home = home
        self.spec = spec

    @contextmanager
    def journal(self) -> Iterator[Journal]:
        from flywheel.journal import open_journal

        with open_journal(self.home) as journal:
            yield journal

    def past_fix_line(self, error_type: str, message: str) -> str | None:
        from flywheel.incidents import past_fix

        with self.journal() as journal:
            found = past_fix(journal, self.spec, error_type, message)
        if found is None:
            return None
        note = found.note
        who = f" by {note.user}" if note.user else ""
        return f"same error before: incident {found.incident_id} ({when_text(note.at)}), fixed{who}: {note.fix}"

    def closed_incident_lines(self, run_id: int) -> tuple[str, ...] | None:
        from flywheel.incidents import IncidentStatus, incidents

        with self.journal() as journal:
            found = incidents(journal, self.spec)
        for inc in found:
            if inc.closed_by == run_id and inc.status is IncidentStatus.RESOLVED:
                saved = inc.time_saved
                lines = [f"incident {inc.id} closed after {duration_text(inc.recovery_seconds)} ({inc.cause.value})"]
                if saved is not None and saved.compute_seconds > 0:
                    dpu = f", {saved.dpu_hours:.1f} DPU-hours" if saved.dpu_hours else ""
                    lines.append(
                        f"time saved by reusing {len(inc.reused)} finished step(s): "
                        f"{duration_text(saved.wall_seconds)} wall-clock ({duration_text(saved.compute_seconds)} "
                        f"of compute{dpu})"
                    )
                return tuple(lines)
        return None


@dataclass
class _RunContext:
    started: RunStarted
    logs: dict[tuple[str, str | None, int], str | None] = field(default_factory=dict)


class Composer:
    """Turns journal events into messages, once per event however many channels listen."""

    def __init__(
        self,
        spec: PipelineSpec,
        *,
        resume_prefix: str = "flywheel",
        resume_options: str = "",
        history: History | None = None,
    ) -> None:
        self.spec = spec
        self.resume_prefix = resume_prefix
        self.resume_options = resume_options
        self.history = history
        self._runs: dict[int, _RunContext] = {}
        self._memo: dict[int, tuple[Event, tuple[Message, ...]]] = {}
        self._lock = threading.Lock()

    def resume_command(self, run_id: int) -> str:
        return f"{self.resume_prefix} resume {run_id}{self.resume_options}"

    def messages(self, event: Event) -> tuple[Message, ...]:
        with self._lock:
            memo = self._memo.get(id(event))
            if memo is not None and memo[0] is event:
                return memo[1]
            self._track(event)
        out = self._compose(event)
        with self._lock:
            if len(self._memo) > 64:
                self._memo.clear()
            self._memo[id(event)] = (event, out)
        return out

    def _track(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._runs[event.run_id] = _RunContext(event)
        elif isinstance(event, StepStarted) and event.run_id in self._runs:
            self._runs[event.run_id].logs[(event.step, event.context, event.attempt)] = event.log_path

    def _compose(self, event: Event) -> tuple[Message, ...]:
        ctx = self._runs.get(event.run_id)
        if ctx is None:
            return ()
        match event:
            case StepFailed() if not event.will_retry:
                return (self.failure(ctx, event),)
            case RunFinished() if event.outcome is RunOutcome.SUCCEEDED and ctx.started.parent_run is not None:
                recovered = self.recovery(ctx, event)
                return (recovered,) if recovered else ()
            case RunInterrupted():
                return (self.interruption(ctx, event),)
        return ()

    def _head(self, started: RunStarted) -> str:
        return f"{started.pipeline} · {started.env} · run {started.run_id}"

    def failure(self, ctx: _RunContext, event: StepFailed) -> Message:
        from flywheel.incidents import classify

        started = ctx.started
        step = self.spec.by_id.get(event.step)
        number = f"step {step.number} " if step else "step "
        cause, hints = classify(step, event.error_type, event.error_message)
        error = f"{event.error_type}: {event.error_message}".strip()
        if len(error) > MAX_ERROR_CHARS:
            error = error[:MAX_ERROR_CHARS] + " …"
        resume = self.resume_command(started.run_id)
        advice = [f"cause: {cause.value}", *(f"hint: {hint}" for hint in hints)]
        lines = [
            f"{number}{event.key} failed after {duration_text(event.duration)} (attempt {event.attempt})",
            f"error: {error}",
            *advice,
        ]
        if self.history is not None:
            try:
                fix = self.history.past_fix_line(event.error_type, event.error_message)
            except Exception:  # an unreadable history must not cost the alert
                log.debug("cannot read past fixes", exc_info=True)
                fix = None
            if fix:
                lines.append(fix)
                advice.append(fix)
        if started.external_id:
            lines.append(f"execution: {started.external_id}")
        log_path = ctx.logs.get((event.step, event.context, event.attempt))
        if log_path:
            lines.append(f"log: {log_path}")
        lines += [
            f"resume after fixing the cause (once the run has stopped): {resume}",
            f"preview first: {resume} --dry-run",
        ]
        return Message(
            kind=MessageKind.FAILED,
            title=f"❌ {self._head(started)}: {number}{event.key} failed ({cause.value})",
            lines=tuple(lines),
            pipeline=started.pipeline,
            env=started.env,
            run_id=started.run_id,
            step=str(event.key),
            resume_command=resume,
            brief=tuple(advice),
        )

    def recovery(self, ctx: _RunContext, event: RunFinished) -> Message | None:
        started = ctx.started
        lines: tuple[str, ...] | None = None
        if self.history is not None:
            try:
                lines = self.history.closed_incident_lines(started.run_id)
            except Exception:
                log.debug("cannot read incidents", exc_info=True)
            if lines is None:
                return None  # the parent had not failed: a rerun, not a recovery
        body = (f"run {started.run_id} continued run {started.parent_run} and succeeded", *(lines or ()))
        return Message(
            kind=MessageKind.RECOVERED,
            title=f"✅ {self._head(started)}: recovered",
            lines=body,
            pipeline=started.pipeline,
            env=started.env,
            run_id=started.run_id,
        )

    def interruption(self, ctx: _RunContext, event: RunInterrupted) -> Message:
        started = ctx.started
        resume = self.resume_command(started.run_id)
        return Message(
            kind=MessageKind.INTERRUPTED,
            title=f"⚠️ {self._head(started)}: interrupted",
            lines=(f"the run stopped: {event.reason or 'interrupted'}", f"continue it with: {resume}"),
            pipeline=started.pipeline,
            env=started.env,
            run_id=started.run_id,
            resume_command=resume,
        )


class NotifierObserver:
    """Adapts a channel to the runner's observer seam; the runner journals its failures by `name`."""

    def __init__(self, notifier: Notifier, composer: Composer, kinds: Sequence[str]) -> None:
        self.notifier = notifier
        self.composer = composer
        self.kinds = frozenset(kinds)
        self.name = notifier.name

    def __call__(self, event: Event) -> None:
        for message in self.composer.messages(event):
            if message.kind.value in self.kinds:
                self.notifier.send(message)


def _secret_names(specs: Sequence[NotifierSpec]) -> list[str]:
    return [n for s in specs for n in (s.url_env, s.password_env) if n]


def build_channels(
    env_spec: EnvironmentSpec, *, environ: Mapping[str, str] | None = None, redactor: Redactor | None = None
) -> tuple[list[tuple[NotifierSpec, Notifier]], Redactor]:
    """The configured channels of an environment (without the console) and the redactor they share:
    the session's (`flywheel.app.secrets`) when given, with the values of this environment's own."""
    environ = os.environ if environ is None else environ
    specs = list(env_spec.notifications)
    redactor = (redactor or Redactor()).extend(
        *[environ.get(name) for name in _secret_names(specs)], *[environ.get(n) for n in AWS_SECRET_VARIABLES]
    )
    out: list[tuple[NotifierSpec, Notifier]] = []
    for i, spec in enumerate(specs):
        name = spec.name or (spec.kind if sum(1 for s in specs if s.kind == spec.kind) == 1 else f"{spec.kind}-{i + 1}")
        out.append((spec, _channel(spec, name, environ, redactor, env_spec)))
    return out, redactor


def _channel(
    spec: NotifierSpec, name: str, environ: Mapping[str, str], redactor: Redactor, env_spec: EnvironmentSpec
) -> Notifier:
    if spec.kind == "webhook":
        from flywheel.notify.webhook import WebhookNotifier

        if not spec.url_env:
            return Unavailable(name, "webhook notifier has no url_env: name the variable that holds the URL")
        url = environ.get(spec.url_env)
        if not url:
            log.warning("notifier %s: environment variable %s is not set", name, spec.url_env)
            return Unavailable(name, f"environment variable {spec.url_env} (the webhook URL) is not set")
        return WebhookNotifier(name, url, timeout=spec.timeout, redactor=redactor)
    if spec.kind == "email":
        from flywheel.notify.email import EmailNotifier

        if not spec.smtp_host or not spec.recipients:
            return Unavailable(name, "email notifier needs smtp_host and recipients")
        password = environ.get(spec.password_env) if spec.password_env else None
        if spec.password_env and not password:
            log.warning("notifier %s: environment variable %s is not set", name, spec.password_env)
            return Unavailable(name, f"environment variable {spec.password_env} (the SMTP password) is not set")
        return EmailNotifier(
            name,
            host=spec.smtp_host,
            port=spec.smtp_port or (587 if spec.starttls else 25),
            sender=spec.sender or "flywheel@localhost",
            recipients=spec.recipients,
            user=spec.smtp_user,
            password=password,
            starttls=spec.starttls,
            timeout=spec.timeout,
            redactor=redactor,
        )
    try:
        from flywheel.aws import sns  # type: ignore[attr-defined,unused-ignore]

        builder: Callable[..., Notifier] = sns.build_sns_notifier
    except (ImportError, AttributeError):
        return Unavailable(name, "the SNS notifier is not available (install flywheel with the aws extra)")
    return builder(spec, env_spec, redactor)


def build_notifiers(
    env_spec: EnvironmentSpec,
    spec: PipelineSpec,
    *,
    home: Path | None = None,
    console: Callable[[str], None] | None = None,
    environ: Mapping[str, str] | None = None,
    redactor: Redactor | None = None,
    resume_options: str = "",
    overdue: bool = True,
    overdue_factor: float = 1.5,
    overdue_minimum: float = 60.0,
    stall_seconds: float = 1800.0,
    poll_seconds: float = 5.0,
) -> list[NotifierObserver | OverdueWatch]:
    """The observers that notify for one run in `env_spec`: pass them as `RunOptions(observers=...)`.

    `console` (a function writing a line to the operator's terminal) adds the console channel.
    `home` lets messages cite fixes recorded for the same error before and say which incident a resume
    closed, and turns on the overdue watch (it needs the history of step durations).
    `resume_options` is appended to `flywheel resume RUN` (for example ` --home /srv/flywheel`).
    `redactor` is the session's (`api.session_redactor`): it masks what the channels send.
    """
    channels, redactor = build_channels(env_spec, environ=environ, redactor=redactor)
    history = History(home, spec) if home is not None else None
    composer = Composer(spec, resume_options=resume_options, history=history)
    observers: list[NotifierObserver | OverdueWatch] = []
    if console is not None:
        from flywheel.notify.console import ConsoleNotifier

        observers.append(NotifierObserver(ConsoleNotifier(console, redactor), composer, list(MessageKind)))
    for notifier_spec, channel in channels:
        observers.append(NotifierObserver(channel, composer, notifier_spec.on))
    if overdue and home is not None and history is not None:
        from flywheel.notify.overdue import OverdueWatch

        targets = [o for o in observers if isinstance(o, NotifierObserver) and MessageKind.OVERDUE in o.kinds]
        observers.append(
            OverdueWatch(
                spec,
                history,
                composer,
                [o.notifier for o in targets],
                redactor=redactor,
                factor=overdue_factor,
                minimum=overdue_minimum,
                stall_seconds=stall_seconds,
                poll_seconds=poll_seconds,
            )
        )
    return observers
