"""Notifications reach real local receivers (an HTTP server and an SMTP server started here), say what
an operator needs to act, never leak a secret, and never fail a run when a receiver is down."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from flywheel import api
from flywheel.events import NotifierFailed, RunStarted, StepStarted, StepSucceeded
from flywheel.journal import open_journal
from flywheel.notify import Composer, History, Message, MessageKind, Redactor, build_notifiers
from flywheel.notify.overdue import OverdueWatch, eta, overdue_steps
from flywheel.notify.webhook import payload
from flywheel.planner import Mode, PlanRequest
from flywheel.spec import StepKey
from flywheel.state import fold
from tests.conftest import Sandbox, step

HOOK_SECRET = "T0KEN-s3cr3t-9f8e7d6c"
SMTP_PASSWORD = "pa55-w0rd-secret-xyz"
CAUSES = [{"match": "source file .* is missing", "cause": "data", "hint": "Re-deliver the source file, then resume."}]


# ---------------------------------------------------------------------------------------------
# receivers


class Hooks(ThreadingHTTPServer):
    received: list[tuple[str, dict[str, Any]]]
    status: int


class _Handler(BaseHTTPRequestHandler):
    server: Hooks

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, json.loads(body)))
        self.send_response(self.server.status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    server = Hooks(("127.0.0.1", 0), _Handler)
    server.received, server.status = [], 200
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.logins: list[tuple[bytes, bool]] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 OK"

    def authenticate(self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == b"flywheel" and data.password == SMTP_PASSWORD.encode()
        self.logins.append((data.login if isinstance(data, LoginPassword) else b"", ok))
        return AuthResult(success=ok)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box = Inbox()
    port = free_port()
    controller = Controller(
        box, hostname="127.0.0.1", port=port, authenticator=box.authenticate, auth_require_tls=False
    )
    controller.start()
    yield box, port
    controller.stop()


# ---------------------------------------------------------------------------------------------
# helpers


def fan_out(**b: Any) -> list[dict[str, Any]]:
    return [step("a", 1), step("b", 2, ["a"], contexts=["x", "y"], causes=CAUSES, **b), step("c", 3, ["b"])]


def configure(sandbox: Sandbox, channels: list[dict[str, Any]], executor: str = "inprocess") -> None:
    env = {"executor": executor, "max_parallel": 2, "notifications": channels}
    (sandbox.root / "project.yaml").write_text(yaml.safe_dump({"environments": {"local": env}}))


def webhook(env: str = "FLYWHEEL_TEST_HOOK") -> dict[str, Any]:
    return {"kind": "webhook", "url_env": env, "timeout": 3}


def mail(port: int) -> dict[str, Any]:
    return {
        "kind": "email",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_user": "flywheel",
        "password_env": "FLYWHEEL_TEST_SMTP_PASSWORD",
        "sender": "flywheel@example.test",
        "recipients": ["oncall@example.test"],
        "timeout": 3,
    }


def run(sandbox: Sandbox, request: PlanRequest | None = None, **kw: Any) -> api.RunResult:
    session = api.open_session(str(sandbox.pipeline), home=sandbox.home)
    env = session.project.config.environment(session.env_name)
    observers = build_notifiers(env, session.spec, home=session.home, **kw)
    return api.execute(session, request or PlanRequest(), api.RunOptions(observers=observers))


def notifier_failures(home: Path) -> list[NotifierFailed]:
    with open_journal(home) as journal:
        return [e for r in journal.runs() for e in journal.events(r.run_id) if isinstance(e, NotifierFailed)]


def assert_no_secret_under(home: Path, *texts: str) -> None:
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert HOOK_SECRET.encode() not in data, path
            assert SMTP_PASSWORD.encode() not in data, path
    with sqlite3.connect(home / "journal.sqlite") as db:
        bodies = " ".join(body for (body,) in db.execute("SELECT body FROM events"))
    for text in (bodies, *texts):
        assert HOOK_SECRET not in text and SMTP_PASSWORD not in text


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch, hooks: Hooks) -> None:
    port = hooks.server_address[1]
    monkeypatch.setenv("FLYWHEEL_TEST_HOOK", f"http://127.0.0.1:{port}/services/{HOOK_SECRET}")
    monkeypatch.setenv("FLYWHEEL_TEST_SMTP_PASSWORD", SMTP_PASSWORD)


# ---------------------------------------------------------------------------------------------
# delivery


@pytest.mark.usefixtures("secrets")
def test_a_failure_and_its_recovery_reach_the_webhook_and_the_mailbox(
    sandbox: Sandbox, hooks: Hooks, inbox: tuple[Inbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    box, port = inbox
    sandbox.write(fan_out())
    configure(sandbox, [webhook(), mail(port)])
    sandbox.fail("b[y]", "the source file /data/raw/2024-05-01/ids.csv is missing")
    first = run(sandbox)
    assert first.outcome is not None and first.outcome.value == "failed"

    ((path, body),) = hooks.received
    assert path == f"/services/{HOOK_SECRET}"  # the receiver got the real URL; nobody else sees it
    text = body["text"]
    for expected in (
        "b[y]",
        "ids.csv is missing",
        f"run {first.run_id}",
        "cause: data",
        "hint: Re-deliver the source file",
        f"flywheel resume {first.run_id}",
    ):
        assert expected in text, expected
    assert body["blocks"][0]["type"] == "header"
    (message,) = box.messages
    assert "b[y] failed (data)" in message["Subject"] and message["To"] == "oncall@example.test"
    mail_text = message.get_content()
    assert f"flywheel resume {first.run_id}" in mail_text and "Re-deliver the source file" in mail_text
    assert box.logins == [(b"flywheel", True)]

    sandbox.fix("b[y]")
    second = run(sandbox, PlanRequest(mode=Mode.RESUME))
    assert second.outcome is not None and second.outcome.value == "succeeded"
    recovered = hooks.received[-1][1]["text"]
    assert f"incident {first.run_id} closed" in recovered and "time saved by reusing 2 finished step(s)" in recovered
    assert "recovered" in box.messages[-1]["Subject"]
    assert notifier_failures(sandbox.home) == []
    assert_no_secret_under(
        sandbox.home, json.dumps([b for _, b in hooks.received]), caplog.text, *(m.as_string() for m in box.messages)
    )


@pytest.mark.e2e
@pytest.mark.usefixtures("secrets")
def test_the_cli_notifies_through_the_environment_and_prints_the_advice(
    sandbox: Sandbox, hooks: Hooks, inbox: tuple[Inbox, int]
) -> None:
    box, port = inbox
    sandbox.write(fan_out())
    configure(sandbox, [webhook(), mail(port)], executor="subprocess")
    sandbox.fail("b[y]", "the source file /data/raw/ids.csv is missing")
    result = sandbox.cli("run", str(sandbox.pipeline))
    assert result.returncode == 1, result.stderr
    assert "cause: data" in result.stdout and "hint: Re-deliver the source file" in result.stdout
    assert len(hooks.received) == 1 and len(box.messages) == 1
    assert "log: " in hooks.received[0][1]["text"]  # the failed attempt's log file
    assert_no_secret_under(sandbox.home, result.stdout, result.stderr)


@pytest.mark.usefixtures("secrets")
def test_a_failing_receiver_is_journaled_and_logged_without_its_secret_and_the_run_goes_on(
    sandbox: Sandbox, hooks: Hooks, caplog: pytest.LogCaptureFixture
) -> None:
    hooks.status = 500
    sandbox.write(fan_out())
    configure(sandbox, [webhook(), mail(free_port())])  # nothing listens on that SMTP port
    sandbox.fail("b[y]", "the source file /x is missing")
    with caplog.at_level(logging.WARNING):
        first = run(sandbox)
    assert first.outcome is not None and first.outcome.value == "failed"  # the step's failure, nothing else
    assert first.state.step(StepKey("b", "x")).status.value == "succeeded"
    sandbox.fix("b[y]")
    with caplog.at_level(logging.WARNING):
        second = run(sandbox, PlanRequest(mode=Mode.RESUME))
    assert second.outcome is not None and second.outcome.value == "succeeded"

    failures = notifier_failures(sandbox.home)
    by_name = {(f.run_id, f.notifier): f.error for f in failures}
    assert "HTTP 500" in by_name[(first.run_id, "webhook")]
    assert "cannot reach 127.0.0.1" in by_name[(first.run_id, "email")]
    assert (second.run_id, "webhook") in by_name  # the recovery message failed too, and was journaled
    assert "notifier webhook failed" in caplog.text
    assert_no_secret_under(sandbox.home, caplog.text)


def test_an_unset_secret_variable_fails_each_alert_visibly(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLYWHEEL_TEST_HOOK", raising=False)
    sandbox.write(fan_out())
    configure(sandbox, [webhook()])
    sandbox.fail("b[x]", "the source file /x is missing")
    result = run(sandbox)
    assert result.outcome is not None and result.outcome.value == "failed"
    (failure,) = notifier_failures(sandbox.home)
    assert failure.notifier == "webhook" and "FLYWHEEL_TEST_HOOK" in failure.error and "not set" in failure.error


def test_messages_are_redacted_and_slack_shaped() -> None:
    redact = Redactor(["abcd-secret", None, "x"])
    assert redact("url https://h/abcd-secret/p and x") == "url https://h/***/p and x"
    message = Message(
        kind=MessageKind.FAILED,
        title="❌ t",
        lines=("error: <b> & c",),
        pipeline="p",
        env="e",
        run_id=3,
        resume_command="flywheel resume 3",
    )
    body = payload(message)
    assert body["text"] == "❌ t\nerror: <b> & c"
    assert body["blocks"][1]["text"]["text"] == "error: &lt;b&gt; &amp; c"
    assert body["blocks"][2]["elements"][0]["text"] == "`flywheel resume 3`"


# ---------------------------------------------------------------------------------------------
# overdue steps, stalled runs and ETA


@pytest.mark.usefixtures("secrets")
def test_a_step_far_past_its_usual_duration_raises_an_overdue_alert(sandbox: Sandbox, hooks: Hooks) -> None:
    sandbox.write(fan_out())
    configure(sandbox, [webhook()])
    run(sandbox)  # the history: every step takes milliseconds
    sandbox.write(fan_out(params={"inputs": ["a"], "sleep": 1.0}))
    observers = []

    def build(**kw: Any) -> api.RunResult:
        session = api.open_session(str(sandbox.pipeline), home=sandbox.home)
        env = session.project.config.environment(session.env_name)
        observers.extend(build_notifiers(env, session.spec, home=session.home, **kw))
        return api.execute(session, PlanRequest(), api.RunOptions(observers=observers))

    result = build(overdue_minimum=0.3, poll_seconds=0.05)
    assert result.outcome is not None and result.outcome.value == "succeeded"
    overdue = [b["text"] for _, b in hooks.received if "overdue" in b["text"]]
    assert overdue and any("b[x] is overdue" in t or "b[y] is overdue" in t for t in overdue)
    assert "usually takes" in overdue[0]
    watch = next(o for o in observers if isinstance(o, OverdueWatch))
    watch.close()
    assert watch._thread is not None and not watch._thread.is_alive()


def test_a_run_with_no_progress_alerts_once_per_quiet_period(tmp_path: Path) -> None:
    from flywheel.spec import PipelineSpec, StepSpec

    spec = PipelineSpec(pipeline="p", steps=(StepSpec(id="s", number=1, title="S", command="true"),))
    sent: list[Message] = []

    class Recorder:
        name = "recorder"

        def send(self, message: Message) -> None:
            sent.append(message)

    history = History(tmp_path, spec)
    watch = OverdueWatch(spec, history, Composer(spec), [Recorder()], stall_seconds=100, poll_seconds=3600)
    t0 = 1000.0
    watch(RunStarted(run_id=1, at=t0, pipeline="p", env="local"))
    watch(StepStarted(run_id=1, at=t0, step="s"))
    assert watch.check(now=t0 + 50) == []
    (stall,) = watch.check(now=t0 + 150)
    assert "no progress" in stall.title and "flywheel resume 1" in stall.text
    assert watch.check(now=t0 + 300) == []  # once per quiet period
    watch(StepSucceeded(run_id=1, at=t0 + 310, step="s"))
    watch.close()
    assert sent == [stall]


def test_eta_and_overdue_come_from_the_median_of_past_durations(sandbox: Sandbox) -> None:
    sandbox.write([step("a", 1), step("b", 2, ["a"])])
    configure(sandbox, [])
    for _ in range(3):
        run(sandbox)
    session = api.open_session(str(sandbox.pipeline), home=sandbox.home)
    with session.journal() as journal:
        took = sorted(
            e.duration
            for r in journal.runs()
            for e in journal.events(r.run_id)
            if isinstance(e, StepSucceeded) and e.step == "a"
        )
        now = time.time()
        events = [RunStarted(run_id=99, at=now, pipeline="tiny", env="local"), StepStarted(run_id=99, at=now, step="a")]
        expected = eta(journal, session.spec, fold(99, events))
    assert expected == {StepKey("a"): pytest.approx(now + took[1])}
    late = overdue_steps({StepKey("a"): 10.0}, {StepKey("a"): 0.0, StepKey("b"): 0.0}, now=16.0, minimum=5)
    assert [(o.key, o.elapsed) for o in late] == [(StepKey("a"), 16.0)]
    assert overdue_steps({StepKey("a"): 1.0}, {StepKey("a"): 0.0}, now=4.0, minimum=5) == []  # too short to matter


def test_status_shows_when_a_running_step_should_end(sandbox: Sandbox) -> None:
    import io

    from rich.console import Console

    from flywheel.render import print_status
    from flywheel.state import as_running

    sandbox.write([step("a", 1), step("b", 2, ["a"])])
    configure(sandbox, [])
    run(sandbox)  # history: each step takes milliseconds
    session = api.open_session(str(sandbox.pipeline), home=sandbox.home)
    now = time.time()
    started = RunStarted(run_id=7, at=now - 5, pipeline="tiny", env="local")
    state = as_running(fold(7, [started, StepStarted(run_id=7, at=now - 5, step="a")]))
    out = io.StringIO()
    print_status(Console(file=out, width=120), api.RunView(session=session, state=state))
    assert re.search(r"⏰ a: \d\.\d s past its usual duration", out.getvalue()), out.getvalue()
    with session.journal() as journal:
        usual = eta(journal, session.spec, state)[StepKey("a")] - started.at
    later = as_running(fold(7, [started, StepStarted(run_id=7, at=now + 60, step="a")]))
    out = io.StringIO()
    print_status(Console(file=out, width=120), api.RunView(session=session, state=later))
    assert "⏱  a: expected to finish around" in out.getvalue() and usual < 1
