"""Decide, for every `step[context]`, whether a run executes it, reuses earlier outputs, or skips it.

`plan()` is pure: it reads a spec, a request and facts gathered beforehand (the source run's folded
state, the latest success of each step, which outputs no longer verify, which steps are stale) and
returns decisions with reasons a person can read. No SQLite, no clock, no subprocess here, so every
rule is tested with hand-written and generated histories.

The rules, in one place:
- a fresh `run` executes everything, except `--skip-steps`, which reuse the latest success of that
  step in the same pipeline and environment (refused when there is none, unless `--force`);
- `resume` reuses what the source run finished (succeeded, reused or marked, outputs intact, not
  stale) and reruns the rest plus everything downstream of a rerun;
- `--from-step S` reruns S and its downstream, reusing the source run for the rest;
- `--only S` reruns exactly S; its downstream is left not executed, never reused (its inputs change);
- a key is reused only when every key upstream of it is itself reused (or, with `--force`, skipped on
  the operator's word): nothing downstream of a rerun, a stale skip or a key left not executed is
  reused, however far down (`_tainted_by`);
- a key cannot be both skipped and selected: `--skip-steps` that overlaps `--only` or `--from-step`
  is a usage error naming both flags, and a `run` whose selection executes nothing is refused;
- a step that runs needs each dependency to run or be reused, or the plan is refused.

A run whose plan leaves keys not executed ends `partial`, never `succeeded` (`Plan.complete`): a
resume of it runs what was left.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from flywheel.errors import PlanRefused, UsageError
from flywheel.spec import PipelineSpec, StepKey
from flywheel.state import RunState, StepStatus


class Action(StrEnum):
    RUN = "run"
    REUSE = "reuse"
    SKIP = "skip"


class Mode(StrEnum):
    RUN = "run"
    RESUME = "resume"


@dataclass(frozen=True)
class PlanRequest:
    """What the operator asked for. The same model serves run, resume, sfn recover and the dashboard."""

    mode: Mode = Mode.RUN
    source_run: int | None = None
    skip: tuple[str, ...] = ()
    from_step: str | None = None
    only: tuple[str, ...] = ()
    force: bool = False
    reuse_stale: bool = False
    note: str | None = None
    again: bool = False  # resume a run that a later run already recovered

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["mode"] = self.mode.value
        return body


@dataclass(frozen=True)
class Provenance:
    """A success that can be reused: which run really produced it, and what it cost then."""

    produced_by: int
    recorded_in: int
    duration: float = 0.0
    outputs: tuple[Mapping[str, Any], ...] = ()
    fingerprint: str | None = None
    dpu_hours: float | None = None


@dataclass(frozen=True)
class PlanInputs:
    """Facts the planner needs, gathered by the caller (journal reads, output verification)."""

    source: RunState | None = None
    latest: Mapping[StepKey, Provenance] = field(default_factory=dict)
    invalid: Mapping[StepKey, str] = field(default_factory=dict)
    stale: Mapping[StepKey, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # for the operator to read (and confirm) before the plan runs
    # failed keys that would rerun exactly as they failed (same code, inputs, settings): a resume
    # is then likely to fail the same way, so interfaces make it the second choice, not the first
    unchanged_failures: tuple[StepKey, ...] = ()


@dataclass(frozen=True)
class StepDecision:
    key: StepKey
    action: Action
    reason: str
    source: Provenance | None = None
    stale_kept: bool = False


@dataclass(frozen=True)
class TimeSaved:
    """Wall-clock saved is the critical path through the reused steps; compute saved is their sum."""

    wall_seconds: float
    compute_seconds: float
    dpu_hours: float | None = None


@dataclass(frozen=True)
class Plan:
    request: PlanRequest
    decisions: tuple[StepDecision, ...]

    @property
    def by_key(self) -> Mapping[StepKey, StepDecision]:
        return {d.key: d for d in self.decisions}

    def keys(self, action: Action) -> tuple[StepKey, ...]:
        return tuple(d.key for d in self.decisions if d.action is action)

    @property
    def complete(self) -> bool:
        """Every declared key either runs or is reused: if all that runs succeeds, the run is whole.
        A plan that leaves keys not executed (`--only`, a forced skip) makes a `partial` run."""
        return all(d.action is not Action.SKIP for d in self.decisions)

    def time_saved(self, spec: PipelineSpec) -> TimeSaved:
        reused = {d.key: d.source.duration for d in self.decisions if d.action is Action.REUSE and d.source}
        longest: dict[StepKey, float] = {}
        for key in spec.keys:  # topological order
            if key in reused:
                before = [longest[u] for u in spec.upstream_keys(key) if u in longest]
                longest[key] = reused[key] + max(before, default=0.0)
        dpus = [d.source.dpu_hours for d in self.decisions if d.action is Action.REUSE and d.source]
        known = [x for x in dpus if x is not None]
        return TimeSaved(
            wall_seconds=max(longest.values(), default=0.0),
            compute_seconds=sum(reused.values()),
            dpu_hours=sum(known) if known else None,
        )


# ---------------------------------------------------------------------------------------------
# selectors: `1,2,3`, `1-3`, `"1, 2, 3"`, step ids, `step[context]`, `3[addressable_ids]`

_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def _valid_steps(spec: PipelineSpec) -> str:
    return ", ".join(f"{s.number} ({s.id})" for s in sorted(spec.steps, key=lambda s: s.number))


def parse_selectors(spec: PipelineSpec, texts: Iterable[str], *, flag: str) -> tuple[StepKey, ...]:
    """Turn what an operator typed into step keys, or refuse with every problem named.

    Never guesses: an unknown number, id or context is an error listing the valid ones.
    """
    keys: list[StepKey] = []
    problems: list[str] = []
    tokens = [t.strip() for text in texts for t in re.split(r"[,\s]+(?![^\[]*\])", text) if t.strip()]
    for token in tokens:
        context: str | None = None
        base = token
        if token.endswith("]") and "[" in token:
            base, _, context = token[:-1].partition("[")
            base, context = base.strip(), context.strip()
        steps: list[str] = []
        if base.isdigit():
            number = int(base)
            if number in spec.by_number:
                steps = [spec.by_number[number].id]
            else:
                problems.append(f"{flag}: there is no step {number}")
        elif match := _RANGE.match(base):
            low, high = int(match.group(1)), int(match.group(2))
            missing = [n for n in range(low, high + 1) if n not in spec.by_number]
            if low > high or missing:
                problems.append(f"{flag}: range {base} is not within steps 1-{len(spec.steps)}")
            else:
                steps = [spec.by_number[n].id for n in range(low, high + 1)]
        elif base in spec.by_id:
            steps = [base]
        else:
            problems.append(f"{flag}: unknown step {base!r}")
        for step_id in steps:
            step = spec.by_id[step_id]
            if context is None:
                keys.extend(step.keys)
            elif context in step.contexts:
                keys.append(StepKey(step_id, context))
            else:
                valid = ", ".join(step.contexts) or "(this step has no contexts)"
                problems.append(f"{flag}: step {step_id!r} has no context {context!r}; its contexts: {valid}")
    if problems:
        raise UsageError(
            problems[0] if len(problems) == 1 else f"{len(problems)} problems in {flag}",
            details=tuple(problems) if len(problems) > 1 else (),
            fix=f"valid steps: {_valid_steps(spec)}; write e.g. {flag}=1,2,3 or {flag}=1-3",
        )
    if not keys and tokens == []:
        raise UsageError(f"{flag} is empty", fix=f"name steps, e.g. {flag}=1,2,3")
    return tuple(dict.fromkeys(keys))


# ---------------------------------------------------------------------------------------------
# planning


def _from_source(state: RunState | None, key: StepKey) -> Provenance | None:
    if state is None:
        return None
    step = state.step(key)
    if not step.status.done:
        return None
    return Provenance(
        produced_by=step.produced_by or state.run_id,
        recorded_in=state.run_id,
        duration=step.duration or 0.0,
        outputs=step.outputs,
        fingerprint=step.fingerprint,
        dpu_hours=step.dpu_hours,
    )


def _why_not_done(state: RunState, key: StepKey) -> str:
    step = state.step(key)
    run = f"run {state.run_id}"
    match step.status:
        case StepStatus.FAILED:
            return f"failed in {run}" + (f": {step.error_type}" if step.error_type else "")
        case StepStatus.INTERRUPTED | StepStatus.RUNNING:
            return f"interrupted in {run}"
        case StepStatus.SKIPPED:
            return f"not executed in {run}"
        case _:
            return f"never started in {run}"


def _descendants(spec: PipelineSpec, roots: Iterable[StepKey]) -> set[StepKey]:
    out: set[StepKey] = set()
    frontier = list(dict.fromkeys(k.step for k in roots))
    seen_steps: set[str] = set()
    while frontier:
        step_id = frontier.pop()
        for child in spec.downstream_steps.get(step_id, ()):
            if child not in seen_steps:
                seen_steps.add(child)
                out.update(spec.by_id[child].keys)
                frontier.append(child)
    return out


@dataclass(frozen=True)
class Selection:
    """The keys each selection flag names, parsed once, with contradictions refused."""

    skip: frozenset[StepKey]
    only: frozenset[StepKey]
    start: frozenset[StepKey]


def select(spec: PipelineSpec, request: PlanRequest) -> Selection:
    """Parse `--skip-steps`, `--only` and `--from-step`; a key both skipped and selected is a usage error."""
    skip = frozenset(parse_selectors(spec, request.skip, flag="--skip-steps")) if request.skip else frozenset()
    only = frozenset(parse_selectors(spec, request.only, flag="--only")) if request.only else frozenset()
    start = (
        frozenset(parse_selectors(spec, [request.from_step], flag="--from-step")) if request.from_step else frozenset()
    )
    if only and start:
        raise UsageError("--only and --from-step cannot be combined", fix="use one of them")
    for flag, chosen in (("--only", only), ("--from-step", start)):
        both = sorted(skip & chosen, key=spec.keys.index)
        if both:
            named = ", ".join(str(k) for k in both)
            raise UsageError(
                f"--skip-steps and {flag} both name {named}: a step cannot be skipped and run",
                fix=f"drop {named} from one of the two flags",
            )
    return Selection(skip=skip, only=only, start=start)


def check_request(spec: PipelineSpec, request: PlanRequest) -> None:
    """Reject a malformed or contradictory selection before anything is looked up or run."""
    select(spec, request)


def _tainted_by(
    spec: PipelineSpec, key: StepKey, decisions: Mapping[StepKey, StepDecision], vouched: Iterable[StepKey]
) -> StepKey | None:
    """The first upstream key whose outputs are not the ones `key` was built on: it runs in this plan,
    or it is left not executed. `vouched` keys (skipped with `--force`) stand on the operator's word."""
    trusted = set(vouched)
    for up in spec.upstream_keys(key):
        action = decisions[up].action
        if action is Action.RUN or (action is Action.SKIP and up not in trusted):
            return up
    return None


