"""Choose how a run's progress is shown to a person: drawn live in a terminal, plain lines elsewhere.

Its own module so that `render` (plain lines) and `live` (Rich Live, imported only for a terminal)
do not import each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from flywheel.render import ProgressPrinter
from flywheel.spec import PipelineSpec

if TYPE_CHECKING:
    from flywheel.live import LiveProgress


def progress(console: Console, spec: PipelineSpec) -> ProgressPrinter | LiveProgress:
    """An observer and a context manager to hold around the run."""
    if console.is_terminal:
        from flywheel.live import LiveProgress  # Rich Live is imported only for a terminal

        return LiveProgress(console, spec)
    return ProgressPrinter(console, spec)
