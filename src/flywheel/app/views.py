"""Runs, plans and checks as JSON: one shape for `--json`, the dashboard and the `sfn` commands."""

from __future__ import annotations

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
