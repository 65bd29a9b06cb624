"""SNS notifications: failures and recoveries published to the environment's topic.

Two ways in, one publisher:

- `build_sns_notifier(spec, env, redactor)`: the `kind: sns` channel of the notifications framework
  (`flywheel.notify`), which composes the messages (cause, hints, past fixes, resume command) and
  adapts channels to the runner's observer seam.
- `SnsObserver`: a self-contained observer (a callable taking an `Event`) for callers that do not use
  the framework: `api.RunOptions(observers=[SnsObserver.for_environment(spec, "dev", env)])`.

Either way, a failed publish raises, and the runner (which catches every observer's exception)
journals it as `NotifierFailed` and goes on: an alert that did not go out is on record, and the run
is never broken by its notifier. SNS subjects must be ASCII, one line, under 100 characters; the body
is plain text. Message attributes (`pipeline`, `env`, `kind`, `run_id`, `step`) allow filter policies.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flywheel.errors import BackendError
from flywheel.events import Event, RunFinished, RunInterrupted, RunOutcome, RunStarted, StepAttached, StepFailed
from flywheel.spec import AwsSettings, EnvironmentSpec, PipelineSpec

if TYPE_CHECKING:
    from flywheel.notify.base import Message, Redactor

log = logging.getLogger(__name__)

MAX_SUBJECT = 99
MAX_BODY = 200_000  # SNS allows 256 KB


def subject_line(title: str) -> str:
    """An SNS-valid subject: printable ASCII, one line, under 100 characters, starting with a letter."""
    text = title.encode("ascii", "ignore").decode()
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()
    text = re.sub(r"^[^A-Za-z0-9\[(]+", "", text)
    text = re.sub(r"\s+", " ", text)
    return text[: MAX_SUBJECT - 3] + "..." if len(text) > MAX_SUBJECT else text


def resolve_topic_arn(topic: str, aws: AwsSettings, account: Callable[[], str]) -> str:
    """An ARN as is; a bare topic name in the environment's region and account."""
    if topic.startswith("arn:"):
        return topic
    return f"arn:aws:sns:{aws.region}:{aws.account_id or account()}:{topic}"


