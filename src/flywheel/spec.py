"""Pipeline definitions: YAML validated into frozen specs, every problem reported at once.

A pipeline file (`pipeline.yaml`) says what the steps are; the project file beside it (`project.yaml`)
says where they run (environments). Specs are immutable values; nothing is registered globally.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flywheel.errors import DefinitionError, UsageError

EXECUTORS = ("subprocess", "inprocess", "glue")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_duration(value: float | int | str) -> float:
    """Seconds from `90`, `"90s"`, `"15m"`, `"2h"`, `"250ms"`."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 90, 90s, 15m, 2h)")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


@dataclass(frozen=True, order=True)
class StepKey:
    """The structural identity of one unit of work: a step, or one context of a fanned-out step."""

    step: str
    context: str | None = None

    def __str__(self) -> str:
        return f"{self.step}[{self.context}]" if self.context else self.step

    @classmethod
    def parse(cls, text: str) -> StepKey:
        text = text.strip()
        if text.endswith("]") and "[" in text:
            step, _, context = text[:-1].partition("[")
            return cls(step.strip(), context.strip() or None)
        return cls(text)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RetryPolicy(_Frozen):
    attempts: int = Field(default=1, ge=1, le=20)
    backoff_seconds: float = Field(default=2.0, ge=0)
    backoff_multiplier: float = Field(default=2.0, ge=1)
    jitter: float = Field(default=0.1, ge=0, le=1)


