"""The planner is pure: hand-written histories in, decisions with reasons out.

Told as the on-call engineer's questions: what will resume rerun, and why?
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel.errors import PlanRefused, UsageError
from flywheel.events import (
    Event,
    RunFinished,
    RunInterrupted,
    RunOutcome,
    RunStarted,
    StepFailed,
    StepReused,
    StepStarted,
    StepSucceeded,
)
from flywheel.planner import Action, Mode, PlanInputs, PlanRequest, Provenance, parse_selectors, plan
from flywheel.spec import PipelineSpec, StepKey
from flywheel.state import RunState, fold
from tests.test_planner_properties import ancestors as _ancestors


def db_refresh_like() -> PipelineSpec:
    steps: list[dict[str, Any]] = [
        {"id": "split-a", "number": 1, "title": "A", "job": "m:f"},
        {"id": "split-b", "number": 2, "title": "B", "job": "m:f"},
        {
            "id": "register",
            "number": 3,
            "title": "R",
            "job": "m:f",
            "depends_on": ["split-a", "split-b"],
            "contexts": {"addressable_ids": {}, "infobase_attributes": {}},
        },
        {"id": "prepare", "number": 4, "title": "P", "job": "m:f", "depends_on": ["register"]},
        {"id": "er", "number": 5, "title": "E", "job": "m:f", "depends_on": ["prepare"]},
        {"id": "monitor", "number": 6, "title": "M", "job": "m:f", "depends_on": ["er"]},
        {"id": "cleanrooms", "number": 7, "title": "C", "job": "m:f", "depends_on": ["monitor"]},
    ]
    return PipelineSpec.model_validate({"pipeline": "p", "steps": steps})


SPEC = db_refresh_like()
R3A, R3B = StepKey("register", "addressable_ids"), StepKey("register", "infobase_attributes")


def history(run_id: int, outcomes: dict[str, str], *, finished: bool = True, durations: float = 60.0) -> RunState:
    """A run where each `step[context]` ended as given: ok, fail, started (interrupted), reused:N."""
    events: list[Event] = [RunStarted(run_id=run_id, at=0.0, pipeline="p", env="local")]
    for key_text, outcome in outcomes.items():
        key = StepKey.parse(key_text)
        if outcome.startswith("reused:"):
            source = int(outcome.split(":")[1])
            events.append(
                StepReused(
                    run_id=run_id, at=1, step=key.step, context=key.context, source_run=source, duration=durations
                )
            )
            continue
        events.append(StepStarted(run_id=run_id, at=1, step=key.step, context=key.context))
        if outcome == "ok":
            events.append(StepSucceeded(run_id=run_id, at=2, step=key.step, context=key.context, duration=durations))
        elif outcome == "fail":
            events.append(
                StepFailed(run_id=run_id, at=2, step=key.step, context=key.context, error_type="SchemaMappingError")
            )
    if finished:
        ok = all(v == "ok" or v.startswith("reused") for v in outcomes.values())
        events.append(RunFinished(run_id=run_id, at=3, outcome=RunOutcome.SUCCEEDED if ok else RunOutcome.FAILED))
    else:
        events.append(RunInterrupted(run_id=run_id, at=3))
    return fold(run_id, events)


def actions(p: Any) -> dict[str, str]:
    return {str(d.key): d.action.value for d in p.decisions}


def resume(state: RunState, **kw: Any) -> Any:
    return plan(SPEC, PlanRequest(mode=Mode.RESUME, source_run=state.run_id, **kw), PlanInputs(source=state))


UP_TO_4 = {
    "split-a": "ok",
    "split-b": "ok",
    "register[addressable_ids]": "ok",
    "register[infobase_attributes]": "ok",
    "prepare": "ok",
}


def test_resume_after_step_5_failed_reuses_1_to_4_and_reruns_5_to_7() -> None:
    state = history(41, {**UP_TO_4, "er": "fail"})
    decided = resume(state)
    assert actions(decided) == {
        "split-a": "reuse",
        "split-b": "reuse",
        "register[addressable_ids]": "reuse",
        "register[infobase_attributes]": "reuse",
        "prepare": "reuse",
        "er": "run",
        "monitor": "run",
        "cleanrooms": "run",
    }
    reasons = {str(d.key): d.reason for d in decided.decisions}
    assert reasons["split-a"] == "succeeded in run 41"
    assert reasons["er"] == "failed in run 41: SchemaMappingError"
    assert reasons["monitor"] == "never started in run 41"


def test_only_the_failed_context_of_step_3_reruns_with_its_downstream() -> None:
    state = history(
        7,
        {"split-a": "ok", "split-b": "ok", "register[addressable_ids]": "ok", "register[infobase_attributes]": "fail"},
    )
    decided = resume(state)
    assert actions(decided)["register[addressable_ids]"] == "reuse"
    assert actions(decided)["register[infobase_attributes]"] == "run"
    assert decided.keys(Action.RUN) == (
        R3B,
        StepKey("prepare"),
        StepKey("er"),
        StepKey("monitor"),
        StepKey("cleanrooms"),
    )


def test_a_step_started_but_never_finished_is_interrupted_and_reruns() -> None:
    state = history(3, {"split-a": "ok", "split-b": "started"}, finished=False)
    decided = resume(state)
    reasons = {str(d.key): d.reason for d in decided.decisions}
    assert actions(decided)["split-b"] == "run"
    assert reasons["split-b"] == "interrupted in run 3"
    assert actions(decided)["split-a"] == "reuse"


def test_reuse_points_at_the_run_that_really_produced_the_outputs() -> None:
    state = history(9, {"split-a": "reused:4", "split-b": "reused:4", "register[addressable_ids]": "fail"})
    decided = resume(state)
    split_a = decided.by_key[StepKey("split-a")]
    assert split_a.source is not None and split_a.source.produced_by == 4
    assert split_a.reason == "succeeded in run 4 (reused by run 9)"


def test_time_saved_counts_parallel_steps_once_on_the_wall_clock() -> None:
    state = history(1, {**UP_TO_4, "er": "fail"}, durations=3600.0)
    saved = resume(state).time_saved(SPEC)
    # steps 1 and 2 in parallel (1 h), then a context of step 3 (1 h), then step 4 (1 h)
    assert saved.wall_seconds == 3 * 3600.0
    assert saved.compute_seconds == 5 * 3600.0


def test_outputs_that_no_longer_verify_rerun_with_their_downstream() -> None:
    state = history(5, {**UP_TO_4, "er": "fail"})
    inputs = PlanInputs(source=state, invalid={StepKey("split-b"): "split_part/infobase_attributes is gone"})
    decided = plan(SPEC, PlanRequest(mode=Mode.RESUME, source_run=5), inputs)
    reasons = {str(d.key): d.reason for d in decided.decisions}
    assert actions(decided)["split-a"] == "reuse"
    assert actions(decided)["split-b"] == "run"
    assert "no longer verify" in reasons["split-b"]
    assert actions(decided)["register[addressable_ids]"] == "run"
    assert reasons["register[addressable_ids]"] == "upstream split-b reruns"


def test_stale_steps_rerun_unless_reuse_stale() -> None:
    state = history(5, {**UP_TO_4, "er": "fail"})
    inputs = PlanInputs(source=state, stale={StepKey("prepare"): "job code changed"})
    assert actions(plan(SPEC, PlanRequest(mode=Mode.RESUME, source_run=5), inputs))["prepare"] == "run"
    kept = plan(SPEC, PlanRequest(mode=Mode.RESUME, source_run=5, reuse_stale=True), inputs)
    assert actions(kept)["prepare"] == "reuse"
    assert kept.by_key[StepKey("prepare")].stale_kept


# -- --skip-steps: never silently misparsed -----------------------------------------------------


@pytest.mark.parametrize("typed", ["1,2,3", "1-3", "1, 2, 3", " 1 ,2,  3 ", "split-a,split-b,register", "1-2,3"])
def test_skip_steps_accepts_every_way_operators_write_them(typed: str) -> None:
    keys = parse_selectors(SPEC, [typed], flag="--skip-steps")
    assert keys == (StepKey("split-a"), StepKey("split-b"), R3A, R3B)


def test_skip_steps_accepts_a_context() -> None:
    assert parse_selectors(SPEC, ["3[infobase_attributes]"], flag="--only") == (R3B,)
    assert parse_selectors(SPEC, ["register[addressable_ids]"], flag="--only") == (R3A,)


@pytest.mark.parametrize(
    ("typed", "complaint"),
    [
        ("1,2,9", "there is no step 9"),
        ("1-9", "range 1-9 is not within steps 1-7"),
        ("registr", "unknown step 'registr'"),
        ("3[nope]", "has no context 'nope'"),
        ("1;2", "unknown step '1;2'"),
    ],
)
def test_a_bad_selector_is_an_error_listing_the_valid_steps(typed: str, complaint: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_selectors(SPEC, [typed], flag="--skip-steps")
    assert complaint in caught.value.message + " ".join(caught.value.details)
    assert caught.value.fix is not None and "1 (split-a)" in caught.value.fix


def test_skipped_steps_reuse_the_latest_success_in_this_pipeline_and_env() -> None:
    latest = {StepKey("split-a"): Provenance(produced_by=12, recorded_in=12, duration=3600)}
    decided = plan(SPEC, PlanRequest(skip=("1",)), PlanInputs(latest=latest))
    first = decided.by_key[StepKey("split-a")]
    assert first.action is Action.REUSE and first.source is not None and first.source.produced_by == 12
    assert first.reason == "skipped by --skip-steps; reusing run 12"
    assert actions(decided)["split-b"] == "run"


def test_skipping_a_step_that_never_succeeded_is_refused_unless_forced() -> None:
    with pytest.raises(PlanRefused) as caught:
        plan(SPEC, PlanRequest(skip=("1",)), PlanInputs())
    assert "no successful run" in caught.value.message
    forced = plan(SPEC, PlanRequest(skip=("1",), force=True), PlanInputs())
    assert forced.by_key[StepKey("split-a")].action is Action.SKIP


def test_skipping_a_step_whose_upstream_reruns_is_refused() -> None:
    latest = {k: Provenance(produced_by=1, recorded_in=1) for k in SPEC.keys}
    with pytest.raises(PlanRefused) as caught:
        plan(SPEC, PlanRequest(skip=("4",)), PlanInputs(latest=latest))
    assert "upstream" in caught.value.message


def test_from_step_reruns_it_and_everything_after() -> None:
    state = history(2, {**UP_TO_4, "er": "ok", "monitor": "ok", "cleanrooms": "ok"})
    decided = plan(SPEC, PlanRequest(from_step="5", source_run=2), PlanInputs(source=state))
    assert decided.keys(Action.RUN) == (StepKey("er"), StepKey("monitor"), StepKey("cleanrooms"))


def test_only_one_context_leaves_downstream_not_executed_instead_of_reusing_stale_outputs() -> None:
    state = history(2, {**UP_TO_4, "er": "ok", "monitor": "ok", "cleanrooms": "ok"})
    decided = plan(SPEC, PlanRequest(only=("register[addressable_ids]",), source_run=2), PlanInputs(source=state))
    assert decided.keys(Action.RUN) == (R3A,)
    assert actions(decided)["register[infobase_attributes]"] == "reuse"
    for step in ("prepare", "er", "monitor", "cleanrooms"):  # transitively: nothing built on the old 3 is reused
        assert actions(decided)[step] == "skip", step
        assert "stale" in decided.by_key[StepKey(step)].reason
    assert not decided.complete


def test_a_step_whose_dependency_neither_runs_nor_is_reusable_is_refused() -> None:
    state = history(2, {"split-a": "ok", "split-b": "fail"})
    with pytest.raises(PlanRefused) as caught:
        plan(SPEC, PlanRequest(only=("prepare",), source_run=2), PlanInputs(source=state))
    assert "cannot run prepare" in caught.value.message + " ".join(caught.value.details)


def test_resume_without_a_source_run_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        plan(SPEC, PlanRequest(mode=Mode.RESUME), PlanInputs())


# -- properties over random DAGs and histories ---------------------------------------------------

OUTCOMES = st.sampled_from(["ok", "fail", "started", "never"])


@st.composite
def dag_and_history(draw: st.DrawFn) -> tuple[PipelineSpec, RunState, set[StepKey]]:
    n = draw(st.integers(min_value=1, max_value=9))
    steps = []
    for i in range(n):
        deps = sorted(draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=3))) if i else []
        contexts = draw(st.sampled_from([[], [], ["x", "y"], ["x", "y", "z"]]))
        body: dict[str, Any] = {
            "id": f"s{i}",
            "number": i + 1,
            "title": f"S{i}",
            "job": "m:f",
            "depends_on": [f"s{d}" for d in deps],
        }
        if contexts:
            body["contexts"] = {c: {} for c in contexts}
        steps.append(body)
    spec = PipelineSpec.model_validate({"pipeline": "p", "steps": steps})
    outcomes = {}
    for key in spec.keys:
        outcome = draw(OUTCOMES)
        if outcome != "never":
            outcomes[str(key)] = outcome
    invalid = {k for k in spec.keys if draw(st.integers(0, 9)) == 0}
    events: list[Event] = [RunStarted(run_id=1, at=0, pipeline="p", env="local")]
    for key_text, outcome in outcomes.items():
        key = StepKey.parse(key_text)
        events.append(StepStarted(run_id=1, at=1, step=key.step, context=key.context))
        if outcome == "ok":
            events.append(StepSucceeded(run_id=1, at=2, step=key.step, context=key.context))
        elif outcome == "fail":
            events.append(StepFailed(run_id=1, at=2, step=key.step, context=key.context))
    events.append(RunFinished(run_id=1, at=3, outcome=RunOutcome.FAILED))
    return spec, fold(1, events), invalid


@settings(max_examples=300, deadline=None)
@given(dag_and_history())
def test_resume_never_reruns_intact_work_and_never_reuses_downstream_of_a_rerun(
    case: tuple[PipelineSpec, RunState, set[StepKey]],
) -> None:
    spec, state, invalid = case
    decided = plan(
        spec,
        PlanRequest(mode=Mode.RESUME, source_run=1),
        PlanInputs(source=state, invalid={k: "changed" for k in invalid}),
    )
    running = set(decided.keys(Action.RUN))
    for key in spec.keys:
        intact = state.step(key).status.done and key not in invalid
        upstream_intact = all(state.step(u).status.done and u not in invalid for u in _ancestors(spec, key))
        action = decided.by_key[key].action
        if intact and upstream_intact:
            assert action is Action.REUSE, f"{key} is intact with an intact upstream but was planned {action}"
        if action is Action.REUSE:
            assert not (_ancestors(spec, key) & running), f"{key} reused although an upstream step reruns"
        else:
            assert action is Action.RUN, f"resume left {key} {action}"


def test_skipping_a_step_whose_outputs_changed_is_refused_with_the_reason_unless_forced() -> None:
    latest = {k: Provenance(produced_by=3, recorded_in=3) for k in SPEC.keys}
    invalid = {StepKey("split-a"): "split_part/addressable_ids is gone"}
    with pytest.raises(PlanRefused) as caught:
        plan(SPEC, PlanRequest(skip=("1", "2")), PlanInputs(latest=latest, invalid=invalid))
    assert "no longer verify: split_part/addressable_ids is gone" in caught.value.message
    forced = plan(SPEC, PlanRequest(skip=("1", "2"), force=True), PlanInputs(latest=latest, invalid=invalid))
    assert forced.by_key[StepKey("split-a")].action is Action.SKIP
    assert forced.by_key[StepKey("split-b")].action is Action.REUSE
