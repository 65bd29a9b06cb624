"""`flywheel journal check | backup | restore`: the safety net for the run journal.

Thin commands over `flywheel.journal`'s check, backup and restore, mounted by `flywheel.cli`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from flywheel.errors import BackendError

app = typer.Typer(help="The run journal: check it, back it up, restore a backup.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True, emoji=False)

HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="Journal, logs and local data live here.", envvar="FLYWHEEL_HOME")
]


def _home(home: Path | None) -> Path:
    from flywheel.api import resolve_home

    return resolve_home(home)


@app.command()
def check(home: HomeOpt = None) -> None:
    """SQLite's integrity check of the journal (read-only; exit 3 when it is damaged)."""
    from flywheel.journal import check_journal, list_backups, open_journal

    root = _home(home)
    if not (root / "journal.sqlite").exists():
        open_journal(root, create=False)  # says that no journal is there
    problems = check_journal(root / "journal.sqlite")
    if problems:
        backups = list_backups(root)
        raise BackendError(
            f"the journal at {root / 'journal.sqlite'} is damaged ({len(problems)} problem(s))",
            details=problems[:10],
            fix="`flywheel journal restore` puts back the latest backup"
            + (f" ({backups[0].name})" if backups else " (there is none: move the journal aside)"),
        )
    console.print(f"✅ the journal at {root / 'journal.sqlite'} is sound", markup=False)


@app.command()
def backup(home: HomeOpt = None) -> None:
    """Copy the journal now (runs do it at their end; the newest 3 copies are kept)."""
    from flywheel.journal import backup_journal, open_journal

    root = _home(home)
    open_journal(root, create=False).close()
    console.print(f"backed up to {backup_journal(root)}", markup=False)


@app.command()
def restore(
    home: HomeOpt = None,
    source: Annotated[Path | None, typer.Option("--from", help="A backup file (default: the newest).")] = None,
) -> None:
    """Put a backup in place of the journal; the current file is moved aside, never deleted."""
    from flywheel.journal import restore_journal

    done = restore_journal(_home(home), source)
    console.print(f"restored {done.backup}", markup=False)
    if done.moved_aside:
        console.print(f"the journal it replaces was moved to {done.moved_aside}", markup=False)
    console.print(f"runs in the backup: {', '.join(map(str, done.runs_in_backup)) or 'none'}", markup=False)
    if done.unreadable:
        console.print(
            "the replaced journal could not be read, so which later runs the backup lacks is unknown: "
            "check `flywheel runs` against what ran since the backup",
            markup=False,
        )
    elif done.runs_lost:
        console.print(
            f"not in the backup (run after it): {', '.join(map(str, done.runs_lost))}; their events are lost "
            "here; rerun what they did (`flywheel run`), and `flywheel sfn recover` re-imports AWS executions",
            markup=False,
        )
    else:
        console.print("nothing journaled after the backup was lost", markup=False)
