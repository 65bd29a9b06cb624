"""Runs, plans and checks as JSON: one shape for `--json`, the dashboard and the `sfn` commands."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from flywheel.app.queries import RunView
from flywheel.app.runs import PlannedRun
from flywheel.app.session import Session
from flywheel.planner import (
    Action,
)
from flywheel.spec import StepKey
from flywheel.state import StepStatus


def planned_summary(planned: PlannedRun) -> dict[str, Any]:
    """A JSON-ready description of a plan (for --json and the dashboard)."""
    return {
        "pipeline": planned.session.pipeline,
        "env": planned.session.env_name,
        "source_run": planned.source.run_id if planned.source else None,
        "request": planned.plan.request.to_dict(),
        "decisions": [
            {
                "number": planned.session.spec.step(d.key.step).number,
                "key": str(d.key),
                "action": d.action.value,
                "reason": d.reason,
                "source_run": d.source.produced_by if d.source else None,
                "duration": d.source.duration if d.source else None,
            }
            for d in planned.plan.decisions
        ],
        "to_run": [str(k) for k in planned.plan.keys(Action.RUN)],
        "time_saved": {
            "wall_seconds": planned.time_saved.wall_seconds,
            "compute_seconds": planned.time_saved.compute_seconds,
            "dpu_hours": planned.time_saved.dpu_hours,
        },
        "warnings": list(planned.warnings),
    }


_FLAGS = (("skip", "--skip-steps"), ("only", "--only"), ("from_step", "--from-step"))
_SWITCHES = (("force", "--force"), ("reuse_stale", "--reuse-stale"), ("again", "--again"))


def request_flags(request: Mapping[str, Any]) -> str:
    """A journaled request as the command words that repeat it: `resume --skip-steps=1,2 --force`.

    The one place a request becomes flags, so the run list, the dashboard and the CLI spell them as the
    CLI takes them (and a flag added to `PlanRequest` is added here once).
    """
    words = [str(request.get("mode", ""))] if request.get("mode") else []
    for field_name, flag in _FLAGS:
        value = request.get(field_name)
        if value:
            words.append(f"{flag}={','.join(value) if isinstance(value, list | tuple) else value}")
    words += [flag for field_name, flag in _SWITCHES if request.get(field_name)]
    return " ".join(words)


def state_summary(view: RunView) -> dict[str, Any]:
    """A run as JSON: `flywheel status --json`, `run --json` and the end of `resume --json`."""
    state = view.state
    started = state.started
    return {
        "run_id": state.run_id,
        "pipeline": view.session.pipeline,
        "env": view.session.env_name,
        "status": state.status.value,
        "started_at": started.at if started else None,
        "user": started.user if started else None,
        "host": started.host if started else None,
        "parent_run": started.parent_run if started else None,
        "root_run": started.root_run if started else None,
        "code_version": started.code_version if started else None,
        "resume_command": view.resume_command,
        "steps": [
            {
                "key": str(k),
                "number": view.session.spec.step(k.step).number,
                "status": state.step(k).status.value,
                "attempts": state.step(k).attempts,
                "duration": state.step(k).duration,
                "error_type": state.step(k).error_type,
                "error_message": state.step(k).error_message,
                "reused_from": state.step(k).produced_by if state.step(k).status is StepStatus.REUSED else None,
                "note": state.step(k).note,
            }
            for k in view.session.spec.keys
        ],
    }


def rerun_command(session: Session, key: StepKey) -> str:
    """The command that reruns just `key` in the session's pipeline and environment, for a person to copy.

    `flywheel run --only KEY` reruns exactly that key and reuses the latest success of everything
    upstream of it (the planner refuses when there is none, and says so). The pipeline is named by its
    definition's absolute path and the home is explicit, so the command works from any folder; every
    word is shell-quoted (`b[y]` would otherwise be a glob).
    """
    pipeline = session.spec.source_path or session.pipeline
    words = ["flywheel", "run", pipeline, "--env", session.env_name, "--only", str(key), "--home", str(session.home)]
    return shlex.join(words)
