"""The Glue executor against moto in server mode: start, attach, poll, map outcomes, re-attach, stop.

moto never executes a Glue job: a run's outcome is what the launcher's rules say (SUCCEEDED at once by
default), so these tests check what flywheel asks of Glue and how it reads the answers.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError

from flywheel import api
from flywheel.errors import BackendError, DefinitionError
from flywheel.events import RunStarted, StepAttached, StepStarted, StepSucceeded
from flywheel.executors import create_executor
from flywheel.executors.base import Attempt
from flywheel.executors.glue import (
    GlueExecutor,
    attempt_id,
    capacity_arguments,
    dpu_hours,
    job_arguments,
    outcome_of,
    params_digest,
)
from flywheel.invocation import StepInvocation
from flywheel.planner import Mode, PlanRequest
from flywheel.spec import StepKey, load_project
from tests.aws.resources import create_bucket, create_glue_jobs, glue_step, tiny_aws_project
from tests.support.moto_server import MotoServer

FAST: dict[str, Any] = {
    "poll_seconds": 0.05,
    "max_poll_seconds": 0.2,
    "stop_wait_seconds": 5.0,
    "concurrency_wait_seconds": 10.0,
}


def invocation(step: str = "a", *, run_id: int = 7, attempt: int = 1, context: str | None = None) -> StepInvocation:
    return StepInvocation(
        pipeline="tiny",
        step=step,
        context=context,
        run_id=run_id,
        attempt=attempt,
        env="dev",
        job="tests.support.jobs:noop",
        params={"out": "s3://tiny-dev-data/out", "home": "/somewhere/else"},
    )


# --------------------------------------------------------------------------- pure parts


def test_arguments_carry_the_invocation_and_the_labels_that_find_it_again() -> None:
    inv = invocation("b", context="x", attempt=2)
    args = job_arguments(inv, start_token="tok")
    assert StepInvocation.from_json(args["--flywheel_invocation"]) == inv
    assert args["--flywheel_attempt_id"] == "7:b[x]:2" == attempt_id(inv)
    assert args["--flywheel_key"] == "b[x]"
    assert args["--flywheel_context"] == "x"
    assert args["--flywheel_start_token"] == "tok"
    assert all(isinstance(v, str) and k.startswith("--") for k, v in args.items())
    # the digest ignores the operator's home and capacity: another laptop can re-attach
    assert params_digest({**inv.params, "home": "/other", "threads": 8}) == args["--flywheel_params_sha"]
    assert params_digest({**inv.params, "out": "s3://elsewhere"}) != args["--flywheel_params_sha"]


def test_capacity_from_resources_and_timeout() -> None:
    assert capacity_arguments({"worker_type": "G.2X", "workers": 20}, 7200) == {
        "WorkerType": "G.2X",
        "NumberOfWorkers": 20,
        "Timeout": 120,
    }
    assert capacity_arguments({"workers": 30}, 61) == {"WorkerType": "G.1X", "NumberOfWorkers": 30, "Timeout": 2}
    assert capacity_arguments({}, None) == {}


def test_dpu_hours() -> None:
    assert dpu_hours({"DPUSeconds": 7200.0, "ExecutionTime": 1}) == 2.0
    assert dpu_hours({"ExecutionTime": 3600, "WorkerType": "G.2X", "NumberOfWorkers": 10}) == 20.0
    assert dpu_hours({"ExecutionTime": 1800, "MaxCapacity": 10.0}) == 5.0
    assert dpu_hours({"ExecutionTime": 0}) is None


@pytest.mark.parametrize(
    ("state", "message", "expected_type", "timed_out"),
    [
        ("FAILED", "JobFailed: [missing-source] no files under s3://b/raw", "missing-source", False),
        ("FAILED", "An error occurred while calling o92.parquet", "GlueJobFailed", False),
        ("TIMEOUT", "Job run timed out", "Timeout", True),
        ("STOPPED", "", "Stopped", False),
        ("ERROR", "Internal service error", "GlueError", False),
    ],
)
def test_final_states_map_to_outcomes(state: str, message: str, expected_type: str, timed_out: bool) -> None:
    run = {"Id": "jr_1", "JobRunState": state, "ErrorMessage": message, "ExecutionTime": 60, "MaxCapacity": 2.0}
    outcome = outcome_of(run)
    assert not outcome.succeeded
    assert outcome.error_type == expected_type
    assert outcome.timed_out is timed_out
    assert outcome.external_id == "jr_1"
    assert outcome.error_message
    if expected_type == "missing-source":
        assert outcome.error_message == "no files under s3://b/raw"


def test_success_takes_outputs_from_the_job_result() -> None:
    run = {"Id": "jr_2", "JobRunState": "SUCCEEDED", "ExecutionTime": 36, "WorkerType": "G.1X", "NumberOfWorkers": 10}
    outcome = outcome_of(run, {"ok": True, "outputs": [{"uri": "s3://b/x", "rows": 3}]})
    assert outcome.succeeded and outcome.outputs == ({"uri": "s3://b/x", "rows": 3},)
    assert outcome.dpu_hours == pytest.approx(0.1)


# --------------------------------------------------------------------------- against moto


def _executor(root: Path, steps: list[dict[str, Any]] | None = None, **aws: Any) -> GlueExecutor:
    path = tiny_aws_project(root, steps=steps or [glue_step("a", 1), glue_step("b", 2, ("a",))], aws=aws or None)
    project = load_project(str(path))
    create_glue_jobs(project.spec, "dev")
    create_bucket("tiny-dev-data")
    return GlueExecutor(spec=project.spec, env_name="dev", env=project.config.environment("dev"), **FAST)


def _attempt(tmp_path: Path, inv: StepInvocation, attached: list[str], **extra: Any) -> Attempt:
    return Attempt(
        invocation=inv,
        log_path=tmp_path / "logs" / f"{inv.key}.{inv.attempt}.log",
        timeout=extra.pop("timeout", 5400.0),
        resources=extra.pop("resources", {"worker_type": "G.2X", "workers": 20}),
        on_attached=attached.append,
        **extra,
    )


def test_runs_a_step_as_a_glue_job_run(aws: MotoServer, tmp_path: Path) -> None:
    executor = _executor(tmp_path / "p")
    attached: list[str] = []
    outcome = executor.execute(_attempt(tmp_path, invocation("a"), attached), threading.Event())
    assert outcome.succeeded, outcome
    runs = boto3.client("glue").get_job_runs(JobName="tiny-dev-a")["JobRuns"]
    assert len(runs) == 1
    run = runs[0]
    assert attached == [run["Id"]] and outcome.external_id == run["Id"]
    assert run["WorkerType"] == "G.2X" and run["NumberOfWorkers"] == 20 and run["Timeout"] == 90
    sent = StepInvocation.from_json(run["Arguments"]["--flywheel_invocation"])
    assert (sent.step, sent.run_id, sent.attempt, sent.env) == ("a", 7, 1, "dev")
    assert sent.result_path and sent.result_path.startswith("s3://tiny-dev-data/_flywheel/results/tiny/dev/run-7/a.")
    assert run["Arguments"]["--flywheel_attempt_id"] == "7:a:1"
    assert outcome.dpu_hours == pytest.approx(123 * 40 / 3600)  # moto reports ExecutionTime 123 s
    assert "started Glue run" in (tmp_path / "logs" / "a.1.log").read_text()


def test_reads_the_result_the_job_wrote(aws: MotoServer, tmp_path: Path) -> None:
    """A job that ran writes its result to the invocation's result path; here the test writes it."""
    executor = _executor(tmp_path / "p")
    aws.glue_outcome("tiny-dev-a", "SUCCEEDED", hold=True)
    attached: list[str] = []
    box: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: box.update(o=executor.execute(_attempt(tmp_path, invocation("a"), attached), threading.Event()))
    )
    worker.start()
    _until(lambda: attached)
    run = boto3.client("glue").get_job_run(JobName="tiny-dev-a", RunId=attached[0])["JobRun"]
    result_path = StepInvocation.from_json(run["Arguments"]["--flywheel_invocation"]).result_path
    assert result_path is not None
    bucket, _, key = result_path[len("s3://") :].partition("/")
    body = {"ok": True, "outputs": [{"uri": "s3://tiny-dev-data/out/a", "rows": 5}]}
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode())
    aws.release_glue(run_id=attached[0])
    worker.join(10)
    assert box["o"].succeeded and box["o"].outputs == ({"uri": "s3://tiny-dev-data/out/a", "rows": 5},)


