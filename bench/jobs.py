"""Benchmark jobs: they do nothing, so only the orchestrator's own cost is measured."""

from __future__ import annotations

from pathlib import Path

from flywheel.invocation import JobError, StepInvocation


def noop(invocation: StepInvocation) -> None:
    """Nothing at all."""


def fail_when_marked(invocation: StepInvocation) -> None:
    """Fails while `{marks}/{step}` exists: W2 fails s5 once, then resumes after the "fix"."""
    if (Path(invocation.params["marks"]) / invocation.step).exists():
        raise JobError(f"{invocation.step} marked to fail", error_type="Injected")