def _reusable(
    spec: PipelineSpec, request: PlanRequest, inputs: PlanInputs, reasons: dict[StepKey, str]
) -> dict[StepKey, Provenance]:
    """What the source run finished and may be reused: outputs that verify, not stale (or kept)."""
    reusable: dict[StepKey, Provenance] = {}
    for key in spec.keys:
        found = _from_source(inputs.source, key)
        if found is not None and key in inputs.invalid:
            reasons[key] = f"outputs from run {found.produced_by} no longer verify: {inputs.invalid[key]}"
        elif found is not None and key in inputs.stale and not request.reuse_stale:
            reasons[key] = f"stale since run {found.produced_by}: {inputs.stale[key]}"
        elif found is not None:
            reusable[key] = found
    return reusable


def _selected(
    spec: PipelineSpec,
    request: PlanRequest,
    selection: Selection,
    source: RunState | None,
    reusable: Mapping[StepKey, Provenance],
    reasons: dict[StepKey, str],
) -> set[StepKey]:
    """The keys the request asks to run, before what is downstream of them is added."""
    selected: set[StepKey]
    if selection.only:
        selected = set(selection.only)
        reasons.update({key: "selected by --only" for key in selected})
    elif selection.start:
        selected = set(selection.start) | _descendants(spec, selection.start)
        for key in selected:
            reasons[key] = "selected by --from-step" if key in selection.start else f"downstream of {request.from_step}"
    elif request.mode is Mode.RESUME:
        assert source is not None
        selected = {k for k in spec.keys if k not in reusable}
        for key in selected:
            reasons.setdefault(key, _why_not_done(source, key))
    else:
        selected = set(spec.keys)
        reasons.update({key: "fresh run" for key in selected})
    return selected - selection.skip