@pytest.mark.parametrize(
    ("state", "error", "expected_type"),
    [("FAILED", "JobFailed: [schema-mismatch] column id is int", "schema-mismatch"), ("TIMEOUT", None, "Timeout")],
)
def test_failed_and_timed_out_runs(
    aws: MotoServer, tmp_path: Path, state: str, error: str | None, expected_type: str
) -> None:
    executor = _executor(tmp_path / "p")
    aws.glue_outcome("tiny-dev-a", state, error=error)
    outcome = executor.execute(_attempt(tmp_path, invocation("a"), []), threading.Event())
    assert not outcome.succeeded
    assert outcome.error_type == expected_type
    assert outcome.timed_out is (state == "TIMEOUT")
    assert outcome.external_id


def _until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def _start_as_dead_runner(inv: StepInvocation, job: str, *, params_sha: str | None = None) -> str:
    """What a runner that died right after StartJobRun left behind: a labelled run, never journaled."""
    args = job_arguments(inv, start_token="dead-runner")
    if params_sha is not None:
        args["--flywheel_params_sha"] = params_sha
    return str(boto3.client("glue").start_job_run(JobName=job, Arguments=args)["JobRunId"])


def test_reattaches_to_a_run_left_by_a_dead_runner(aws: MotoServer, tmp_path: Path) -> None:
    executor = _executor(tmp_path / "p")
    aws.glue_outcome("tiny-dev-a", "SUCCEEDED", hold_seconds=0.5)
    orphan = _start_as_dead_runner(invocation("a", run_id=3), "tiny-dev-a")
    attached: list[str] = []
    outcome = executor.execute(_attempt(tmp_path, invocation("a", run_id=4), attached), threading.Event())
    assert outcome.succeeded and attached == [orphan] and outcome.external_id == orphan
    assert len(boto3.client("glue").get_job_runs(JobName="tiny-dev-a")["JobRuns"]) == 1
    assert "instead of starting a duplicate" in (tmp_path / "logs" / "a.1.log").read_text()


