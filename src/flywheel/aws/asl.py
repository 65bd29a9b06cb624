"""Compile a pipeline into an Amazon States Language definition: a pure function, checked by golden files.

The shape follows the runbook operators know. Steps are grouped by `cloud.state`, in dependency order;
a group of one step without contexts is one Task state named after the group (`Step3_PreparePartTables`);
a group of several steps, or a step with contexts, is a `Parallel` state named after the group
(`Step1_ParallelSplitJobs`, `Step2_RegisterPartTables`) with one branch per `step[context]`.

Every Glue task is `glue:startJobRun.sync` with the step invocation in its job arguments (the contract of
`flywheel.aws.glue_entry`, plus the labels the Glue executor uses to re-attach to a run this execution
left running) and the spec's timeout and retry policy. Tasks retry Glue's throttling and internal errors,
and wait for a job at its concurrent-run limit.

How a task fails decides whether `RedriveExecution` can continue the execution ("Redriving executions",
Step Functions developer guide: a redrive restarts the states that have no `...Exited` event). A task of
its own (not in a `Parallel`) has **no Catch**: its error fails the execution in the task itself, so a
redrive reruns that Glue task; the alert comes from the EventBridge rule on the execution's status
(`infra/modules/flywheel-orchestration/operations.tf`), which fires on FAILED, TIMED_OUT and ABORTED
whatever the state that failed. Inside a `Parallel` a failed branch would cancel its siblings and stop
their Glue runs, so each branch task keeps a `Catch` that publishes the failure to the SNS topic (step,
error, execution ARN, the `flywheel sfn recover` command) and ends the branch marked failed; the group
fails after the `Parallel`. That failure is not redrivable (the branch succeeded; only the `Fail` state
would run again), and `flywheel.aws.redrive` says so.

The execution input may name keys to skip: `{"skip": ["addressable-split-and-part",
"register-part-tables[addressable_ids]"]}` (a step id skips all its contexts). A `Choice` before every
task checks it, so `flywheel sfn recover --in-aws` continues a failed execution as a new execution that
is visible in the console and to alarms. Without `skip` everything runs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flywheel.aws import glue_entry as contract
from flywheel.errors import DefinitionError
from flywheel.params import expand, resolve_params
from flywheel.spec import EnvironmentSpec, PipelineSpec, StepKey, StepSpec

GLUE_SYNC = "arn:aws:states:::glue:startJobRun.sync"
SNS_PUBLISH = "arn:aws:states:::sns:publish"
SKIP_INPUT = "skip"
"""The execution-input field listing step ids and `step[context]` keys to skip."""
SKIP_FLAGS = "flywheel_skip"
"""Where the definition keeps one boolean per step and per key, computed once from `skip`."""
BRANCHES_FIELD = "flywheel_branches"
"""Where a `Parallel` state puts its branches' outputs, then whether one of them failed."""
BRANCH_FAILED = "flywheel.BranchFailed"
"""The output of a branch whose task failed (and was reported): the branch ends, its siblings go on."""
GLUE_HOME = "/tmp/flywheel"
"""What `{home}` means inside a Glue job started by Step Functions (scratch space only)."""
EXECUTION_ARG = "--flywheel_execution"
"""The Step Functions execution that started a Glue run (`$$.Execution.Id`)."""
EXECUTION_MARGIN_SECONDS = 3600
"""Added to the critical path of step timeouts to bound a stuck execution."""
GLUE_TIMEOUT_MARGIN_SECONDS = 600
"""How much longer a task waits than its Glue run may last: Glue ends the run at its `Timeout` (whole
minutes) and needs time to report TIMEOUT; a task that gave up first would leave the run going on while
the execution has already failed, and the alert would name `States.Timeout` instead of Glue's error."""
TRANSIENT_GLUE_ERRORS = (
    "Glue.ThrottlingException",
    "Glue.InternalServiceException",
    "Glue.OperationTimeoutException",
)
CONCURRENCY_ERROR = "Glue.ConcurrentRunsExceededException"
"""What a Glue task fails with when its job already runs `MaxConcurrentRuns` runs (most jobs allow one)."""
CONCURRENCY_RETRY: Mapping[str, Any] = {
    "IntervalSeconds": 60,
    "MaxAttempts": 8,
    "BackoffRate": 2.0,
    "MaxDelaySeconds": 600,
}
"""Wait for the other run to end: 1 min, then doubling up to 10 min between tries, 55 min in all (the
Glue executor waits as long: `GlueExecutor.concurrency_wait_seconds`)."""
_STATE_NAME_MAX = 80
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class TaskPlacement:
    """Where one `step[context]` lives in the definition (the reader maps history back by JobName and
    context, not by these names, so hand-built machines read too)."""

    key: StepKey
    group: str
    task_state: str
    glue_job: str


