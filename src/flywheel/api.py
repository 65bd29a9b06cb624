"""The library API: run, resume, plan, status, runs, logs, mark. The CLI and the dashboard call these.

The public face of the application layer (`flywheel.app`); names are re-exported from there so that
library callers have one stable import.
"""

from __future__ import annotations

from flywheel.app.facts import live_step_processes
from flywheel.app.policies import (
    find_resumable,
    latest_successes,
    load_state,
    needs_attention,
    open_to_resume,
    recovered_among,
    recovered_by,
    recovered_by_many,
    settle,
)
from flywheel.app.queries import (
    KeyReport,
    MarkResult,
    RunView,
    VerifyReport,
    list_runs,
    log_files,
    mark_records,
    mark_succeeded,
    read_logs,
    status,
    verify_run,
)
from flywheel.app.run_index import Cell, RunDigest, RunIndex
from flywheel.app.runs import (
    PlanInputsHook,
    PlannedRun,
    RunOptions,
    RunResult,
    code_version,
    dry_run,
    execute,
    flywheel_version,
    gather_inputs,
    prepare,
)
from flywheel.app.secrets import projects_redactor, session_redactor
from flywheel.app.session import (
    DEFAULT_HOME,
    Session,
    open_session,
    resolve_home,
)
from flywheel.app.views import (
    planned_summary,
    request_flags,
    rerun_command,
    state_summary,
)

__all__ = [
    "DEFAULT_HOME",
    "Cell",
    "KeyReport",
    "MarkResult",
    "PlanInputsHook",
    "PlannedRun",
    "RunDigest",
    "RunIndex",
    "RunOptions",
    "RunResult",
    "RunView",
    "Session",
    "VerifyReport",
    "code_version",
    "dry_run",
    "execute",
    "find_resumable",
    "flywheel_version",
    "gather_inputs",
    "latest_successes",
    "list_runs",
    "live_step_processes",
    "load_state",
    "log_files",
    "mark_records",
    "mark_succeeded",
    "needs_attention",
    "open_session",
    "open_to_resume",
    "planned_summary",
    "prepare",
    "projects_redactor",
    "read_logs",
    "recovered_among",
    "recovered_by",
    "recovered_by_many",
    "request_flags",
    "rerun_command",
    "resolve_home",
    "session_redactor",
    "settle",
    "state_summary",
    "status",
    "verify_run",
]