def test_refuses_to_duplicate_a_live_run_with_other_parameters(aws: MotoServer, tmp_path: Path) -> None:
    executor = _executor(tmp_path / "p")
    aws.glue_outcome("tiny-dev-a", "SUCCEEDED", hold=True)
    orphan = _start_as_dead_runner(invocation("a", run_id=3), "tiny-dev-a", params_sha="0000")
    outcome = executor.execute(_attempt(tmp_path, invocation("a", run_id=4), []), threading.Event())
    assert not outcome.succeeded and outcome.error_type == "GlueRunConflict"
    assert orphan in (outcome.error_message or "") and "batch-stop-job-run" in (outcome.error_message or "")
    assert len(boto3.client("glue").get_job_runs(JobName="tiny-dev-a")["JobRuns"]) == 1


def test_a_lost_start_answer_does_not_start_a_duplicate(aws: MotoServer, tmp_path: Path) -> None:
    """StartJobRun went through but its answer was lost: the executor finds its start token."""
    executor = _executor(tmp_path / "p")
    lost: list[bool] = []

    def lose_answer(**kwargs: Any) -> None:
        if not lost:
            lost.append(True)
            raise ReadTimeoutError(endpoint_url=aws.endpoint)

    executor.clients.start.meta.events.register("after-call.glue.StartJobRun", lose_answer)
    attached: list[str] = []
    outcome = executor.execute(_attempt(tmp_path, invocation("a"), attached), threading.Event())
    assert lost and outcome.succeeded
    runs = boto3.client("glue").get_job_runs(JobName="tiny-dev-a")["JobRuns"]
    assert [r["Id"] for r in runs] == attached
    assert "had started: using it" in (tmp_path / "logs" / "a.1.log").read_text()


def test_waits_while_the_job_is_at_its_concurrency_limit(aws: MotoServer, tmp_path: Path) -> None:
    executor = _executor(tmp_path / "p")
    glue = boto3.client("glue")
    glue.delete_job(JobName="tiny-dev-a")  # moto's UpdateJob fails; recreate it with a limit of one run
    glue.create_job(
        Name="tiny-dev-a", Role="r", Command={"Name": "glueetl"}, ExecutionProperty={"MaxConcurrentRuns": 1}
    )
    aws.glue_outcome("tiny-dev-a", "SUCCEEDED", hold=True)
    foreign = glue.start_job_run(JobName="tiny-dev-a")["JobRunId"]  # started by hand: no flywheel labels
    box: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: box.update(o=executor.execute(_attempt(tmp_path, invocation("a"), []), threading.Event()))
    )
    worker.start()
    log = tmp_path / "logs" / "a.1.log"
    _until(lambda: log.exists() and "concurrent-run limit" in log.read_text())
    aws.release_glue(run_id=foreign)
    worker.join(10)
    assert box["o"].succeeded and box["o"].external_id != foreign