def glue_job_name(spec: PipelineSpec, step: StepSpec, env_name: str) -> str:
    """The Glue job of a step in an environment (`cloud.glue_job` with `{env}` expanded)."""
    template = step.cloud.glue_job or f"{spec.pipeline}-{{env}}-{step.id}"
    return str(expand(template, {"env": env_name, "pipeline": spec.pipeline}))


def state_machine_name(spec: PipelineSpec, env_name: str, env: EnvironmentSpec) -> str:
    """The configured state machine (`aws.state_machine`), else `{pipeline}-{env}`."""
    if env.aws is not None and env.aws.state_machine:
        return env.aws.state_machine
    return f"{spec.pipeline}-{env_name}"


def recover_command(env_name: str, execution_arn: str = "<execution-arn>") -> str:
    """The command an alert tells the operator to run."""
    return f"flywheel sfn recover {execution_arn} --env {env_name}"


def group_state_name(step: StepSpec) -> str:
    if step.cloud.state:
        return step.cloud.state
    words = "".join(part.title() for part in re.split(r"[-_]+", step.id))
    return f"Step{step.number}_{words}"


def groups(spec: PipelineSpec) -> list[tuple[str, tuple[StepSpec, ...]]]:
    """Steps grouped by state name in execution order; steps of one group must not depend on each other,
    and every dependency must sit in an earlier group (else `DefinitionError`, all problems at once)."""
    order: list[str] = []
    members: dict[str, list[StepSpec]] = {}
    for step in spec.topological_steps:
        name = group_state_name(step)
        if name not in members:
            order.append(name)
            members[name] = []
        members[name].append(step)
    problems: list[str] = []
    position = {step.id: order.index(group_state_name(step)) for step in spec.steps}
    for step in spec.steps:
        for dep in step.depends_on:
            if position[dep] == position[step.id]:
                problems.append(
                    f"step {step.id} depends on {dep}, but both are in state {group_state_name(step)} "
                    "(steps of one state run in parallel)"
                )
            elif position[dep] > position[step.id]:
                problems.append(f"step {step.id} is in a state that runs before the state of its dependency {dep}")
    if problems:
        raise DefinitionError(
            f"{spec.pipeline} cannot be exported to Step Functions",
            details=tuple(problems),
            fix="give dependent steps different `cloud.state` names",
        )
    return [(name, tuple(members[name])) for name in order]


def _is_parallel(members: Sequence[StepSpec]) -> bool:
    return len(members) > 1 or bool(members[0].contexts)


def placements(spec: PipelineSpec, env_name: str) -> list[TaskPlacement]:
    """Every task of the definition: its key, group, state name and Glue job."""
    out: list[TaskPlacement] = []
    for group, members in groups(spec):
        parallel = _is_parallel(members)
        for step in members:
            for key in step.keys:
                if not parallel:
                    task = group
                elif len(members) == 1:
                    task = f"{group}_{key.context}"
                else:
                    task = f"{group}_{key.step}" + (f"_{key.context}" if key.context else "")
                out.append(TaskPlacement(key, group, _SAFE.sub("_", task), glue_job_name(spec, step, env_name)))
    return out