@dataclass
class _Decisions:
    """Decisions made so far, in topological order, and the problems that refuse the plan."""

    spec: PipelineSpec
    request: PlanRequest
    inputs: PlanInputs
    vouched: frozenset[StepKey]
    by_key: dict[StepKey, StepDecision] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    refused: set[StepKey] = field(default_factory=set)

    def refuse(self, key: StepKey, reason: str, problem: str) -> None:
        self.refused.add(key)
        self.by_key[key] = StepDecision(key, Action.SKIP, reason)
        self.problems.append(problem)

    def tainted_by(self, key: StepKey) -> StepKey | None:
        return _tainted_by(self.spec, key, self.by_key, self.vouched)

    def skipped(self, key: StepKey, found: Provenance | None) -> None:
        """`--skip-steps`: reuse the latest success of the key, when that is safe (or forced)."""
        request, inputs = self.request, self.inputs
        if found is not None and key in inputs.invalid and request.force:
            found = None  # skipped anyway, recorded without a source
        elif found is not None and key in inputs.invalid:
            self.refuse(
                key,
                "refused: outputs no longer verify",
                f"cannot skip {key}: the outputs of its last success (run {found.produced_by}) no longer "
                f"verify: {inputs.invalid[key]} (run it, or add --force to skip it anyway)",
            )
            return
        tainted = self.tainted_by(key)
        if tainted is not None and tainted not in self.refused and not request.force:
            verb = "runs" if self.by_key[tainted].action is Action.RUN else "is not executed"
            self.problems.append(
                f"cannot skip {key}: its upstream {tainted} {verb} in this plan, so the "
                f"outputs it would reuse are out of date (skip {tainted} too, or --force)"
            )
        if found is not None:
            reason = f"skipped by --skip-steps; reusing run {found.produced_by}"
            self.by_key[key] = StepDecision(key, Action.REUSE, reason, found)
        elif request.force:
            self.by_key[key] = StepDecision(key, Action.SKIP, "skipped by --skip-steps with --force (no source)")
        else:
            self.refuse(
                key,
                "refused: nothing to reuse",
                f"cannot skip {key}: no successful run of it in this pipeline and environment to reuse "
                "(run it, or add --force to skip it without a source)",
            )

    def left_or_reused(self, key: StepKey, found: Provenance | None, reason: str) -> None:
        """A key not asked to run: reused when it and everything upstream of it are intact."""
        tainted = self.tainted_by(key)
        if tainted is not None:  # --only: downstream of a rerun (or of a key left out) must not reuse old outputs
            why = "reruns" if self.by_key[tainted].action is Action.RUN else "is not executed"
            text = f"not selected; upstream {tainted} {why}, so its old outputs are stale"
            self.by_key[key] = StepDecision(key, Action.SKIP, text)
        elif found is not None:
            text = f"succeeded in run {found.produced_by}"
            if found.recorded_in != found.produced_by:
                text += f" (reused by run {found.recorded_in})"
            stale = key in self.inputs.stale
            if stale:
                text += f"; stale ({self.inputs.stale[key]}) but kept by --reuse-stale"
            self.by_key[key] = StepDecision(key, Action.REUSE, text, found, stale_kept=stale)
        else:
            self.by_key[key] = StepDecision(key, Action.SKIP, reason)

    def check_dependencies(self) -> None:
        """A key that runs needs every dependency run or reused."""
        for key in self.spec.keys:
            if self.by_key[key].action is not Action.RUN:
                continue
            for up in self.spec.upstream_keys(key):
                dep = self.by_key[up]
                if dep.action is Action.SKIP and up not in self.refused and not self.request.force:
                    self.problems.append(
                        f"cannot run {key}: its dependency {up} neither runs nor has a success to reuse ({dep.reason})"
                    )