class Resources(_Frozen):
    """Capacity settings. Not part of a step's fingerprint: raising them never makes a step stale."""

    worker_type: str | None = Field(default=None, pattern=r"^(Standard|G\.\d+X|G\.025X|R\.\d+X|Z\.\d+X)$")
    workers: int | None = Field(default=None, ge=1)
    memory: str | None = Field(default=None, pattern=r"(?i)^\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
    threads: int | None = Field(default=None, ge=1)


class CloudPlacement(_Frozen):
    """Where the step lives on AWS: its Glue job and the Step Functions state that holds it."""

    glue_job: str | None = None
    state: str | None = None
    context_aliases: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Other spellings of each context in hand-built state machines (arguments, Map items, state names),
    e.g. `addressable_ids: [part_addressable_ids, RegisterAddressableIds]`."""


class CauseRule(_Frozen):
    """A known cause of failure for a step: a pattern over the error and a hint for the operator."""

    match: str
    cause: Literal["data", "permission", "resource", "schema", "configuration", "code", "unknown"]
    hint: str

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
        return value


class StepSpec(_Frozen):
    id: str
    number: int = Field(ge=1)
    title: str
    job: str | None = None
    command: str | None = None
    depends_on: tuple[str, ...] = ()
    contexts: Mapping[str, Mapping[str, Any]] = Field(default_factory=dict)
    params: Mapping[str, Any] = Field(default_factory=dict)
    retry: RetryPolicy = RetryPolicy()
    timeout: float | None = None
    resources: Resources = Resources()
    outputs: tuple[str, ...] = ()
    cloud: CloudPlacement = CloudPlacement()
    executor: str | None = None
    causes: tuple[CauseRule, ...] = ()

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @property
    def keys(self) -> tuple[StepKey, ...]:
        if not self.contexts:
            return (StepKey(self.id),)
        return tuple(StepKey(self.id, name) for name in self.contexts)


class PipelineSpec(_Frozen):
    pipeline: str
    description: str = ""
    params: Mapping[str, Any] = Field(default_factory=dict)
    steps: tuple[StepSpec, ...]
    source_path: str | None = None

    @cached_property
    def by_id(self) -> Mapping[str, StepSpec]:
        return {step.id: step for step in self.steps}

    @cached_property
    def by_number(self) -> Mapping[int, StepSpec]:
        return {step.number: step for step in self.steps}

    @cached_property
    def keys(self) -> tuple[StepKey, ...]:
        """Every unit of work in a stable topological order (steps by dependency, then number)."""
        return tuple(key for step in self.topological_steps for key in step.keys)

    @cached_property
    def topological_steps(self) -> tuple[StepSpec, ...]:
        done: list[StepSpec] = []
        placed: set[str] = set()
        pending = sorted(self.steps, key=lambda s: s.number)
        while pending:
            ready = [s for s in pending if all(d in placed for d in s.depends_on)]
            if not ready:  # a cycle: validation reports it; keep definition order here
                ready = pending[:1]
            step = ready[0]
            done.append(step)
            placed.add(step.id)
            pending.remove(step)
        return tuple(done)

    def upstream_keys(self, key: StepKey) -> tuple[StepKey, ...]:
        """Direct dependencies of a key: every key of every step it depends on."""
        return tuple(k for dep in self.by_id[key.step].depends_on for k in self.by_id[dep].keys)

    @cached_property
    def downstream_steps(self) -> Mapping[str, tuple[str, ...]]:
        children: dict[str, list[str]] = {s.id: [] for s in self.steps}
        for step in self.steps:
            for dep in step.depends_on:
                children.setdefault(dep, []).append(step.id)
        return {k: tuple(v) for k, v in children.items()}

    def step(self, step_id: str) -> StepSpec:
        return self.by_id[step_id]


class AwsSettings(_Frozen):
    profile: str | None = None
    region: str = "us-east-1"
    account_id: str | None = None
    s3_root: str | None = None
    glue_database: str | None = None
    state_machine: str | None = None
    sns_topic: str | None = None
    lock_table: str | None = None
    glue_role: str | None = None


class NotifierSpec(_Frozen):
    """One notification channel of an environment. Secrets are never written here: `url_env` and
    `password_env` name the environment variables that hold them."""

    kind: Literal["webhook", "email", "sns"]
    name: str | None = None
    url_env: str | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_user: str | None = None
    starttls: bool = False
    sender: str | None = None
    recipients: tuple[str, ...] = ()
    password_env: str | None = None
    topic_arn: str | None = None
    on: tuple[Literal["failed", "recovered", "overdue", "interrupted"], ...] = (
        "failed",
        "recovered",
        "overdue",
        "interrupted",
    )
    timeout: float = Field(default=10.0, gt=0, le=120)


class EnvironmentSpec(_Frozen):
    executor: str = "subprocess"
    engine: Literal["duckdb", "spark"] = "duckdb"
    max_parallel: int = Field(default=4, ge=1)
    settings: Mapping[str, Any] = Field(default_factory=dict)
    aws: AwsSettings | None = None
    notifications: tuple[NotifierSpec, ...] = ()
    require_note: bool = False
    confirm: bool = False
    preload: tuple[str, ...] = ()
    """Modules the run's fork server imports once, before it forks any step: the heavy libraries the
    jobs share (db-refresh: DuckDB and SQLFrame, ~0.5 s a step). The jobs themselves are still
    imported fresh by every attempt, so a fixed job runs its new code."""


class ProjectConfig(_Frozen):
    environments: Mapping[str, EnvironmentSpec]
    default_env: str = "local"
    secrets: tuple[str, ...] = ()
    """Environment variables whose values flywheel masks wherever it shows text (besides the AWS
    credentials and the variables notifier settings name): `secrets: [PARTNER_API_TOKEN]`."""
    source_path: str | None = None

    def environment(self, name: str) -> EnvironmentSpec:
        try:
            return self.environments[name]
        except KeyError:
            raise UsageError(
                f"unknown environment {name!r}",
                fix=f"use one of: {', '.join(self.environments)}",
            ) from None


@dataclass(frozen=True)
class Project:
    """A pipeline together with the environments it runs in."""

    spec: PipelineSpec
    config: ProjectConfig
    root: Path


# ---------------------------------------------------------------------------------------------
# loading and validation


@dataclass(frozen=True)
class Problem:
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


def _line_index(node: yaml.Node, path: str = "") -> Iterator[tuple[str, int]]:
    """Map dotted paths (`steps[2].depends_on[0]`) to 1-based YAML line numbers."""
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = f"{path}.{key_node.value}" if path else str(key_node.value)
            yield child, key_node.start_mark.line + 1
            for sub_path, line in _line_index(value_node, child):
                if sub_path != child:
                    yield sub_path, line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _line_index(item, f"{path}[{i}]")


def _duplicate_keys(node: yaml.Node, path: str = "") -> Iterator[str]:
    """Keys written twice in one mapping: YAML loaders keep the last silently, so the first is lost."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key_node, yaml.ScalarNode) and key in seen:
                yield f"{where}: written twice, on lines {seen[key]} and {line} (the second would silently win)"
            seen.setdefault(key, line)
            yield from _duplicate_keys(value_node, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, f"{path}[{i}]")


def _read_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no such file: {path}", fix="pass the path of a pipeline.yaml") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", fix="pass the path of a readable file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DefinitionError(
            f"{path} is not UTF-8 at byte {exc.start} (line {line}): {raw[exc.start : exc.start + 1]!r}",
            fix="save the file as UTF-8 (most editors: File > Save with encoding)",
        ) from None
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster
        node = yaml.compose(text, Loader=loader)
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{path} is not valid YAML", details=(str(exc),)) from None
    duplicates = tuple(_duplicate_keys(node)) if node is not None else ()
    if duplicates:
        raise DefinitionError(
            f"{path} has {len(duplicates)} duplicate key(s)",
            details=duplicates,
            fix="keep one of each (YAML keeps only the last, silently)",
        )
    lines = dict(_line_index(node)) if node is not None else {}
    return data, lines


