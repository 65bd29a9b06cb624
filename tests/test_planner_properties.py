"""The recovery promise as properties of the pure planner, over random graphs, histories and requests.

Whatever the operator asks (`resume`, `--only`, `--from-step`, `--skip-steps`), on any graph and after
any history, these hold:

(a) a key is reused only if it finished in the lineage (succeeded, reused or marked), its outputs
    still verify, it is not stale, and every key upstream of it is itself reused;
(b) no key downstream of a rerun, a stale skip or a key left not executed is reused, however far down;
(c) a plan is complete (the run can end `succeeded`) only when every declared key runs or is reused;
(d) resuming a failed run twice in a row with nothing changed plans the same work, and a resume of a
    run that then finished everything plans nothing.
"""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from flywheel.errors import PlanRefused, UsageError
from flywheel.events import (
    Event,
    RunFinished,
    RunOutcome,
    RunStarted,
    StepFailed,
    StepMarked,
    StepReused,
    StepStarted,
    StepSucceeded,
)
from flywheel.planner import Action, Mode, Plan, PlanInputs, PlanRequest, plan
from flywheel.spec import PipelineSpec, StepKey
from flywheel.state import RunState, fold

OUTCOMES = st.sampled_from(["ok", "ok", "ok", "fail", "started", "never", "marked", "reused"])


@st.composite
def graphs(draw: st.DrawFn) -> PipelineSpec:
    n = draw(st.integers(min_value=1, max_value=8))
    steps = []
    for i in range(n):
        deps = sorted(draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=3))) if i else []
        body: dict[str, Any] = {
            "id": f"s{i}",
            "number": i + 1,
            "title": f"S{i}",
            "job": "m:f",
            "depends_on": [f"s{d}" for d in deps],
        }
        contexts = draw(st.sampled_from([[], [], [], ["x", "y"]]))
        if contexts:
            body["contexts"] = {c: {} for c in contexts}
        steps.append(body)
    return PipelineSpec.model_validate({"pipeline": "p", "steps": steps})


def run_history(run_id: int, outcomes: dict[StepKey, str]) -> RunState:
    """A finished (failed) run in which each key ended as drawn; `reused` came from run 0."""
    events: list[Event] = [RunStarted(run_id=run_id, at=0, pipeline="p", env="local")]
    for key, outcome in outcomes.items():
        step, context = key.step, key.context
        if outcome == "reused":
            events.append(StepReused(run_id=run_id, at=1, step=step, context=context, source_run=run_id - 1))
        elif outcome == "marked":
            events.append(StepStarted(run_id=run_id, at=1, step=step, context=context))
            events.append(StepFailed(run_id=run_id, at=2, step=step, context=context))
            events.append(StepMarked(run_id=run_id, at=3, step=step, context=context, note="fixed by hand"))
        elif outcome != "never":
            events.append(StepStarted(run_id=run_id, at=1, step=step, context=context))
            if outcome == "ok":
                events.append(StepSucceeded(run_id=run_id, at=2, step=step, context=context, duration=5.0))
            elif outcome == "fail":
                events.append(StepFailed(run_id=run_id, at=2, step=step, context=context, error_type="E"))
    events.append(RunFinished(run_id=run_id, at=9, outcome=RunOutcome.FAILED))
    return fold(run_id, events)


@st.composite
def situations(draw: st.DrawFn) -> tuple[PipelineSpec, RunState, PlanInputs, PlanRequest]:
    spec = draw(graphs())
    source = run_history(2, {key: draw(OUTCOMES) for key in spec.keys})
    invalid = {k: "changed" for k in spec.keys if draw(st.integers(0, 7)) == 0}
    stale = {k: "code changed" for k in spec.keys if draw(st.integers(0, 7)) == 0}
    numbers = [str(s.number) for s in spec.steps]
    kind = draw(st.sampled_from(["resume", "only", "from", "skip", "resume-skip"]))
    pick = st.lists(st.sampled_from(numbers), min_size=1, max_size=2, unique=True)
    request = PlanRequest(mode=Mode.RESUME if kind.startswith("resume") else Mode.RUN, source_run=2)
    if kind == "only":
        request = PlanRequest(source_run=2, only=(",".join(draw(pick)),))
    elif kind == "from":
        request = PlanRequest(source_run=2, from_step=draw(st.sampled_from(numbers)))
    elif kind in ("skip", "resume-skip"):
        request = PlanRequest(mode=request.mode, source_run=2, skip=(",".join(draw(pick)),))
    return spec, source, PlanInputs(source=source, invalid=invalid, stale=stale), request


def ancestors(spec: PipelineSpec, key: StepKey) -> set[StepKey]:
    out: set[StepKey] = set()
    frontier = list(spec.upstream_keys(key))
    while frontier:
        up = frontier.pop()
        if up not in out:
            out.add(up)
            frontier.extend(spec.upstream_keys(up))
    return out


def planned(spec: PipelineSpec, request: PlanRequest, inputs: PlanInputs) -> Plan:
    """The plan, or no example: a refused request is a different promise (tested by hand elsewhere)."""
    try:
        return plan(spec, request, inputs)
    except (PlanRefused, UsageError):
        assume(False)
        raise AssertionError("unreachable") from None