def test_cancel_stops_the_glue_run(aws: MotoServer, tmp_path: Path) -> None:
    """BatchStopJobRun is missing from moto 5.2.5; the test launcher implements it (marks runs STOPPED)."""
    executor = _executor(tmp_path / "p")
    aws.glue_outcome("tiny-dev-a", "SUCCEEDED", hold=True)
    cancel = threading.Event()
    attached: list[str] = []
    box: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: box.update(o=executor.execute(_attempt(tmp_path, invocation("a"), attached), cancel))
    )
    worker.start()
    _until(lambda: attached)
    cancel.set()
    worker.join(10)
    outcome = box["o"]
    assert outcome.cancelled and outcome.external_id == attached[0]
    run = boto3.client("glue").get_job_run(JobName="tiny-dev-a", RunId=attached[0])["JobRun"]
    assert run["JobRunState"] == "STOPPED"


def test_construction_checks_placement_and_account(
    aws: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tiny_aws_project(tmp_path / "p1", steps=[{"id": "a", "number": 1, "title": "a", "job": "m:f"}])
    project = load_project(str(path))
    with pytest.raises(DefinitionError) as placement:
        create_executor("glue", spec=project.spec, env_name="dev", env=project.config.environment("dev"))
    assert "cloud.glue_job" in placement.value.details[0]

    path = tiny_aws_project(tmp_path / "p2", steps=[glue_step("a", 1)], aws={"account_id": "999999999999"})
    project = load_project(str(path))
    with pytest.raises(BackendError) as account:
        create_executor("glue", spec=project.spec, env_name="dev", env=project.config.environment("dev"))
    assert "123456789012" in account.value.message and "999999999999" in account.value.message

    path = tiny_aws_project(tmp_path / "p3", steps=[glue_step("a", 1)])
    project = load_project(str(path))
    monkeypatch.setenv("AWS_PROFILE", "flywheel-prod")
    with pytest.raises(BackendError) as profile:
        create_executor("glue", spec=project.spec, env_name="dev", env=project.config.environment("dev"))
    assert "AWS_PROFILE" in profile.value.message and profile.value.fix


# --------------------------------------------------------------------------- through the API


@pytest.mark.e2e
def test_resume_after_a_crash_between_start_and_journal_reattaches(aws: MotoServer, tmp_path: Path) -> None:
    """The journal says `b` started (no StepAttached); Glue still runs it. Resume must not start it twice."""
    path = tiny_aws_project(
        tmp_path / "p", steps=[glue_step("a", 1), glue_step("b", 2, ("a",)), glue_step("c", 3, ("b",))]
    )
    session = api.open_session(str(path), "dev", tmp_path / "home")
    create_glue_jobs(session.spec, "dev")
    create_bucket("tiny-dev-data")
    with session.journal() as journal:
        run_id = journal.new_run("tiny", "dev")
        now = time.time()
        journal.append(
            RunStarted(run_id=run_id, at=now, pipeline="tiny", env="dev", definition=str(path)),
            StepStarted(run_id=run_id, at=now, step="a"),
            StepSucceeded(run_id=run_id, at=now + 1, step="a", duration=1.0),
            StepStarted(run_id=run_id, at=now + 2, step="b"),
        )
    crashed = StepInvocation(
        pipeline="tiny", step="b", context=None, run_id=run_id, attempt=1, env="dev",
        job="tests.support.jobs:noop", params=_params(session, "b"),
    )  # fmt: skip
    aws.glue_outcome("tiny-dev-b", "SUCCEEDED", hold=True)
    orphan = _start_as_dead_runner(crashed, "tiny-dev-b")

    executor = GlueExecutor(spec=session.spec, env_name="dev", env=_env(session), **FAST)
    box: dict[str, Any] = {}
    resume = threading.Thread(
        target=lambda: box.update(
            r=api.execute(session, PlanRequest(mode=Mode.RESUME), api.RunOptions(executor=executor))
        )
    )
    resume.start()
    logs = tmp_path / "home" / "logs"
    _until(lambda: any("re-attaching" in p.read_text() for p in logs.glob("run-*/b.attempt-1.log")))
    assert aws.release_glue(run_id=orphan) == [orphan]
    resume.join(20)
    result = box["r"]

    assert result.outcome is not None and result.outcome.value == "succeeded"
    glue = boto3.client("glue")
    assert [r["Id"] for r in glue.get_job_runs(JobName="tiny-dev-b")["JobRuns"]] == [orphan]
    assert glue.get_job_runs(JobName="tiny-dev-a")["JobRuns"] == []  # reused, not rerun
    assert len(glue.get_job_runs(JobName="tiny-dev-c")["JobRuns"]) == 1
    with session.journal() as journal:
        events = journal.events(result.run_id)
    attached = [e for e in events if isinstance(e, StepAttached)]
    assert (attached[0].step, attached[0].external_id) == ("b", orphan)
    assert result.state.step(StepKey("b")).external_id == orphan


def _env(session: api.Session) -> Any:
    return session.project.config.environment(session.env_name)


def _params(session: api.Session, step: str) -> dict[str, Any]:
    from flywheel.params import resolve_params

    return resolve_params(session.spec, StepKey(step), session.env_name, _env(session), str(session.home))


def _crashed_while_b_ran(aws: MotoServer, tmp_path: Path, b_ends: str) -> tuple[api.Session, str]:
    """A journal whose runner died while `b`'s Glue run (journaled by StepAttached) ran; the run then
    ended `b_ends` with no one watching."""
    path = tiny_aws_project(tmp_path / "p", steps=[glue_step("a", 1), glue_step("b", 2, ("a",))])
    session = api.open_session(str(path), "dev", tmp_path / "home")
    create_glue_jobs(session.spec, "dev")
    create_bucket("tiny-dev-data")
    with session.journal() as journal:
        run_id = journal.new_run("tiny", "dev")
    crashed = StepInvocation(
        pipeline="tiny", step="b", context=None, run_id=run_id, attempt=1, env="dev",
        job="tests.support.jobs:noop", params=_params(session, "b"),
    )  # fmt: skip
    # STOPPING is not a final state a rule can end in: hold the run, then release it into STOPPING
    stopping = b_ends == "STOPPING"
    aws.glue_outcome("tiny-dev-b", "STOPPED" if stopping else b_ends, error="[SourceMissing] gone", hold=stopping)
    unwatched = _start_as_dead_runner(crashed, "tiny-dev-b")
    with session.journal() as journal:
        now = time.time()
        journal.append(
            RunStarted(run_id=run_id, at=now, pipeline="tiny", env="dev", definition=str(path)),
            StepStarted(run_id=run_id, at=now, step="a"),
            StepSucceeded(run_id=run_id, at=now + 1, step="a", duration=1.0),
            StepStarted(run_id=run_id, at=now + 2, step="b"),
            StepAttached(run_id=run_id, at=now + 2, step="b", attempt=1, external_id=unwatched),
        )
    if stopping:
        aws.release_glue(run_id=unwatched, state="STOPPING")
    _until(lambda: glue_state("tiny-dev-b", unwatched) == b_ends)
    return session, unwatched


def glue_state(job: str, run_id: str) -> str:
    return str(boto3.client("glue").get_job_run(JobName=job, RunId=run_id)["JobRun"]["JobRunState"])


@pytest.mark.e2e
@pytest.mark.parametrize("b_ends", ["SUCCEEDED", "FAILED", "STOPPING"])
def test_resume_asks_glue_for_the_journaled_run_first(aws: MotoServer, tmp_path: Path, b_ends: str) -> None:
    """Issue 15.10: the orphan scan sees only active runs; the journaled id is asked for first. A run
    that SUCCEEDED while no runner watched is taken (no second StartJobRun); a FAILED one is not, nor one
    STOPPING ("Job runs": a stopping run never succeeds; it is ending, not running)."""
    session, unwatched = _crashed_while_b_ran(aws, tmp_path, b_ends)
    executor = GlueExecutor(spec=session.spec, env_name="dev", env=_env(session), **FAST)
    result = api.execute(session, PlanRequest(mode=Mode.RESUME), api.RunOptions(executor=executor))

    assert result.outcome is not None and result.outcome.value == "succeeded"
    runs = [r["Id"] for r in boto3.client("glue").get_job_runs(JobName="tiny-dev-b")["JobRuns"]]
    taken = result.state.step(StepKey("b")).external_id
    if b_ends == "SUCCEEDED":
        assert runs == [unwatched] and taken == unwatched
        log = next((tmp_path / "home" / "logs").glob(f"run-{result.run_id}/b.attempt-1.log")).read_text()
        assert f"Glue run {unwatched}" in log and "instead of starting the step again" in log
    else:
        assert len(runs) == 2 and taken in runs and taken != unwatched