def plan(spec: PipelineSpec, request: PlanRequest, inputs: PlanInputs) -> Plan:
    """Decide every key's action; raise `PlanRefused` (listing every problem) for an unsafe request."""
    source = inputs.source
    if request.mode is Mode.RESUME and source is None:
        raise UsageError("resume needs a run to resume", fix="name a run id, or start with `flywheel run`")
    selection = select(spec, request)
    reasons: dict[StepKey, str] = {}
    reusable = _reusable(spec, request, inputs, reasons)
    selected = _selected(spec, request, selection, source, reusable, reasons)

    # in topological order: what is downstream of a rerun reruns too (only --only leaves it not executed)
    made = _Decisions(spec, request, inputs, vouched=selection.skip if request.force else frozenset())
    for key in spec.keys:
        upstream_running = [u for u in spec.upstream_keys(key) if made.by_key[u].action is Action.RUN]
        if key in selected or (upstream_running and not selection.only and key not in selection.skip):
            reason = reasons[key] if key in selected else f"upstream {upstream_running[0]} reruns"
            made.by_key[key] = StepDecision(key, Action.RUN, reason)
        elif key in selection.skip:
            made.skipped(key, (reusable.get(key) if source is not None else None) or inputs.latest.get(key))
        else:
            made.left_or_reused(key, reusable.get(key), reasons.get(key, "not selected"))
    made.check_dependencies()

    if request.mode is Mode.RUN and not made.problems and not any(d.action is Action.RUN for d in made.by_key.values()):
        raise UsageError(
            "this selection runs nothing: every step would be skipped or reused",
            fix="name the steps to run with --only or --from-step, or drop --skip-steps",
        )
    if made.problems:
        unique = tuple(dict.fromkeys(made.problems))
        raise PlanRefused(
            unique[0] if len(unique) == 1 else f"the request cannot be planned safely ({len(unique)} problems)",
            details=unique if len(unique) > 1 else (),
            fix="adjust the selection; `flywheel steps` lists the steps and `flywheel status` what finished",
        )
    return Plan(request=request, decisions=tuple(made.by_key[k] for k in spec.keys))