class SnsPublisher:
    """Publishes to one topic; builds its client and resolves the topic ARN on first use."""

    def __init__(
        self,
        topic: str,
        aws: AwsSettings,
        env_name: str,
        *,
        client: Any = None,
        redact: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.topic = topic
        self.aws = aws
        self.env_name = env_name
        self.redact = redact
        self._client = client
        self._session: Any = None
        self._arn: str | None = None

    def _account(self) -> str:
        from flywheel.aws.session import caller_identity

        return caller_identity(self.aws, self.env_name, session=self._boto_session()).account

    def _boto_session(self) -> Any:
        if self._session is None:
            from flywheel.aws.session import boto_session

            self._session = boto_session(self.aws)
        return self._session

    @property
    def client(self) -> Any:
        if self._client is None:
            from flywheel.aws.session import make_client

            self._client = make_client(self.aws, "sns", session=self._boto_session(), max_attempts=3)
        return self._client

    @property
    def topic_arn(self) -> str:
        if self._arn is None:
            self._arn = resolve_topic_arn(self.topic, self.aws, self._account)
        return self._arn

    def publish(self, title: str, body: str, attributes: Mapping[str, str | int | None]) -> str:
        """Publish; returns the MessageId. Raises `BackendError` (redacted) when SNS refuses."""
        from botocore.exceptions import BotoCoreError, ClientError

        from flywheel.aws.session import error_code, error_message

        message_attributes = {
            k: {"DataType": "Number" if isinstance(v, int) else "String", "StringValue": str(v)}
            for k, v in attributes.items()
            if v is not None and str(v)
        }
        try:
            answer = self.client.publish(
                TopicArn=self.topic_arn,
                Subject=subject_line(self.redact(title)),
                Message=self.redact(body)[:MAX_BODY],
                MessageAttributes=message_attributes,
            )
        except ClientError as exc:
            raise BackendError(
                self.redact(f"SNS publish to {self.topic} failed: {error_code(exc)}: {error_message(exc)}"),
                fix="check the topic exists and the role may sns:Publish on it",
            ) from None
        except BotoCoreError as exc:
            raise BackendError(self.redact(f"SNS publish to {self.topic} failed: {exc}")) from None
        return str(answer["MessageId"])


# ---------------------------------------------------------------------------------------------
# the channel of the notifications framework


class SnsNotifier:
    """The `Notifier` of `kind: sns`: sends framework messages to the topic."""

    def __init__(self, name: str, publisher: SnsPublisher) -> None:
        self.name = name
        self.publisher = publisher

    def send(self, message: Message) -> None:
        from flywheel.notify.base import NotifyError

        try:
            self.publisher.publish(
                message.title,
                message.text,
                {
                    "pipeline": message.pipeline,
                    "env": message.env,
                    "kind": message.kind.value,
                    "run_id": message.run_id,
                    "step": message.step,
                },
            )
        except BackendError as exc:
            raise NotifyError(exc.message) from None


def build_sns_notifier(spec: Any, env: EnvironmentSpec, redactor: Redactor) -> Any:
    """The framework's builder for `kind: sns` (`spec` is a `NotifierSpec`)."""
    from flywheel.notify.base import Unavailable

    name = spec.name or "sns"
    topic = spec.topic_arn or (env.aws.sns_topic if env.aws else None)
    if env.aws is None or not topic:
        return Unavailable(name, "the sns notifier needs topic_arn or the environment's aws.sns_topic")
    # the framework does not pass the environment's name; it only appears in credential error texts
    label = f"with profile {env.aws.profile}" if env.aws.profile else "of this notifier"
    return SnsNotifier(name, SnsPublisher(topic, env.aws, label, redact=redactor))


# ---------------------------------------------------------------------------------------------
# a self-contained observer


class SnsObserver:
    """Publishes a step's final failure, an interruption, and a recovery (a resume that succeeded)."""

    name = "sns"

    def __init__(self, publisher: SnsPublisher, *, pipeline: str, env_name: str, resume_options: str = "") -> None:
        self.publisher = publisher
        self.pipeline = pipeline
        self.env_name = env_name
        self.resume_options = resume_options or f" --env {env_name}"
        self._started: dict[int, RunStarted] = {}
        self._external: dict[tuple[int, str], str] = {}
        self._failed: dict[int, list[str]] = {}

    @classmethod
    def for_environment(
        cls, spec: PipelineSpec, env_name: str, env: EnvironmentSpec, *, client: Any = None
    ) -> SnsObserver | None:
        """The observer of an environment with `aws.sns_topic`, else None."""
        if env.aws is None or not env.aws.sns_topic:
            return None
        publisher = SnsPublisher(env.aws.sns_topic, env.aws, env_name, client=client)
        return cls(publisher, pipeline=spec.pipeline, env_name=env_name)

    def __call__(self, event: Event) -> None:
        composed = self._compose(event)
        if composed is not None:
            title, body, attributes = composed
            self.publisher.publish(title, body, attributes)

    def _resume(self, run_id: int) -> str:
        return f"flywheel resume {run_id}{self.resume_options}"

    def _compose(self, event: Event) -> tuple[str, str, dict[str, str | int | None]] | None:
        head = f"{self.pipeline} {self.env_name}"
        match event:
            case RunStarted():
                self._started[event.run_id] = event
            case StepAttached():
                self._external[(event.run_id, str(event.key))] = event.external_id
            case StepFailed() if not event.will_retry:
                key = str(event.key)
                self._failed.setdefault(event.run_id, []).append(key)
                glue = self._external.get((event.run_id, key))
                lines = [
                    f"Step {key} failed in run {event.run_id} (attempt {event.attempt}).",
                    f"Error: {event.error_type}: {event.error_message}",
                ]
                if glue:
                    lines.append(f"Glue job run: {glue}")
                lines += ["", f"Fix the cause, then resume: {self._resume(event.run_id)}"]
                title = f"[flywheel] {head}: {key} failed (run {event.run_id})"
                return title, "\n".join(lines), self._attributes("failed", event.run_id, key)
            case RunInterrupted():
                title = f"[flywheel] {head}: run {event.run_id} interrupted"
                body = f"Run {event.run_id} was interrupted ({event.reason}).\nResume: {self._resume(event.run_id)}"
                return title, body, self._attributes("interrupted", event.run_id, None)
            case RunFinished() if event.outcome is RunOutcome.SUCCEEDED:
                started = self._started.get(event.run_id)
                if started is None or started.parent_run is None:
                    return None
                title = f"[flywheel] {head}: recovered (run {event.run_id})"
                body = (
                    f"Run {event.run_id} succeeded, resuming run {started.parent_run}"
                    + (f" (first run {started.root_run})" if started.root_run else "")
                    + "."
                )
                return title, body, self._attributes("recovered", event.run_id, None)
        return None

    def _attributes(self, kind: str, run_id: int, step: str | None) -> dict[str, str | int | None]:
        return {"pipeline": self.pipeline, "env": self.env_name, "kind": kind, "run_id": run_id, "step": step}