def flag_name(text: str) -> str:
    """A JSONPath-safe field name for a step id or `step[context]` key."""
    return _SAFE.sub("_", text.replace("[", "__").replace("]", "")).replace("-", "_")


def _sns_topic_arn(env_name: str, env: EnvironmentSpec) -> str | dict[str, str] | None:
    """The topic ARN, or an intrinsic that builds it from the state machine's own ARN (so the committed
    definition needs no account id)."""
    aws = env.aws
    if aws is None or not aws.sns_topic:
        return None
    if aws.sns_topic.startswith("arn:"):
        return aws.sns_topic
    if aws.account_id:
        return f"arn:aws:sns:{aws.region}:{aws.account_id}:{aws.sns_topic}"
    account = "States.ArrayGetItem(States.StringSplit($$.StateMachine.Id, ':'), 4)"
    return {"TopicArn.$": _format([f"arn:aws:sns:{aws.region}:", f":{aws.sns_topic}"], account)}


def _escape(text: str) -> str:
    """Escape what intrinsic string literals treat specially: quote, braces, backslash."""
    return re.sub(r"(['{}\\])", r"\\\1", text)


def _quote(text: str) -> str:
    """A string literal argument of an intrinsic function."""
    return f"'{_escape(text)}'"


def _format(pieces: Sequence[str], *paths: str) -> str:
    """`States.Format` of literal pieces with a path between each two (`len(pieces) == len(paths) + 1`)."""
    template = "{}".join(_escape(piece) for piece in pieces)
    return f"States.Format('{template}', {', '.join(paths)})"


def _glue_timeout_minutes(step: StepSpec) -> int | None:
    """The Glue run's `Timeout` (whole minutes, rounded up; Glue has no finer unit)."""
    return None if step.timeout is None else max(1, math.ceil(step.timeout / 60))


def task_timeout_seconds(glue_minutes: int) -> int:
    """The task's `TimeoutSeconds`: the Glue run's own limit and a margin, so Glue always ends first."""
    return glue_minutes * 60 + GLUE_TIMEOUT_MARGIN_SECONDS


def _retry(step: StepSpec) -> list[dict[str, Any]]:
    # Step Functions uses the first retrier whose ErrorEquals matches, and `States.TaskFailed` matches
    # the Glue errors too: the specific rules come first.
    retries: list[dict[str, Any]] = [
        {"ErrorEquals": list(TRANSIENT_GLUE_ERRORS), "IntervalSeconds": 30, "MaxAttempts": 3, "BackoffRate": 2.0},
        {"ErrorEquals": [CONCURRENCY_ERROR], **CONCURRENCY_RETRY},
    ]
    policy = step.retry
    if policy.attempts > 1:
        rule: dict[str, Any] = {
            "ErrorEquals": ["States.TaskFailed"],
            "IntervalSeconds": max(1, math.ceil(policy.backoff_seconds)),
            "MaxAttempts": policy.attempts - 1,
            "BackoffRate": float(policy.backoff_multiplier),
        }
        if policy.jitter > 0:
            rule["JitterStrategy"] = "FULL"
        retries.append(rule)
    return retries


def _arguments(spec: PipelineSpec, step: StepSpec, key: StepKey, env_name: str, env: EnvironmentSpec) -> dict[str, str]:
    from flywheel.executors.glue import params_digest

    params = resolve_params(spec, key, env_name, env, GLUE_HOME)
    args: dict[str, str] = {
        contract.arg(contract.PIPELINE): spec.pipeline,
        contract.arg(contract.ENV): env_name,
        contract.arg(contract.STEP): key.step,
        contract.arg(contract.KEY): str(key),
        contract.arg(contract.JOB): step.job or "",
        contract.arg(contract.PARAMS): json.dumps(params, sort_keys=True, default=str),
        contract.arg(contract.PARAMS_SHA): params_digest(params),
    }
    if key.context is not None:
        args[contract.arg(contract.CONTEXT)] = key.context
    aws = env.aws
    dynamic: dict[str, str] = {f"{EXECUTION_ARG}.$": "$$.Execution.Id"}
    if aws is not None and aws.s3_root:
        root = aws.s3_root.rstrip("/")
        prefix = f"{root}/_flywheel/results/{spec.pipeline}/{env_name}/sfn/"
        dynamic[f"{contract.arg(contract.RESULT_PATH)}.$"] = _format([prefix, f"/{key}.json"], "$$.Execution.Name")
    return {**args, **dynamic}


