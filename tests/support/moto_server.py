"""Run moto in server mode with the fixes flywheel's AWS tests need, and drive it from tests.

    python -m tests.support.moto_server --port 0      # prints "MOTO_READY port=N" once serving

Why a launcher and not `moto_server`: measured with moto 5.2.5, a `glue:startJobRun.sync` task inside
Step Functions fails (the Glue integration has no callback endpoint, and moto calls
`callback_endpoint.interrupt_all()` on None), so the production definition cannot execute; Glue job
runs never fail; and `BatchStopJobRun` is missing. This process patches moto (never flywheel) before
serving:

1. the `.sync` Glue integration skips the missing callback endpoint, so tasks wait for the job run
   and `Catch` works, also inside a `Parallel`;
2. Step Functions executes definitions from the start (`execute_state_machine`);
3. a test registers *outcome rules* (`POST /_flywheel/glue/rules`): the next run(s) of a Glue job,
   optionally only those whose arguments match (e.g. `--flywheel_context`), end FAILED, TIMEOUT,
   ERROR or STOPPED with an `ErrorMessage`, or stay RUNNING for some seconds, or until released
   (`POST /_flywheel/glue/release`);
4. `.sync` tasks poll their job every 0.05 s instead of 0.5 s (`--sync-poll`);
5. `BatchStopJobRun` marks active runs STOPPED;
6. every AWS call is recorded as an IAM action with the caller's access key (`GET /_flywheel/calls`):
   the tests check the Terraform IAM policies against what flywheel (and the state machine) called;
7. a test registers *S3 faults* (`POST /_flywheel/s3/faults`): the next S3 request(s) with a given
   method whose `bucket/key` matches a pattern get an S3 error reply (e.g. 403 AccessDenied) instead
   of being served, so a commit can be made to fail at a chosen object; a *hold* fault stops such a
   request until the test releases it (`POST /_flywheel/s3/release`), then serves it or fails it, so a
   test can look at S3 and the Glue catalog in the middle of a commit, or kill the writer there.

Tests use `MotoServer` (start, stop, rule helpers); the pytest fixture is in `tests/aws/conftest.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONTROL_PREFIX = "/_flywheel/"
READY_MARK = "MOTO_READY port="
TERMINAL_GLUE_STATES = ("SUCCEEDED", "FAILED", "TIMEOUT", "ERROR", "STOPPED")

# ---------------------------------------------------------------------------------------------
# server side: everything below `_serve` runs only inside the launcher process


@dataclass
class _Rule:
    """What the next matching Glue job run(s) do instead of succeeding at once."""

    job_name: str
    arguments: Mapping[str, str] = field(default_factory=dict)
    state: str = "SUCCEEDED"
    error: str | None = None
    hold: bool = False
    hold_seconds: float = 0.0
    times: int | None = 1  # None: every matching run

    def matches(self, job_name: str, arguments: Mapping[str, str]) -> bool:
        return job_name == self.job_name and all(arguments.get(k) == v for k, v in self.arguments.items())


@dataclass
class _S3Fault:
    """What the next matching S3 request(s) get instead of being served."""

    method: str
    key: re.Pattern[str]
    code: str = "AccessDenied"
    status: int = 403
    times: int | None = 1
    hold: bool = False
    serve: bool = False


@dataclass
class _Held:
    """An S3 request stopped by a `hold` fault, waiting for `/s3/release`."""

    fault: _S3Fault
    target: str
    released: threading.Event = field(default_factory=threading.Event)


HOLD_LIMIT = 120.0
"""A held S3 request is let go after this many seconds even if no test releases it."""


@dataclass
class _Control:
    rules: list[_Rule] = field(default_factory=list)
    s3_faults: list[_S3Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    runs: dict[str, Any] = field(default_factory=dict)  # JobRunId -> FakeJobRun (for release / listing)
    calls: list[dict[str, str]] = field(default_factory=list)  # every AWS call: principal and IAM action
    held: list[_Held] = field(default_factory=list)  # S3 requests waiting for release, oldest first

    def take(self, job_name: str, arguments: Mapping[str, str]) -> _Rule | None:
        return self.use_first(self.rules, lambda rule: rule.matches(job_name, arguments))

    def use_first(self, rules: list[Any], matches: Callable[[Any], bool]) -> Any:
        """The first rule that matches, used once (dropped when its `times` run out), or None."""
        with self.lock:
            for rule in rules:
                if matches(rule):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            rules.remove(rule)
                    return rule
        return None


_CONTROL = _Control()


def _glue_run_override(run: Any) -> str | None:
    """The state a run reports when a rule or a stop governs it; None: moto's own progression."""
    stopped: str | None = getattr(run, "_fw_stopped", None)
    if stopped is not None:
        return stopped
    rule: _Rule | None = getattr(run, "_fw_rule", None)
    if rule is None:
        return None
    if rule.hold and not getattr(run, "_fw_released", False):
        return "RUNNING"
    started: float = getattr(run, "_fw_started", 0.0)
    if rule.hold_seconds and time.time() - started < rule.hold_seconds:
        return "RUNNING"
    final: str | None = getattr(run, "_fw_final", None)
    return final or rule.state


