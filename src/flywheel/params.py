"""Resolve the parameters a step sees: defaults, environment settings, step and context values.

Later layers win: pipeline `params` < environment `settings` < step `params` < context parameters.
String values may refer to other values as `{name}`; `{home}` and `{env}` are always defined.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flywheel.spec import EnvironmentSpec, PipelineSpec, StepKey

_MAX_PASSES = 5


class _Keep(dict[str, Any]):
    """Leave unknown placeholders as they are instead of failing on them."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def expand(value: Any, scope: Mapping[str, Any]) -> Any:
    """Expand `{name}` placeholders in strings (also inside lists and mappings)."""
    if isinstance(value, str):
        text = value
        for _ in range(_MAX_PASSES):
            expanded = text.format_map(_Keep(scope)) if "{" in text else text
            if expanded == text:
                break
            text = expanded
        return text
    if isinstance(value, Mapping):
        return {k: expand(v, scope) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [expand(v, scope) for v in value]
    return value


def resolve_params(
    spec: PipelineSpec, key: StepKey, env_name: str, env: EnvironmentSpec, home: str, *, engine: str | None = None
) -> dict[str, Any]:
    """The parameters of one key. `engine` (from `--engine`) replaces the environment's engine for a run."""
    step = spec.step(key.step)
    merged: dict[str, Any] = {"home": home, "env": env_name, "engine": env.engine}
    merged.update(spec.params)
    merged.update(env.settings)
    merged.update(step.params)
    if key.context is not None:
        merged["context"] = key.context
        merged.update(step.contexts.get(key.context) or {})
    if step.resources.memory:
        merged["memory_limit"] = step.resources.memory
    if step.resources.threads:
        merged["threads"] = step.resources.threads
    if engine:
        merged["engine"] = engine
    scope = dict(merged)
    return {k: expand(v, scope) for k, v in merged.items()}


def resolve_outputs(spec: PipelineSpec, key: StepKey, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The declared outputs of a key, with placeholders expanded."""
    return tuple(str(expand(out, params)) for out in spec.step(key.step).outputs)
