"""The one redactor of a command: built here, applied where events are journaled and text is shown.

The runner masks the events it journals (so the journal, `status`, `incident show`, the console and
every notifier see masked text), and the interfaces mask what they render from older records and
from raw step logs (`flywheel logs`, `flywheel report`, the dashboard).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from flywheel.app.session import Session
from flywheel.redaction import Redactor, redactor_for
from flywheel.spec import Project


def session_redactor(session: Session) -> Redactor:
    """Masks every secret value the session's project names, as this process's environment holds it."""
    return projects_redactor([session.project])


def projects_redactor(projects: Iterable[Project], *, extra: Sequence[str | None] = ()) -> Redactor:
    """Masks the secrets of several projects (the dashboard shows them all) and `extra` values (its token)."""
    return redactor_for([p.config for p in projects], os.environ, extra=extra)