def _patch_glue() -> None:
    """Outcome rules, error messages and stopping for moto's Glue job runs."""
    from moto.glue import models as glue_models
    from moto.glue import responses as glue_responses
    from moto.glue.models import FakeJob, FakeJobRun

    original_status: Any = FakeJobRun.status

    def status_get(self: Any) -> str | None:
        forced = _glue_run_override(self)
        value: str | None = original_status.fget(self)
        return forced if forced is not None else value

    def status_set(self: Any, value: str) -> None:
        original_status.fset(self, value)

    FakeJobRun.status = property(status_get, status_set)  # type: ignore[assignment,method-assign]

    original_as_dict = FakeJobRun.as_dict

    def as_dict(self: Any) -> dict[str, Any]:
        body: dict[str, Any] = original_as_dict(self)
        state = body.get("JobRunState")
        rule: _Rule | None = getattr(self, "_fw_rule", None)
        if state in ("FAILED", "TIMEOUT", "ERROR"):
            default = {"TIMEOUT": "Job run timed out", "ERROR": "Internal service error"}.get(state, "Job failed")
            body["ErrorMessage"] = (rule.error if rule and rule.error else None) or default
        if state in ("STARTING", "RUNNING"):
            body.pop("CompletedOn", None)
        return body

    FakeJobRun.as_dict = as_dict  # type: ignore[method-assign]

    original_start = FakeJob.start_job_run

    def start_job_run(self: Any, **kwargs: Any) -> str:
        run_id: str = original_start(self, **kwargs)
        run = next(r for r in self.job_runs if r.job_run_id == run_id)
        arguments = {str(k): str(v) for k, v in (run.arguments or {}).items()}
        rule = _CONTROL.take(self.name, arguments)
        run._fw_started = time.time()
        if rule is not None:
            run._fw_rule = rule
        with _CONTROL.lock:
            _CONTROL.runs[run_id] = run
        return run_id

    FakeJob.start_job_run = start_job_run  # type: ignore[method-assign,assignment]

    def batch_stop_job_run(self: Any, job_name: str, run_ids: list[str]) -> tuple[list[Any], list[Any]]:
        job = self.get_job(job_name)
        stopped, errors = [], []
        for run_id in run_ids:
            run = next((r for r in job.job_runs if r.job_run_id == run_id), None)
            if run is None:
                errors.append(
                    {
                        "JobName": job_name,
                        "JobRunId": run_id,
                        "ErrorDetail": {"ErrorCode": "EntityNotFoundException", "ErrorMessage": "run not found"},
                    }
                )
                continue
            if run.status in ("STARTING", "RUNNING", "STOPPING", "WAITING"):
                run._fw_stopped = "STOPPED"
            stopped.append({"JobName": job_name, "JobRunId": run_id})
        return stopped, errors

    glue_models.GlueBackend.batch_stop_job_run = batch_stop_job_run  # type: ignore[attr-defined]

    def response_batch_stop_job_run(self: Any) -> str:
        stopped, errors = self.glue_backend.batch_stop_job_run(
            self.parameters.get("JobName"), self.parameters.get("JobRunIds") or []
        )
        return json.dumps({"SuccessfulSubmissions": stopped, "Errors": errors})

    glue_responses.GlueResponse.batch_stop_job_run = response_batch_stop_job_run  # type: ignore[attr-defined]


