"""Runs, plans and checks as JSON: one shape for `--json`, the dashboard and the `sfn` commands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flywheel.app.runs import PlannedRun
from flywheel.planner import (
    Action,
)


def planned_summary(planned: PlannedRun) -> dict[str, Any]:
    """A JSON-ready description of a plan (for --json and the dashboard)."""
    return {
        "pipeline": planned.session.pipeline,
        "env": planned.session.env_name,
        "source_run": planned.source.run_id if planned.source else None,
        "request": planned.plan.request.to_dict(),
        "decisions": [
            {
                "key": str(d.key),
                "action": d.action.value,
                "reason": d.reason,
                "source_run": d.source.produced_by if d.source else None,
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
