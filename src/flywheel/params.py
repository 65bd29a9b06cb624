"""Resolve the parameters a step sees: defaults, environment settings, step and context values.

Later layers win: pipeline `params` < environment `settings` < step `params` < context parameters.
String values written in a definition are templates: they may refer to other values as `{name}`;
`{home}`, `{env}` and `{engine}` are always defined, `{context}` for a context of a fan-out step.

A template is expanded once. What a placeholder is replaced with is data: a home such as
`/srv/it's {x}` or `/data/{env}` appears as written, never read again as a template, so a path with
braces cannot turn into another folder. Unknown placeholders and stray braces stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from flywheel.spec import EnvironmentSpec, PipelineSpec, StepKey

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholders(template: str) -> set[str]:
    """The `{name}` placeholders of a template string."""
    return set(_PLACEHOLDER.findall(template))


def expand(value: Any, scope: Mapping[str, Any]) -> Any:
    """Expand `{name}` placeholders in strings (also inside lists and mappings) with values of `scope`.

    One pass: the values put in are never expanded again.
    """
    return _substitute(value, lambda name: scope.get(name, _KEEP))


_KEEP = object()  # a placeholder with no value: left as written


def _substitute(value: Any, lookup: Callable[[str], Any]) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            found = lookup(match[1])
            return match[0] if found is _KEEP else str(found)

        return _PLACEHOLDER.sub(replace, value)
    if isinstance(value, Mapping):
        return {k: _substitute(v, lookup) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_substitute(v, lookup) for v in value]
    return value


def _resolve_layers(values: Mapping[str, Any], literal: set[str]) -> dict[str, Any]:
    """Every value with its templates expanded; values named in `literal` are data and stay as they are.

    A template referring to another template gets that one expanded first (each once); a cycle leaves
    the placeholder that closes it as written.
    """
    done: dict[str, Any] = {name: values[name] for name in literal}
    busy: set[str] = set()

    def lookup(name: str) -> Any:
        if name in done:
            return done[name]
        if name not in values or name in busy:
            return _KEEP
        busy.add(name)
        done[name] = _substitute(values[name], lookup)
        busy.discard(name)
        return done[name]

    return {name: lookup(name) for name in values}


def resolve_params(
    spec: PipelineSpec, key: StepKey, env_name: str, env: EnvironmentSpec, home: str, *, engine: str | None = None
) -> dict[str, Any]:
    """The parameters of one key. `engine` (from `--engine`) replaces the environment's engine for a run."""
    step = spec.step(key.step)
    values: dict[str, Any] = {"home": home, "env": env_name, "engine": env.engine}
    literal = set(values)  # supplied by flywheel, not written in the definition: data, never templates

    def layer(written: Mapping[str, Any]) -> None:
        values.update(written)
        literal.difference_update(written)

    layer(spec.params)
    layer(env.settings)
    layer(step.params)
    if key.context is not None:
        values["context"] = key.context
        literal.add("context")
        layer(step.contexts.get(key.context) or {})
    if step.resources.memory:
        layer({"memory_limit": step.resources.memory})
    if step.resources.threads:
        layer({"threads": step.resources.threads})
    if engine:
        values["engine"] = engine
        literal.add("engine")
    return _resolve_layers(values, literal)


def resolve_outputs(spec: PipelineSpec, key: StepKey, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The declared outputs of a key, with placeholders expanded (once) by the key's resolved parameters."""
    return tuple(str(expand(out, params)) for out in spec.step(key.step).outputs)