def _epoch_millis(value: Any) -> Any:
    if hasattr(value, "timestamp"):
        return int(value.timestamp() * 1000)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _patch_sfn_glue_sync() -> None:
    """Let `glue:startJobRun.sync` wait for the run instead of crashing on a missing callback endpoint.

    moto's `StateTaskServiceCallback._eval_integration_pattern` ends with
    `callback_endpoint.interrupt_all()`, but the Glue integration supports no task token, so the
    endpoint is None and every `.sync` task fails with `States.Runtime` (and inside a `Parallel` the
    sibling branches are then cancelled before their `Catch` runs). This is the same evaluation for the
    one pattern Glue supports (`.sync`), without the callback endpoint.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_glue as glue_task,
    )

    def eval_integration_pattern(
        self: Any, env: Any, resource_runtime_part: Any, normalised_parameters: Any, state_credentials: Any
    ) -> None:
        task_output = env.stack.pop()
        self.timeout.eval(env=env)
        timeout_seconds = env.stack.pop()
        env.stack.append(task_output)
        sync_resolver = self._build_sync_resolver(
            env=env,
            resource_runtime_part=resource_runtime_part,
            normalised_parameters=normalised_parameters,
            state_credentials=state_credentials,
        )
        outcome = self._eval_sync(
            env=env,
            timeout_seconds=timeout_seconds,
            callback_endpoint=None,
            heartbeat_endpoint=None,
            sync_resolver=sync_resolver,
        )
        # The run carries datetimes (StartedOn, ...); AWS hands them to the state as epoch numbers.
        env.stack.append(json.loads(json.dumps(outcome, default=_epoch_millis)))

    glue_task.StateTaskServiceGlue._eval_integration_pattern = eval_integration_pattern  # type: ignore[method-assign]


def _patch_service_clients() -> None:
    """Reuse one boto3 client per service and region for Step Functions' integrations: moto builds a new
    one for every task, and the first one in a process takes over a second (warmed here in the background).
    """
    import functools

    from moto.stepfunctions.parser.asl.utils import boto_client

    original = boto_client.boto_client_for

    @functools.cache
    def cached(region: str, service: str) -> Any:
        return original(region=region, service=service)

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        return cached(region, service)

    for name, module in list(sys.modules.items()):
        if name.startswith("moto.stepfunctions.parser") and getattr(module, "boto_client_for", None) is original:
            module.boto_client_for = boto_client_for  # type: ignore[attr-defined]

    def warm() -> None:
        for service in ("glue", "sns"):
            cached("us-east-1", service)

    threading.Thread(target=warm, daemon=True).start()


def _patch_sync_poll_interval(seconds: float) -> None:
    """moto polls a `.sync` job every 0.5 s; tests have no reason to wait that long per task."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_callback as callback,
    )

    callback._DELAY_SECONDS_SYNC_CONDITION_CHECK = seconds  # type: ignore[misc]


def _patch_sfn_execution_names() -> None:
    """`StartExecution` without a name gets a generated one, as in AWS (moto 5.2.5 uses `None`)."""
    import uuid

    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    original = StepFunctionsParserBackend.start_execution

    def start_execution(self: Any, state_machine_arn: str, name: str | None = None, *args: Any, **kwargs: Any) -> Any:
        return original(self, state_machine_arn, name or str(uuid.uuid4()), *args, **kwargs)

    StepFunctionsParserBackend.start_execution = start_execution  # type: ignore[method-assign]


SFN_INTERNAL_KEY = "ak"
"""The access key moto's Step Functions uses for its own service integrations (the state machine role)."""

_IAM_PREFIX = {"monitoring": "cloudwatch", "email": "ses"}
_CREDENTIAL = re.compile(r"Credential=([^/]+)/[^/]+/[^/]+/([^/]+)/")


def _s3_action(method: str, path: str, query: Mapping[str, list[str]]) -> str:
    """The IAM action of an S3 REST call (path-style addressing, as botocore uses for an IP endpoint)."""
    parts = path.lstrip("/").split("/", 1)
    has_key = len(parts) == 2 and parts[1] != ""
    if not has_key:
        if "delete" in query:
            return "DeleteObject"
        if "versions" in query:
            return "ListBucketVersions"
        if "location" in query:
            return "GetBucketLocation"
        return {"GET": "ListBucket", "HEAD": "ListBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(
            method, f"Bucket{method.title()}"
        )
    if "tagging" in query:
        return "GetObjectTagging" if method == "GET" else "PutObjectTagging"
    return {"GET": "GetObject", "HEAD": "GetObject", "PUT": "PutObject", "POST": "PutObject"}.get(
        method, "DeleteObject" if method == "DELETE" else f"Object{method.title()}"
    )