def _where(path: Path, lines: Mapping[str, int], location: str) -> str:
    probe = location
    while probe and probe not in lines:
        probe = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", probe)
    line = lines.get(probe)
    return f"{path.name}:{line} {location}" if line else f"{path.name} {location}"


def _pydantic_location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validate_graph(spec: PipelineSpec) -> Iterator[tuple[str, str]]:
    seen_ids: dict[str, int] = {}
    seen_numbers: dict[int, str] = {}
    for i, step in enumerate(spec.steps):
        where = f"steps[{i}]"
        if not _NAME.match(step.id):
            yield f"{where}.id", f"step id {step.id!r} must be lowercase letters, digits, '-' or '_'"
        if step.id in seen_ids:
            yield f"{where}.id", f"duplicate step id {step.id!r} (also steps[{seen_ids[step.id]}])"
        seen_ids.setdefault(step.id, i)
        if step.number in seen_numbers:
            yield (
                f"{where}.number",
                f"duplicate number {step.number} (also step {seen_numbers[step.number]!r})",
            )
        seen_numbers.setdefault(step.number, step.id)
        if (step.job is None) == (step.command is None):
            yield where, "a step needs exactly one of `job` (module:function) or `command` (shell)"
        if step.job is not None and not re.match(r"^[\w.]+:\w+$", step.job):
            yield f"{where}.job", f"job {step.job!r} must look like package.module:function"
        if step.executor is not None and step.executor not in EXECUTORS:
            yield f"{where}.executor", f"unknown executor {step.executor!r} (known: {', '.join(EXECUTORS)})"
        for name in step.contexts:
            if not _NAME.match(str(name)):
                yield (
                    f"{where}.contexts.{name}",
                    f"context name {name!r} must be lowercase letters, digits, _ or -",
                )
        for j, dep in enumerate(step.depends_on):
            if dep == step.id:
                yield f"{where}.depends_on[{j}]", f"step {step.id!r} depends on itself"
    ids = {s.id for s in spec.steps}
    for i, step in enumerate(spec.steps):
        for j, dep in enumerate(step.depends_on):
            if dep not in ids:
                yield (
                    f"steps[{i}].depends_on[{j}]",
                    f"unknown dependency {dep!r} (steps are: {', '.join(sorted(ids))})",
                )
    numbers = sorted(seen_numbers)
    if numbers and numbers != list(range(1, len(numbers) + 1)):
        yield "steps", f"step numbers must run 1..{len(numbers)} without gaps (found {numbers})"
    cycle = _find_cycle(spec)
    if cycle:
        yield "steps", "dependency cycle: " + " -> ".join(cycle)


