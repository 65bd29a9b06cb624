"""The one record that starts a step anywhere: a local subprocess, a thread, or a Glue job.

A job receives a `StepInvocation` and nothing else: no spec, no journal, no CLI. That keeps job code
identical on every backend (a Glue job rebuilds the same record from its job arguments).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class StepInvocation:
    """What a job needs to know about the attempt it is running.

    `params` are already resolved: pipeline parameters, then environment settings, then the step's own
    parameters, then its context's parameters (later wins), with `{home}`, `{env}` and setting
    placeholders expanded.
    """

    pipeline: str
    step: str
    context: str | None
    run_id: int
    attempt: int
    env: str
    job: str
    params: Mapping[str, Any] = field(default_factory=dict)
    result_path: str | None = None

    @property
    def key(self) -> str:
        return f"{self.step}[{self.context}]" if self.context else self.step

    def to_json(self) -> str:
        body = asdict(self)
        body["params"] = dict(self.params)
        return json.dumps(body, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StepInvocation:
        body = json.loads(text)
        return cls(**body)


@dataclass(frozen=True)
class JobResult:
    """What a job reports back: the outputs it committed (paths or table names with details)."""

    outputs: tuple[Mapping[str, Any], ...] = ()
    metrics: Mapping[str, Any] = field(default_factory=dict)


class JobError(Exception):
    """A job failure with a cause the operator can act on (missing source, schema mismatch, ...).

    `error_type` names the cause in a stable way so that incidents and hints can match on it.
    """

    def __init__(self, message: str, *, error_type: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type or type(self).__name__
