"""CloudWatch logs of a run's AWS side: its Glue job runs and its Step Functions execution.

Glue writes a job run's stdout and stderr to `/aws-glue/jobs/output` and its system and Spark logs to
`/aws-glue/jobs/error`. On Glue 5.0 a run has one stream per process, `<JobRunId>-driver` and
`<JobRunId>-<executor number>` ("Logging for AWS Glue jobs", glue/latest/dg/monitor-continuous-logging.html);
older versions wrote one stream named exactly the JobRunId. So a run's streams are found by the prefix
`<JobRunId>` (`DescribeLogStreams`), each read on its own and labelled with its process; when none
exists yet, `poll()` says so once instead of returning nothing. A Step Functions execution logs to
the state machine's vended group `/aws/vendedlogs/states/{state machine}` (for db-refresh:
`omc-flywheel-{env}-db-refresh`). Every JobRunId of a run is in the journal (`StepAttached`), so the
logs of any step and attempt are found without the console.

`CloudLogCursor.poll()` returns the lines not seen yet, so `flywheel logs --follow` calls it in its
loop; `--grep` is the same regular expression as for local logs, applied here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flywheel.events import RunStarted, StepAttached
from flywheel.spec import AwsSettings, EnvironmentSpec, PipelineSpec, StepKey

if TYPE_CHECKING:
    from flywheel.app.session import Session

GLUE_OUTPUT = "/aws-glue/jobs/output"
GLUE_ERROR = "/aws-glue/jobs/error"
NOT_FOUND = frozenset({"ResourceNotFoundException"})


def state_machine_group(spec: PipelineSpec, env_name: str, env: EnvironmentSpec) -> str:
    """The vended log group of the environment's state machine (named where the export names it)."""
    from flywheel.aws.asl import state_machine_name

    name = state_machine_name(spec, env_name, env)
    return f"/aws/vendedlogs/states/{name.rsplit(':', 1)[-1]}"


@dataclass(frozen=True)
class LogLine:
    source: str  # e.g. `register-part-tables[addressable_ids] attempt 1 glue-error`
    timestamp: float  # epoch seconds
    message: str


@dataclass(frozen=True)
class GlueStream:
    """The streams of one Glue run in one group: every stream whose name starts with `stream` (the
    JobRunId)."""

    label: str
    group: str
    stream: str


@dataclass(frozen=True)
class _Found:
    """One CloudWatch stream of a run (`<JobRunId>-driver`, `<JobRunId>-3` or `<JobRunId>`)."""

    run: GlueStream
    name: str

    @property
    def label(self) -> str:
        process = self.name[len(self.run.stream) :].lstrip("-")
        return f"{self.run.label} {process}" if process else self.run.label


@dataclass
class CloudLogCursor:
    """Where each stream was read to; `poll()` returns only new lines (matching `pattern`)."""

    client: Any
    streams: Sequence[GlueStream] = ()
    execution_group: str | None = None
    execution_arn: str | None = None
    pattern: re.Pattern[str] | None = None
    _tokens: dict[_Found, str] = field(default_factory=dict)
    _since: int = 0
    _seen: set[str] = field(default_factory=set)
    _told_missing: set[str] = field(default_factory=set)

    def poll(self) -> list[LogLine]:
        lines: list[LogLine] = []
        silent: dict[str, list[GlueStream]] = {}
        for run in self.streams:
            found = self._find_streams(run)
            silent.setdefault(run.stream, [])
            if not found:
                silent[run.stream].append(run)
            for stream in found:
                lines += self._read_stream(stream)
        for run_id, groups in silent.items():
            if groups and len(groups) == sum(1 for s in self.streams if s.stream == run_id):
                lines += self._missing(groups)
        if self.execution_group and self.execution_arn:
            lines += self._read_execution()
        lines.sort(key=lambda line: line.timestamp)
        return [line for line in lines if self.pattern is None or self.pattern.search(line.message)]

    def _find_streams(self, run: GlueStream) -> list[_Found]:
        """The run's streams in the group (none while the run has not written, or the group is absent)."""
        from botocore.exceptions import ClientError

        from flywheel.aws.session import error_code

        names: list[str] = []
        try:
            pages = self.client.get_paginator("describe_log_streams").paginate(
                logGroupName=run.group, logStreamNamePrefix=run.stream
            )
            for page in pages:
                names += [str(s["logStreamName"]) for s in page.get("logStreams", ())]
        except ClientError as exc:
            if error_code(exc) not in NOT_FOUND:
                raise
        # the prefix jr_1 also matches jr_12...: keep the run's own names only
        own = [n for n in names if n == run.stream or n.startswith(f"{run.stream}-")]
        return [_Found(run, name) for name in sorted(own)]

    def _missing(self, groups: Sequence[GlueStream]) -> list[LogLine]:
        """One line saying a run has no stream in any of its groups (yet), so an empty answer is never
        silent."""
        run = groups[0]
        if run.stream in self._told_missing:
            return []
        self._told_missing.add(run.stream)
        where = " or ".join(g.group for g in groups)
        message = (
            f"no log stream {run.stream}-driver (or {run.stream}) in {where} yet: Glue creates them when the "
            "run's driver starts; a run that failed before starting has none (its error is in `flywheel status`)"
        )
        return [LogLine(run.label.rsplit(" ", 1)[0], 0.0, message)]

    def _read_stream(self, stream: _Found) -> list[LogLine]:
        from botocore.exceptions import ClientError

        from flywheel.aws.session import error_code

        out: list[LogLine] = []
        while True:
            request: dict[str, Any] = {"logGroupName": stream.run.group, "logStreamName": stream.name}
            token = self._tokens.get(stream)
            if token:
                request["nextToken"] = token
            else:
                request["startFromHead"] = True
            try:
                page = self.client.get_log_events(**request)
            except ClientError as exc:
                if error_code(exc) in NOT_FOUND:  # deleted (retention) since it was listed
                    return out
                raise
            out += [
                LogLine(stream.label, float(e["timestamp"]) / 1000, str(e["message"]).rstrip("\n"))
                for e in page.get("events", ())
            ]
            following = page.get("nextForwardToken")
            if not following or following == token:
                if following:
                    self._tokens[stream] = following
                return out
            self._tokens[stream] = following

    def _read_execution(self) -> list[LogLine]:
        from botocore.exceptions import ClientError

        from flywheel.aws.session import error_code

        assert self.execution_group and self.execution_arn
        out: list[LogLine] = []
        request: dict[str, Any] = {
            "logGroupName": self.execution_group,
            "filterPattern": f'"{self.execution_arn}"',
            "startTime": self._since,
        }
        try:
            for page in self.client.get_paginator("filter_log_events").paginate(**request):
                for event in page.get("events", ()):
                    if event["eventId"] in self._seen:
                        continue
                    self._seen.add(event["eventId"])
                    self._since = max(self._since, int(event["timestamp"]))
                    out.append(LogLine("execution", float(event["timestamp"]) / 1000, str(event["message"]).rstrip()))
        except ClientError as exc:
            if error_code(exc) not in NOT_FOUND:
                raise
        return out