def _task(
    spec: PipelineSpec,
    step: StepSpec,
    place: TaskPlacement,
    env_name: str,
    env: EnvironmentSpec,
    next_state: str | None,
    *,
    in_branch: bool,
) -> dict[str, Any]:
    parameters: dict[str, Any] = {
        "JobName": place.glue_job,
        "Arguments": _arguments(spec, step, place.key, env_name, env),
    }
    if step.resources.worker_type or step.resources.workers:
        parameters["WorkerType"] = step.resources.worker_type or "G.1X"
        parameters["NumberOfWorkers"] = step.resources.workers or 2
    glue_minutes = _glue_timeout_minutes(step)
    if glue_minutes is not None:
        parameters["Timeout"] = glue_minutes
    task: dict[str, Any] = {
        "Type": "Task",
        "Comment": f"step {step.number}: {step.title} ({place.key})",
        "Resource": GLUE_SYNC,
        "Parameters": parameters,
        "ResultPath": None,
    }
    if glue_minutes is not None:
        task["TimeoutSeconds"] = task_timeout_seconds(glue_minutes)
    task["Retry"] = _retry(step)
    if in_branch:  # outside a Parallel the error fails the execution here, where a redrive reruns it
        handler = (
            f"{place.task_state}_Notify" if _sns_topic_arn(env_name, env) is not None else f"{place.task_state}_Failed"
        )
        task["Catch"] = [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": handler}]
    if next_state is None:
        task["End"] = True
    else:
        task["Next"] = next_state
    return task


def _branch_failure_states(
    spec: PipelineSpec, step: StepSpec, place: TaskPlacement, env_name: str, env: EnvironmentSpec
) -> dict[str, dict[str, Any]]:
    """What a `Parallel` branch's `Catch` leads to: `<task>_Notify` (when there is a topic) ->
    `<task>_Failed`, a `Pass` that ends the branch with `BRANCH_FAILED`, so the sibling branches are not
    cancelled (a failed branch fails the Parallel, which stops the other branches' Glue runs) and the group
    fails after all of them ended."""
    fail_state = f"{place.task_state}_Failed"
    what = f"{spec.pipeline} ({env_name}): step {step.number} {place.key} failed in Glue job {place.glue_job}"
    fail: dict[str, Any] = {
        "Type": "Pass",
        "Comment": f"{place.key} failed; the other branches finish, then {place.group} fails",
        "Result": BRANCH_FAILED,
        "End": True,
    }
    topic = _sns_topic_arn(env_name, env)
    if topic is None:
        return {fail_state: fail}
    # `$.error` is what the Catch caught: `Error` always, `Cause` only when the failure had one (a
    # `States.Timeout` or a runtime error may not). A path to a missing field fails the state with
    # States.Runtime, and then no alert is sent at all: the whole object is rendered instead.
    message = _format(
        [
            f"{what}. Error: ",
            ". Execution: ",
            ". Recover with: flywheel sfn recover ",
            f" --env {env_name}",
        ],
        "States.JsonToString($.error)",
        "$$.Execution.Id",
        "$$.Execution.Id",
    )
    parameters: dict[str, Any] = {}
    if isinstance(topic, dict):
        parameters.update(topic)
    else:
        parameters["TopicArn"] = topic
    parameters["Subject"] = f"flywheel: {spec.pipeline} {env_name} step {step.number} failed"[:100]
    parameters["Message.$"] = message
    notify = {
        "Type": "Task",
        "Comment": "tell the operators which step failed and the command that recovers it",
        "Resource": SNS_PUBLISH,
        "Parameters": parameters,
        "ResultPath": None,
        # a failing notification must not hide the step's failure
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": None, "Next": fail_state}],
        "Next": fail_state,
    }
    return {f"{place.task_state}_Notify": notify, fail_state: fail}


def _skip_condition(key: StepKey) -> dict[str, Any]:
    rules = [{"Variable": f"$.{SKIP_FLAGS}.{flag_name(key.step)}", "BooleanEquals": True}]
    if key.context is not None:
        rules.append({"Variable": f"$.{SKIP_FLAGS}.{flag_name(str(key))}", "BooleanEquals": True})
    return rules[0] if len(rules) == 1 else {"Or": rules}


def _guarded_task(
    spec: PipelineSpec,
    place: TaskPlacement,
    env_name: str,
    env: EnvironmentSpec,
    *,
    next_state: str | None,
    skipped_state: str,
) -> dict[str, dict[str, Any]]:
    """`<task>_Check` (Choice on the skip flags) -> `<task>` (Glue) -> next; in a branch (`next_state` None)
    also the states its `Catch` leads to."""
    step = spec.step(place.key.step)
    in_branch = next_state is None
    states: dict[str, dict[str, Any]] = {
        f"{place.task_state}_Check": {
            "Type": "Choice",
            "Comment": f"skip {place.key} when the input lists it",
            "Choices": [{**_skip_condition(place.key), "Next": skipped_state}],
            "Default": place.task_state,
        },
        place.task_state: _task(spec, step, place, env_name, env, next_state, in_branch=in_branch),
    }
    if in_branch:
        states.update(_branch_failure_states(spec, step, place, env_name, env))
    return states


def _join_states(
    spec: PipelineSpec, group: str, numbers: Sequence[int], env_name: str, following: str
) -> dict[str, dict[str, Any]]:
    """After a `Parallel`: did a branch end with `BRANCH_FAILED`? Then fail here (every branch has ended
    and reported), else go on. A Choice cannot call intrinsics, hence the Pass before it."""
    steps = ", ".join(map(str, numbers))
    return {
        f"{group}_Outcome": {
            "Type": "Pass",
            "Parameters": {"failed.$": f"States.ArrayContains($.{BRANCHES_FIELD}, {_quote(BRANCH_FAILED)})"},
            "ResultPath": f"$.{BRANCHES_FIELD}",
            "Next": f"{group}_Join",
        },
        f"{group}_Join": {
            "Type": "Choice",
            "Choices": [{"Variable": f"$.{BRANCHES_FIELD}.failed", "BooleanEquals": True, "Next": f"{group}_Failed"}],
            "Default": following,
        },
        f"{group}_Failed": {
            "Type": "Fail",
            "Error": "flywheel.StepFailed",
            "Cause": f"{spec.pipeline} ({env_name}): step {steps} failed in {group} (the alert names the branch); "
            f"recover with: {recover_command(env_name)}",
        },
    }


def _critical_path_seconds(spec: PipelineSpec) -> float:
    longest: dict[str, float] = {}
    for step in spec.topological_steps:
        minutes = _glue_timeout_minutes(step)
        own = (task_timeout_seconds(minutes) if minutes is not None else 0.0) * step.retry.attempts
        longest[step.id] = own + max((longest[d] for d in step.depends_on), default=0.0)
    return max(longest.values(), default=0.0)


def _check_names(states: Mapping[str, Any], where: str, problems: list[str]) -> None:
    for name, state in states.items():
        if len(name) > _STATE_NAME_MAX:
            problems.append(f"state name {name!r} in {where} is longer than {_STATE_NAME_MAX} characters")
        for branch in state.get("Branches", ()):
            _check_names(branch["States"], name, problems)


def export_asl(
    spec: PipelineSpec, env_name: str, env: EnvironmentSpec, *, timeout_seconds: int | None = None
) -> dict[str, Any]:
    """The Step Functions definition of a pipeline in an environment (pure: no AWS, no clock).

    `timeout_seconds` bounds the whole execution; by default the critical path of the step timeouts
    (with their retries) plus an hour.
    """
    problems = [f"step {s.id}: a shell `command` cannot run as a Glue job" for s in spec.steps if s.job is None]
    if problems:
        raise DefinitionError(
            f"{spec.pipeline} cannot be exported to Step Functions",
            details=tuple(problems),
            fix="give every step a `job` (module:function)",
        )
    ordered = groups(spec)
    by_group: dict[str, list[TaskPlacement]] = {}
    for place in placements(spec, env_name):
        by_group.setdefault(place.group, []).append(place)

    flags: dict[str, str] = {}
    for key in spec.keys:
        for text in (key.step, str(key)):
            name = flag_name(text)
            if flags.get(name, text) != text:
                raise DefinitionError(f"steps {flags[name]!r} and {text!r} collide in the skip input ({name})")
            flags[name] = text

    first = ordered[0][0]
    entry = {name: (f"{name}_Check" if not _is_parallel(members) else name) for name, members in ordered}
    states: dict[str, Any] = {
        "ReadSkipInput": {
            "Type": "Choice",
            "Comment": f'the input may list steps or step[context] keys to skip: {{"{SKIP_INPUT}": [...]}}',
            "Choices": [{"Variable": f"$.{SKIP_INPUT}", "IsPresent": True, "Next": "ComputeSkipFlags"}],
            "Default": "NoSkipInput",
        },
        "NoSkipInput": {"Type": "Pass", "Result": [], "ResultPath": f"$.{SKIP_INPUT}", "Next": "ComputeSkipFlags"},
        "ComputeSkipFlags": {
            "Type": "Pass",
            "Parameters": {
                f"{name}.$": f"States.ArrayContains($.{SKIP_INPUT}, {_quote(text)})" for name, text in flags.items()
            },
            "ResultPath": f"$.{SKIP_FLAGS}",
            "Next": entry[first],
        },
    }
    for index, (group, members) in enumerate(ordered):
        following = entry[ordered[index + 1][0]] if index + 1 < len(ordered) else "Done"
        places = by_group[group]
        if not _is_parallel(members):
            states.update(_guarded_task(spec, places[0], env_name, env, next_state=following, skipped_state=following))
            continue
        branches = []
        for place in places:
            skipped = f"{place.task_state}_Skipped"
            branch_states = _guarded_task(spec, place, env_name, env, next_state=None, skipped_state=skipped)
            branch_states[skipped] = {"Type": "Succeed", "Comment": f"{place.key} skipped by the input"}
            branches.append({"StartAt": f"{place.task_state}_Check", "States": branch_states})
        numbers = sorted({m.number for m in members})
        states[group] = {
            "Type": "Parallel",
            "Comment": "steps " + ", ".join(map(str, numbers)) + " in parallel"
            if len(members) > 1
            else f"step {members[0].number} once per context: {', '.join(members[0].contexts)}",
            "Branches": branches,
            "ResultPath": f"$.{BRANCHES_FIELD}",
            "Next": f"{group}_Outcome",
        }
        states.update(_join_states(spec, group, numbers, env_name, following))
    states["Done"] = {"Type": "Succeed"}

    name_problems: list[str] = []
    _check_names(states, "the definition", name_problems)
    if name_problems:
        raise DefinitionError(f"{spec.pipeline} cannot be exported to Step Functions", details=tuple(name_problems))
    limit = (
        timeout_seconds if timeout_seconds is not None else int(_critical_path_seconds(spec)) + EXECUTION_MARGIN_SECONDS
    )
    return {
        "Comment": f"{spec.pipeline} in {env_name}: generated by `flywheel sfn export`; do not edit by hand",
        "StartAt": "ReadSkipInput",
        "TimeoutSeconds": limit,
        "States": states,
    }


def to_json(definition: Mapping[str, Any]) -> str:
    """The stable text of a definition (what golden files and Terraform hold)."""
    return json.dumps(definition, indent=2, ensure_ascii=False) + "\n"