def _record_call(environ: dict[str, Any]) -> None:
    """Note who called which IAM action, for the tests that check the Terraform IAM policies."""
    match = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    if match is None:
        return
    principal, service = match.group(1), match.group(2)
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    operation = ""
    if target:
        operation = target.rsplit(".", 1)[-1]
    elif service == "s3":
        operation = _s3_action(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), query)
    elif "Action" in query:
        operation = query["Action"][0]
    elif environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        operation = urllib.parse.parse_qs(raw.decode("utf-8", "replace")).get("Action", [""])[0]
    if not operation:
        operation = f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}"
    action = f"{_IAM_PREFIX.get(service, service)}:{operation}"
    with _CONTROL.lock:
        _CONTROL.calls.append({"principal": principal, "action": action})


def _s3_fault(environ: dict[str, Any]) -> _S3Fault | None:
    """The fault rule an S3 request matches (used up by one), or None."""
    match = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    if match is None or match.group(2) != "s3":
        return None
    target = urllib.parse.unquote(environ.get("PATH_INFO", "")).lstrip("/")
    method = environ["REQUEST_METHOD"]
    found: _S3Fault | None = _CONTROL.use_first(
        _CONTROL.s3_faults, lambda fault: fault.method == method and fault.key.search(target) is not None
    )
    return found