@settings(max_examples=80, deadline=None)
@given(situations())
def test_a_key_is_reused_only_when_it_and_everything_upstream_of_it_are_intact(
    case: tuple[PipelineSpec, RunState, PlanInputs, PlanRequest],
) -> None:
    spec, source, inputs, request = case
    decided = planned(spec, request, inputs)
    skipped_by_request = set(decided.keys(Action.REUSE)) & {
        d.key for d in decided.decisions if d.reason.startswith("skipped by --skip-steps")
    }
    for decision in decided.decisions:
        if decision.action is not Action.REUSE or decision.key in skipped_by_request:
            continue
        key = decision.key
        assert source.step(key).status.done, f"{key} reused though it did not finish in run 2"
        assert key not in inputs.invalid, f"{key} reused though its outputs no longer verify"
        assert key not in inputs.stale, f"{key} reused though it is stale"
        for up in spec.upstream_keys(key):
            assert decided.by_key[up].action is Action.REUSE, f"{key} reused over {up}, which is {decided.by_key[up]}"


@settings(max_examples=80, deadline=None)
@given(situations())
def test_nothing_downstream_of_a_rerun_or_of_a_key_left_out_is_reused(
    case: tuple[PipelineSpec, RunState, PlanInputs, PlanRequest],
) -> None:
    spec, _, inputs, request = case
    decided = planned(spec, request, inputs)
    changed = {d.key for d in decided.decisions if d.action is not Action.REUSE}
    for decision in decided.decisions:
        if decision.action is Action.REUSE:
            assert not (ancestors(spec, decision.key) & changed), (
                f"{decision.key} reused downstream of {sorted(map(str, ancestors(spec, decision.key) & changed))}"
            )


@settings(max_examples=60, deadline=None)
@given(situations())
def test_a_plan_is_complete_only_when_every_declared_key_runs_or_is_reused(
    case: tuple[PipelineSpec, RunState, PlanInputs, PlanRequest],
) -> None:
    spec, _, inputs, request = case
    decided = planned(spec, request, inputs)
    left_out = [d.key for d in decided.decisions if d.action is Action.SKIP]
    assert decided.complete == (not left_out)
    assert {d.key for d in decided.decisions} == set(spec.keys)
    if request.mode is Mode.RESUME and not request.skip:
        assert decided.complete, f"a resume left {left_out} not executed"


def carried_out(spec: PipelineSpec, decided: Plan, run_id: int, failing: set[StepKey]) -> RunState:
    """The run that executes `decided`: reused keys are recorded, keys that run succeed unless they
    are in `failing` or downstream of a failure (then they never start), as the runner does."""
    outcomes: dict[StepKey, str] = {}
    events: list[Event] = [RunStarted(run_id=run_id, at=0, pipeline="p", env="local", parent_run=run_id - 1)]
    for decision in decided.decisions:
        key = decision.key
        if decision.action is Action.REUSE:
            events.append(StepReused(run_id=run_id, at=1, step=key.step, context=key.context, source_run=1))
            outcomes[key] = "done"
        elif decision.action is Action.RUN:
            if any(outcomes.get(up) in ("fail", "blocked") for up in spec.upstream_keys(key)):
                outcomes[key] = "blocked"
                continue
            events.append(StepStarted(run_id=run_id, at=1, step=key.step, context=key.context))
            if key in failing:
                events.append(StepFailed(run_id=run_id, at=2, step=key.step, context=key.context, error_type="E"))
                outcomes[key] = "fail"
            else:
                events.append(StepSucceeded(run_id=run_id, at=2, step=key.step, context=key.context, duration=1.0))
                outcomes[key] = "done"
    failed = any(v in ("fail", "blocked") for v in outcomes.values())
    events.append(RunFinished(run_id=run_id, at=9, outcome=RunOutcome.FAILED if failed else RunOutcome.SUCCEEDED))
    return fold(run_id, events)


@settings(max_examples=60, deadline=None)
@given(graphs(), st.data())
def test_resuming_twice_with_nothing_changed_plans_the_same_work_and_after_success_plans_nothing(
    spec: PipelineSpec, data: st.DataObject
) -> None:
    source = run_history(2, {key: data.draw(OUTCOMES) for key in spec.keys})
    first = planned(spec, PlanRequest(mode=Mode.RESUME, source_run=2), PlanInputs(source=source))
    to_run = set(first.keys(Action.RUN))
    assume(to_run)

    # nothing changed, so the same thing happens: the first keys of the rerun fail again and what is
    # downstream of them never starts; the resume of that resume plans exactly the same keys
    failing = {k for k in to_run if not (ancestors(spec, k) & to_run)}
    again = carried_out(spec, first, 3, failing)
    second = planned(spec, PlanRequest(mode=Mode.RESUME, source_run=3), PlanInputs(source=again))
    assert set(second.keys(Action.RUN)) == to_run

    # the cause fixed: everything finishes, and a further resume has nothing left to run
    recovered = carried_out(spec, second, 4, failing=set())
    assert recovered.status.value == "succeeded"
    third = planned(spec, PlanRequest(mode=Mode.RESUME, source_run=4), PlanInputs(source=recovered))
    assert third.keys(Action.RUN) == () and third.complete