def _find_cycle(spec: PipelineSpec) -> list[str] | None:
    deps: dict[str, list[str]] = {}
    for s in spec.steps:  # the first definition of a duplicated id counts
        deps.setdefault(s.id, [d for d in s.depends_on if d in spec.by_id])
    colour: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = 1
        stack.append(node)
        for dep in deps.get(node, []):
            if colour.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if colour.get(dep) is None:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        colour[node] = 2
        return None

    for step_id in deps:
        if step_id not in colour:
            found = visit(step_id)
            if found:
                return found
    return None


def load_pipeline(path: Path) -> PipelineSpec:
    """Load and validate a pipeline file; raise `DefinitionError` listing every problem."""
    data, lines = _read_yaml(path)
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise DefinitionError(f"{path} must be a mapping with `pipeline` and `steps`")
    try:
        spec = PipelineSpec.model_validate({**data, "source_path": str(path.resolve())})
    except ValidationError as exc:
        for error in exc.errors():
            location = _pydantic_location(error["loc"])
            problems.append(Problem(_where(path, lines, location), error["msg"]))
        spec = None
    if spec is not None:
        problems += [Problem(_where(path, lines, loc), msg) for loc, msg in _validate_graph(spec)]
    if problems or spec is None:
        raise DefinitionError(
            f"{path} has {len(problems)} problem{'s' if len(problems) != 1 else ''}",
            details=tuple(str(p) for p in problems),
            fix="correct the definition and run `flywheel validate` again",
        )
    return spec


def load_project_config(path: Path) -> ProjectConfig:
    if not path.exists():
        return ProjectConfig(environments={"local": EnvironmentSpec()}, source_path=None)
    data, lines = _read_yaml(path)
    try:
        config = ProjectConfig.model_validate({**(data or {}), "source_path": str(path.resolve())})
    except ValidationError as exc:
        details = tuple(str(Problem(_where(path, lines, _pydantic_location(e["loc"])), e["msg"])) for e in exc.errors())
        raise DefinitionError(f"{path} has {len(details)} problem(s)", details=details) from None
    problems = [
        str(Problem(_where(path, lines, f"environments.{name}.executor"), f"unknown executor {env.executor!r}"))
        for name, env in config.environments.items()
        if env.executor not in EXECUTORS
    ]
    if config.default_env not in config.environments:
        problems.append(f"{path.name}: default_env {config.default_env!r} is not an environment")
    if problems:
        raise DefinitionError(f"{path} has {len(problems)} problem(s)", details=tuple(problems))
    return config


BUILTIN_PIPELINES = Path(__file__).parent / "pipelines"


def resolve_pipeline_path(ref: str | None) -> Path:
    """A pipeline reference is a path (file or folder) or the name of a built-in pipeline.

    With no reference: `$FLYWHEEL_PIPELINE`, else `./pipeline.yaml` when present, else the pipeline
    installed with flywheel when there is exactly one (db-refresh today; the core names none).
    """
    ref = ref or os.environ.get("FLYWHEEL_PIPELINE")
    if ref is None:
        installed = sorted(p.parent.name.replace("_", "-") for p in BUILTIN_PIPELINES.glob("*/pipeline.yaml"))
        ref = installed[0] if len(installed) == 1 and not Path("pipeline.yaml").exists() else "pipeline.yaml"
    candidate = Path(ref)
    if candidate.is_dir():
        candidate = candidate / "pipeline.yaml"
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    builtin = BUILTIN_PIPELINES / ref.replace("-", "_") / "pipeline.yaml"
    if builtin.exists():
        return builtin
    known = sorted(p.parent.name.replace("_", "-") for p in BUILTIN_PIPELINES.glob("*/pipeline.yaml"))
    raise UsageError(
        f"no pipeline named {ref!r}",
        fix=f"pass a path to a pipeline.yaml or one of: {', '.join(known) or '(none built in)'}",
    )


def load_project(ref: str | None = None) -> Project:
    """Load a pipeline and the `project.yaml` beside it."""
    path = resolve_pipeline_path(ref)
    spec = load_pipeline(path)
    config = load_project_config(path.parent / "project.yaml")
    return Project(spec=spec, config=config, root=path.parent.resolve())