def _control_app(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Wrap moto's WSGI app with the `/_flywheel/` control endpoints and the call recorder."""

    def reply(start_response: Callable[..., Any], code: int, body: Any) -> list[bytes]:
        data = json.dumps(body, default=str).encode()
        status = {200: "200 OK", 400: "400 Bad Request", 404: "404 Not Found"}[code]
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if not path.startswith(CONTROL_PREFIX):
            if not path.startswith("/moto-api"):
                _record_call(environ)
                fault = _s3_fault(environ) if _CONTROL.s3_faults else None
                if fault is not None and fault.hold:
                    held = _Held(fault, urllib.parse.unquote(path).lstrip("/"))
                    with _CONTROL.lock:
                        _CONTROL.held.append(held)
                    held.released.wait(HOLD_LIMIT)
                    with _CONTROL.lock:
                        if held in _CONTROL.held:
                            _CONTROL.held.remove(held)
                    if fault.serve:
                        return app(environ, start_response)
                if fault is not None:
                    error = (
                        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{fault.code}</Code>"
                        f"<Message>injected by the test</Message><Resource>{path}</Resource></Error>"
                    ).encode()
                    start_response(
                        f"{fault.status} Injected",
                        [("Content-Type", "application/xml"), ("Content-Length", str(len(error)))],
                    )
                    return [error]
            return app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
        action = path[len(CONTROL_PREFIX) :]
        if action == "glue/rules" and environ["REQUEST_METHOD"] == "POST":
            rule = _Rule(
                job_name=body["job_name"],
                arguments=dict(body.get("arguments") or {}),
                state=body.get("state", "SUCCEEDED"),
                error=body.get("error"),
                hold=bool(body.get("hold", False)),
                hold_seconds=float(body.get("hold_seconds", 0.0)),
                times=body.get("times", 1),
            )
            if rule.state not in TERMINAL_GLUE_STATES:
                return reply(start_response, 400, {"error": f"state must be one of {TERMINAL_GLUE_STATES}"})
            with _CONTROL.lock:
                _CONTROL.rules.append(rule)
            return reply(start_response, 200, {"ok": True})
        if action == "s3/faults" and environ["REQUEST_METHOD"] == "POST":
            fault = _S3Fault(
                method=str(body.get("method", "PUT")).upper(),
                key=re.compile(str(body["key"])),
                code=str(body.get("code", "AccessDenied")),
                status=int(body.get("status", 403)),
                times=body.get("times", 1),
                hold=bool(body.get("hold", False)),
                serve=bool(body.get("serve", False)),
            )
            with _CONTROL.lock:
                _CONTROL.s3_faults.append(fault)
            return reply(start_response, 200, {"ok": True})
        if action == "s3/faults/clear" and environ["REQUEST_METHOD"] == "POST":
            with _CONTROL.lock:
                _CONTROL.s3_faults.clear()
            return reply(start_response, 200, {"ok": True})
        if action == "s3/held":
            with _CONTROL.lock:
                waiting = [h.target for h in _CONTROL.held if not h.released.is_set()]
            return reply(start_response, 200, {"held": waiting})
        if action == "s3/release" and environ["REQUEST_METHOD"] == "POST":
            with _CONTROL.lock:
                waiting = [h for h in _CONTROL.held if not h.released.is_set()]
            chosen = waiting[: body["count"]] if body.get("count") is not None else waiting
            for held in chosen:
                held.released.set()
            return reply(start_response, 200, {"released": [h.target for h in chosen]})
        if action == "glue/release" and environ["REQUEST_METHOD"] == "POST":
            released = []
            with _CONTROL.lock:
                for run_id, run in _CONTROL.runs.items():
                    if body.get("run_id") not in (None, run_id) or body.get("job_name") not in (None, run.job_name):
                        continue
                    if getattr(run, "_fw_rule", None) is not None and run._fw_rule.hold:
                        run._fw_released = True
                        if body.get("state"):
                            run._fw_final = body["state"]
                        released.append(run_id)
            return reply(start_response, 200, {"released": released})
        if action == "glue/runs":
            with _CONTROL.lock:
                runs = [
                    {"JobName": r.job_name, "Id": i, "JobRunState": r.status, "Arguments": r.arguments}
                    for i, r in _CONTROL.runs.items()
                ]
            return reply(start_response, 200, {"runs": runs})
        if action == "calls":
            with _CONTROL.lock:
                calls = list(_CONTROL.calls)
            return reply(start_response, 200, {"calls": calls})
        if action == "reset" and environ["REQUEST_METHOD"] == "POST":
            with _CONTROL.lock:
                _CONTROL.rules.clear()
                _CONTROL.s3_faults.clear()
                for held in _CONTROL.held:
                    held.released.set()
                _CONTROL.held.clear()
                _CONTROL.runs.clear()
                _CONTROL.calls.clear()
            return reply(start_response, 200, {"ok": True})
        return reply(start_response, 404, {"error": f"unknown control action {action!r}"})

    return wrapped


def _serve(host: str, port: int, sync_poll: float) -> None:
    from moto.core.config import default_user_config
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    _patch_glue()
    _patch_sfn_glue_sync()
    _patch_sfn_execution_names()
    _patch_sync_poll_interval(sync_poll)
    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(host, port, _control_app(app), threaded=True, request_handler=MotoRequestHandler)
    # Step Functions calls Glue and SNS back through this same server, at `localhost:$MOTO_PORT`.
    os.environ["MOTO_PORT"] = str(server.port)
    _patch_service_clients()
    sys.stdout.write(f"{READY_MARK}{server.port}\n")
    sys.stdout.flush()
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed when ready)")
    parser.add_argument("--sync-poll", type=float, default=0.05, help="seconds between `.sync` job polls")
    args = parser.parse_args(argv)
    _serve(args.host, args.port, args.sync_poll)


# ---------------------------------------------------------------------------------------------
# test side