def glue_streams(attached: Iterable[StepAttached], keys: set[StepKey] | None = None) -> list[GlueStream]:
    """The output and error streams of every Glue job run a run attached (optionally of some keys)."""
    streams: list[GlueStream] = []
    for event in attached:
        if keys is not None and event.key not in keys:
            continue
        if not event.external_id.startswith("jr_"):
            continue
        label = f"{event.key} attempt {event.attempt}"
        streams.append(GlueStream(f"{label} glue", GLUE_OUTPUT, event.external_id))
        streams.append(GlueStream(f"{label} glue-error", GLUE_ERROR, event.external_id))
    return streams


class RunCloudLogs:
    """The CloudWatch side of `flywheel logs RUN`: re-reads the journal on every poll, so the streams
    of steps that attach while `--follow` runs are picked up."""

    def __init__(
        self,
        session: Session,
        run_id: int,
        aws: AwsSettings,
        keys: set[StepKey] | None,
        pattern: re.Pattern[str] | None,
        client: Any = None,
    ) -> None:
        self.session = session
        self.run_id = run_id
        self.aws = aws
        self.keys = keys
        self.cursor = CloudLogCursor(client=client, pattern=pattern)

    def poll(self) -> list[LogLine]:
        with self.session.journal() as journal:
            events = journal.events(self.run_id)
        streams = glue_streams((e for e in events if isinstance(e, StepAttached)), self.keys)
        started = next((e for e in events if isinstance(e, RunStarted)), None)
        arn = started.external_id if started else None
        execution = arn if arn and arn.startswith("arn:aws:states") else None
        if not streams and execution is None:
            return []
        if self.cursor.client is None:
            from flywheel.aws.session import make_client

            self.cursor.client = make_client(self.aws, "logs")
        self.cursor.streams = streams
        self.cursor.execution_arn = execution
        self.cursor.execution_group = (
            state_machine_group(
                self.session.spec, self.session.env_name, self.session.project.config.environment(self.session.env_name)
            )
            if execution
            else None
        )
        return self.cursor.poll()


def cloud_logs(
    session: Session,
    run_id: int,
    step: str | None = None,
    pattern: re.Pattern[str] | None = None,
    *,
    client: Any = None,
) -> RunCloudLogs | None:
    """The CloudWatch logs of a run in an AWS environment (None in a local one).

    `step` is a number, an id or `step[context]`; without a context it covers every context.
    """
    env = session.project.config.environment(session.env_name)
    if env.aws is None:
        return None
    keys: set[StepKey] | None = None
    if step is not None:
        key = StepKey.parse(step)
        if key.step.isdigit() and int(key.step) in session.spec.by_number:
            key = StepKey(session.spec.by_number[int(key.step)].id, key.context)
        spec_step = session.spec.by_id.get(key.step)
        keys = {key} if key.context or spec_step is None else set(spec_step.keys)
    return RunCloudLogs(session, run_id, env.aws, keys, pattern, client)


def glue_run_lines(
    job_run_id: str, *, client: Any, pattern: re.Pattern[str] | None = None, label: str = "glue"
) -> list[LogLine]:
    """Both streams of one Glue job run (for `sfn status` and incidents that know only a JobRunId)."""
    cursor = CloudLogCursor(
        client=client,
        streams=(GlueStream(label, GLUE_OUTPUT, job_run_id), GlueStream(f"{label}-error", GLUE_ERROR, job_run_id)),
        pattern=pattern,
    )
    return cursor.poll()
