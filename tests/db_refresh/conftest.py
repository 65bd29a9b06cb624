"""Shared fixtures for db-refresh steps 1-4: a data lake in a temporary folder and a way to run a step.

Jobs are called in-process with the same `StepInvocation` the runner would send to a subprocess.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flywheel.invocation import JobResult, StepInvocation
from flywheel.pipelines.db_refresh.jobs import (
    addressable_split,
    infobase_split,
    prepare_part_tables,
    register_part_tables,
)
from flywheel.pipelines.db_refresh.sample_data import generate

DATABASE = "omc_flywheel_local"
STEPS: Mapping[str, Callable[[StepInvocation], JobResult | None]] = {
    "addressable-split-and-part": addressable_split.run,
    "infobase-split-and-part": infobase_split.run,
    "register-part-tables": register_part_tables.run,
    "prepare-part-tables": prepare_part_tables.run,
}
CONTEXTS = ("addressable_ids", "infobase_attributes")


@dataclass
class Lake:
    """One test's local environment: raw inputs, split outputs and a catalog under `root`."""

    root: Path
    n_parts: int = 4
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def raw_root(self) -> Path:
        return self.root / "raw"

    @property
    def split_root(self) -> Path:
        return self.root / "split_part"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.duckdb"

    def params(self, **extra: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "engine": "duckdb",
            "data_root": str(self.root),
            "raw_root": str(self.raw_root),
            "split_root": str(self.split_root),
            "catalog": str(self.catalog),
            "database": DATABASE,
            "table_prefix": "part_",
            "n_parts": self.n_parts,
            "memory_limit": "1GB",
            "threads": 1,
            "temp_directory": str(self.root / "tmp"),
        }
        return {**base, **self.overrides, **extra}

    def run(self, step: str, context: str | None = None, **extra: Any) -> JobResult:
        """Run one step (one context of step 3) the way the runner would, and return its result."""
        if context is not None:  # as pipeline.yaml's contexts of step 3 set them
            extra = {"table": context, "storage_root": str(self.split_root / context), "context": context, **extra}
        params = self.params(**extra)
        invocation = StepInvocation(
            pipeline="db-refresh",
            step=step,
            context=context,
            run_id=1,
            attempt=1,
            env="local",
            job=f"test:{step}",
            params=params,
        )
        result = STEPS[step](invocation)
        assert result is not None
        return result

    def split(self) -> None:
        self.run("addressable-split-and-part")
        self.run("infobase-split-and-part")

    def register(self) -> None:
        for context in CONTEXTS:
            self.run("register-part-tables", context)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """An empty lake: generate or write raw data into it yourself."""
    return Lake(tmp_path / "lake")


@pytest.fixture(scope="module")
def split_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """Raw sample data already split by steps 1 and 2 (4 parts), built once per test module."""
    built = Lake(tmp_path_factory.mktemp("split") / "lake")
    generate(built.raw_root, rows=400, seed=5, files=2)
    built.split()
    return built


@pytest.fixture
def fresh_lake(split_lake: Lake, tmp_path: Path) -> Lake:
    """A private copy of `split_lake` with no catalog yet, for tests that change the files."""
    copy = Lake(tmp_path / "lake", n_parts=split_lake.n_parts)
    shutil.copytree(split_lake.split_root, copy.split_root)
    return copy