@dataclass
class MotoServer:
    """A running launcher process and helpers to steer it (all over HTTP, like any AWS client)."""

    process: subprocess.Popen[str]
    port: int
    host: str = "127.0.0.1"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(body or {}).encode()
        request = urllib.request.Request(
            self.endpoint + path, data=data, method="POST", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")

    def glue_outcome(
        self,
        job_name: str,
        state: str = "FAILED",
        *,
        context: str | None = None,
        arguments: Mapping[str, str] | None = None,
        error: str | None = None,
        hold: bool = False,
        hold_seconds: float = 0.0,
        times: int | None = 1,
    ) -> None:
        """Make the next `times` runs of `job_name` (matching `context` / `arguments`) end in `state`.

        `hold=True` keeps them RUNNING until `release_glue`; `hold_seconds` keeps them RUNNING that long.
        """
        match = dict(arguments or {})
        if context is not None:
            match["--flywheel_context"] = context
        self._post(
            CONTROL_PREFIX + "glue/rules",
            {
                "job_name": job_name,
                "arguments": match,
                "state": state,
                "error": error,
                "hold": hold,
                "hold_seconds": hold_seconds,
                "times": times,
            },
        )

    def release_glue(
        self, *, job_name: str | None = None, run_id: str | None = None, state: str | None = None
    ) -> list[str]:
        """Let held runs end (in their rule's state, or `state`); returns the released JobRunIds."""
        body = {"job_name": job_name, "run_id": run_id, "state": state}
        released: list[str] = self._post(CONTROL_PREFIX + "glue/release", body)["released"]
        return released

    def s3_fault(
        self, key: str, *, method: str = "PUT", code: str = "AccessDenied", status: int = 403, times: int | None = 1
    ) -> None:
        """Make the next `times` S3 requests of `method` whose `bucket/key` matches the regex `key` fail
        with `code` (HTTP `status`) instead of being served."""
        body = {"key": key, "method": method, "code": code, "status": status, "times": times}
        self._post(CONTROL_PREFIX + "s3/faults", body)

    def s3_hold(self, key: str, *, method: str = "PUT", serve: bool = True, times: int | None = 1) -> None:
        """Stop the next `times` S3 requests of `method` whose `bucket/key` matches `key` until
        `s3_release`: then they are served (`serve`), or answered 403 AccessDenied (the caller is gone,
        as when its process was killed mid-request)."""
        body = {"key": key, "method": method, "hold": True, "serve": serve, "times": times}
        self._post(CONTROL_PREFIX + "s3/faults", body)

    def s3_held(self) -> list[str]:
        """The `bucket/key` of every S3 request held now, oldest first."""
        with urllib.request.urlopen(self.endpoint + CONTROL_PREFIX + "s3/held", timeout=10) as response:
            held: list[str] = json.loads(response.read())["held"]
        return held

    def wait_s3_held(self, count: int = 1, timeout: float = 60.0) -> list[str]:
        """Wait until at least `count` S3 requests are held; their targets."""
        deadline = time.monotonic() + timeout
        while len(held := self.s3_held()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(held)} S3 requests held after {timeout} s, expected {count}")
            time.sleep(0.05)
        return held

    def s3_release(self, count: int | None = None) -> list[str]:
        """Let the oldest `count` held S3 requests go on (all when None); their targets."""
        released: list[str] = self._post(CONTROL_PREFIX + "s3/release", {"count": count})["released"]
        return released

    def clear_s3_faults(self) -> None:
        self._post(CONTROL_PREFIX + "s3/faults/clear")

    def glue_runs(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.endpoint + CONTROL_PREFIX + "glue/runs", timeout=10) as response:
            runs: list[dict[str, Any]] = json.loads(response.read())["runs"]
        return runs

    def calls(self, principal: str | None = None) -> list[str]:
        """IAM actions called since the last reset, in order; only those signed with the access key
        `principal` when given (`SFN_INTERNAL_KEY`: Step Functions' own service integrations, i.e. what
        the state machine role needs)."""
        with urllib.request.urlopen(self.endpoint + CONTROL_PREFIX + "calls", timeout=10) as response:
            calls: list[dict[str, str]] = json.loads(response.read())["calls"]
        return [c["action"] for c in calls if principal is None or c["principal"] == principal]

    def reset(self) -> None:
        """Forget every resource, rule and run (between tests sharing one server)."""
        self._post("/moto-api/reset")
        self._post(CONTROL_PREFIX + "reset")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_moto_server(host: str = "127.0.0.1", timeout: float = 30.0, log_path: Path | None = None) -> MotoServer:
    """Start the launcher in a subprocess on a free port and wait until it serves.

    The server's own log (request lines, moto tracebacks) goes to `log_path` when given.
    """
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ)
    env.pop("MOTO_PORT", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.moto_server", "--host", host, "--port", "0"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log_path.open("ab") if log_path is not None else subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    ready: list[int] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(READY_MARK):
                ready.append(int(line[len(READY_MARK) :]))
                break
        # keep draining so the child never blocks on a full pipe
        for _ in process.stdout:
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while not ready:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the moto launcher did not start (exit code {process.poll()})")
        time.sleep(0.05)
    port = ready[0]
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            break
        time.sleep(0.05)
    return MotoServer(process=process, port=port, host=host)


@contextlib.contextmanager
def moto_server() -> Iterator[MotoServer]:
    server = start_moto_server()
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":
    main()
