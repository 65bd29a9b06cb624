"""`flywheel data`: make raw inputs for db-refresh, optionally broken in a chosen way.

Mounted by `flywheel.cli`; the generator is imported inside the command so `flywheel --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from flywheel.pipelines.db_refresh.sample_data import Fault

app = typer.Typer(help="Sample data for the db-refresh pipeline.", no_args_is_help=True)


def default_raw_root() -> Path:
    """`{FLYWHEEL_HOME or .flywheel}/data/raw`: where the local environment's `raw_root` points."""
    return Path(os.environ.get("FLYWHEEL_HOME") or ".flywheel").expanduser().resolve() / "data" / "raw"


@app.callback()
def _group() -> None:
    """Sample data for the db-refresh pipeline."""


@app.command()
def generate(
    rows: Annotated[int, typer.Option("--rows", min=1, help="Addressable rows (infobase gets as many).")] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Same rows and seed give the same files.")] = 42,
    root: Annotated[Path | None, typer.Option("--root", help="Raw root (default: $FLYWHEEL_HOME/data/raw).")] = None,
    files: Annotated[int, typer.Option("--files", min=1, help="Files per source.")] = 4,
    fault: Annotated[
        Fault | None, typer.Option("--fault", help="Break the delivery this way, to see a step fail.")
    ] = None,
) -> None:
    """Write raw addressable ids (gzip CSV) and infobase attributes (Parquet), replacing old ones."""
    from flywheel.pipelines.db_refresh.sample_data import generate as run_generator

    target = root if root is not None else default_raw_root()
    result = run_generator(target, rows, seed, files=files, fault=str(fault) if fault else None)
    broken = f", fault {result.fault}" if result.fault else ""
    typer.echo(
        f"wrote {rows:,} rows (seed {seed}{broken}) to {result.raw_root} in {result.seconds:.1f}s: "
        f"{len(result.addressable_files)} addressable files, {len(result.infobase_files)} infobase files"
    )
