"""The runbook's failure scenarios on db-refresh, each recovered by fixing the cause and one `flywheel resume`.

For every step (and each context of step 3) a run fails for a cause the runbook lists for that step,
made real on tiny sample data (tests run as root, so nothing here relies on file permissions). The
operator fixes the cause, runs `flywheel resume` once, and the resume runs exactly the minimal work:
the failed step, what depends on it, and nothing that finished intact. The final outputs equal an
uninterrupted run's, and no "did you fix the root cause?" question blocks the resume, because each
fix is noticed (a parameter, a definition, the catalog or a raw input changed).

Runs that fail at step 3 or later start like the runbook's scripts do, with `--skip-steps` reusing the
split steps of an earlier successful run (the oracle): that keeps the matrix fast, and the resume
treats reused steps like any finished step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from flywheel.events import StepFailed, StepStarted
from flywheel.spec import BUILTIN_PIPELINES
from tests.reliability.support import REPO, events, snapshot

pytestmark = pytest.mark.e2e

ROWS, SEED = 400, 11
DB_REFRESH = BUILTIN_PIPELINES / "db_refresh"
SPLIT = ("addressable-split-and-part", "infobase-split-and-part")
AFTER_4 = ("create-part-addressable-ids-er-table", "generate-data-monitor-report", "generate-cleanrooms-report")
ALL_3 = ("register-part-tables[addressable_ids]", "register-part-tables[infobase_attributes]")


@dataclass
class World:
    """A project folder (a copy of the db-refresh definition) and a home at fixed paths."""

    project: Path
    home: Path
    clean_raw: Path
    template: Path
    oracle: dict[str, Any] = field(default_factory=dict)

    def flywheel(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "FLYWHEEL_HOME": str(self.home), "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
        env.pop("FLYWHEEL_ENV", None)
        return subprocess.run(
            [sys.executable, "-m", "flywheel", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.project,
            timeout=300,
        )

    def reset(self, *, after_oracle: bool) -> None:
        """A clean definition; a home holding the oracle's successful run, or only the raw data."""
        for name in ("pipeline.yaml", "project.yaml"):
            shutil.copy(DB_REFRESH / name, self.project / name)
        shutil.rmtree(self.home, ignore_errors=True)
        if after_oracle:
            shutil.copytree(self.template, self.home, symlinks=True)
        else:
            shutil.copytree(self.clean_raw, self.home / "data" / "raw")

    def settings(self, **values: Any) -> None:
        path = self.project / "project.yaml"
        body = yaml.safe_load(path.read_text())
        local = body["environments"]["local"].setdefault("settings", {})
        for name, value in values.items():
            if value is None:
                local.pop(name, None)
            else:
                local[name] = value
        path.write_text(yaml.safe_dump(body, sort_keys=False))

    def catalog(self, *statements: str) -> None:
        import duckdb

        with duckdb.connect(str(self.home / "catalog.duckdb")) as db:
            for statement in statements:
                db.execute(statement)

    def latest_run(self) -> int:
        return max(events(self.home))

    def executed(self, run_id: int) -> set[str]:
        return {str(e.key) for e in events(self.home)[run_id] if isinstance(e, StepStarted)}

    def failures(self, run_id: int) -> dict[str, str]:
        return {str(e.key): e.error_type for e in events(self.home)[run_id] if isinstance(e, StepFailed)}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("db-refresh-scenarios")
    (base / "project").mkdir()
    world = World(project=base / "project", home=base / "home", clean_raw=base / "raw", template=base / "template")
    made = world.flywheel("data", "generate", "--rows", str(ROWS), "--seed", str(SEED), "--root", str(world.clean_raw))
    assert made.returncode == 0, made.stderr
    world.reset(after_oracle=False)
    oracle = world.flywheel("run", "pipeline.yaml")
    assert oracle.returncode == 0, oracle.stdout + oracle.stderr
    world.oracle = snapshot(world.home)
    shutil.copytree(world.home, world.template, symlinks=True)
    yield world


@dataclass(frozen=True)
class Scenario:
    """A runbook failure: how it is caused, how the run that meets it starts, how it is fixed."""

    name: str
    cause: Callable[[World], None]
    start: tuple[str, ...]
    fails: dict[str, str]  # key -> error type
    fix: Callable[[World], None]
    reruns: frozenset[str]
    after_oracle: bool = True


def _raw_fault(fault: str) -> Callable[[World], None]:
    def cause(world: World) -> None:
        made = world.flywheel(
            "data",
            "generate",
            "--rows",
            str(ROWS),
            "--seed",
            str(SEED),
            "--fault",
            fault,
            "--root",
            str(world.home / "data" / "raw"),
        )
        assert made.returncode == 0, made.stderr

    return cause


def _redeliver(source: str) -> Callable[[World], None]:
    """The supplier re-delivers one source: the good files, copied in as they arrive."""

    def fix(world: World) -> None:
        target = world.home / "data" / "raw" / source
        shutil.rmtree(target)
        shutil.copytree(world.clean_raw / source, target)

    return fix


def _edit_definition(storage_root: str) -> Callable[[World], None]:
    def edit(world: World) -> None:
        path = world.project / "pipeline.yaml"
        body = yaml.safe_load(path.read_text())
        (register,) = [s for s in body["steps"] if s["id"] == "register-part-tables"]
        register["contexts"]["infobase_attributes"]["storage_root"] = storage_root
        path.write_text(yaml.safe_dump(body, sort_keys=False))

    return edit


def _write_mapping(text: str) -> Callable[[World], None]:
    def write(world: World) -> None:
        config = world.home / "data" / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "er-schema-mapping.yaml").write_text(text)

    return write


DB = "omc_flywheel_local"
UNREGISTER = (
    f"DELETE FROM {DB}.partitions WHERE table_name = '{{t}}'",
    f"DELETE FROM {DB}.tables WHERE name = '{{t}}'",
    f"DROP VIEW {DB}.{{t}}",
)

SCENARIOS = [
    Scenario(
        "step 1: source data missing",
        cause=_raw_fault("missing-source"),
        start=("run", "pipeline.yaml"),
        fails={"addressable-split-and-part": "missing-source"},
        fix=_redeliver("addressable_ids"),
        reruns=frozenset({"addressable-split-and-part", *ALL_3, "prepare-part-tables", *AFTER_4}),
        after_oracle=False,
    ),
    Scenario(
        "step 2: source file corrupted",
        cause=_raw_fault("infobase-corrupt"),
        start=("run", "pipeline.yaml"),
        fails={"infobase-split-and-part": "corrupt-file"},
        fix=_redeliver("infobase_attributes"),
        reruns=frozenset({"infobase-split-and-part", *ALL_3, "prepare-part-tables", *AFTER_4}),
        after_oracle=False,
    ),
    Scenario(
        "step 3 [addressable_ids]: table prefix conflict",
        cause=lambda w: w.catalog(
            *(s.format(t="part_addressable_ids") for s in UNREGISTER),
            f"CREATE TABLE {DB}.part_addressable_ids AS SELECT 1 AS scratch",
        ),
        start=("run", "pipeline.yaml", "--skip-steps=1,2"),
        fails={"register-part-tables[addressable_ids]": "table-prefix-conflict"},
        fix=lambda w: w.catalog(f"DROP TABLE {DB}.part_addressable_ids"),
        reruns=frozenset({"register-part-tables[addressable_ids]", "prepare-part-tables", *AFTER_4}),
    ),
    Scenario(
        "step 3 [infobase_attributes]: schema inference (wrong storage path in a new catalog)",
        cause=lambda w: (_edit_definition("{split_root}")(w), (w.home / "catalog.duckdb").unlink()),
        start=("run", "pipeline.yaml", "--skip-steps=1,2"),
        fails={"register-part-tables[infobase_attributes]": "schema-inference-failed"},
        fix=_edit_definition("{split_root}/infobase_attributes"),
        reruns=frozenset({"register-part-tables[infobase_attributes]", "prepare-part-tables", *AFTER_4}),
    ),
    Scenario(
        "step 3 (both contexts): database does not exist",
        cause=lambda w: (w.settings(create_database=False), w.catalog(f"DROP SCHEMA {DB} CASCADE")),
        start=("run", "pipeline.yaml", "--skip-steps=1,2"),
        fails={key: "database-missing" for key in ALL_3},
        fix=lambda w: w.catalog(f"CREATE SCHEMA {DB}"),
        reruns=frozenset({*ALL_3, "prepare-part-tables", *AFTER_4}),
    ),
    Scenario(
        "step 4: tables not registered (step 3 skipped with --force)",
        cause=lambda w: w.catalog(*(s.format(t="part_infobase_attributes") for s in UNREGISTER)),
        start=("run", "pipeline.yaml", "--skip-steps=1-3", "--force"),
        fails={"prepare-part-tables": "tables-not-registered"},
        fix=lambda w: None,  # nothing outside: the resume runs the step 3 context the --force left out
        reruns=frozenset({"register-part-tables[infobase_attributes]", "prepare-part-tables", *AFTER_4}),
    ),
    Scenario(
        "step 4: partition missing (n_parts changed after the split)",
        cause=lambda w: w.settings(n_parts=17),
        start=("run", "pipeline.yaml", "--skip-steps=1-3"),
        fails={"prepare-part-tables": "partition-mismatch"},
        fix=lambda w: w.settings(n_parts=None),
        reruns=frozenset({"prepare-part-tables", *AFTER_4}),
    ),
    Scenario(
        "step 5: schema mapping error",
        cause=_write_mapping("fields:\n  hashed_email: EMAIL\n"),
        start=("run", "pipeline.yaml", "--skip-steps=1-4"),
        fails={"create-part-addressable-ids-er-table": "SchemaMappingError"},
        fix=_write_mapping("fields:\n  hashed_email: EMAIL_ADDRESS\n"),
        reruns=frozenset(AFTER_4),
    ),
    Scenario(
        "step 6: data quality threshold breached",
        cause=lambda w: w.settings(monitor_thresholds={"match_rate_warn": 0.999, "match_rate_fail": 0.99}),
        start=("run", "pipeline.yaml", "--skip-steps=1-5"),
        fails={"generate-data-monitor-report": "DataQualityError"},
        fix=lambda w: w.settings(monitor_thresholds=None),
        reruns=frozenset(AFTER_4[1:]),
    ),
    Scenario(
        "step 7: invalid report configuration",
        cause=lambda w: w.settings(cleanrooms_min_k=0),
        start=("run", "pipeline.yaml", "--skip-steps=1-6"),
        fails={"generate-cleanrooms-report": "ReportConfigError"},
        fix=lambda w: w.settings(cleanrooms_min_k=None),
        reruns=frozenset(AFTER_4[2:]),
    ),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_a_runbook_failure_is_recovered_by_fixing_the_cause_and_one_resume(world: World, scenario: Scenario) -> None:
    world.reset(after_oracle=scenario.after_oracle)
    scenario.cause(world)

    failed = world.flywheel(*scenario.start)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    failed_run = world.latest_run()
    assert world.failures(failed_run) == scenario.fails
    status = json.loads(world.flywheel("status", "--json", "-p", "pipeline.yaml").stdout)
    assert status["resume_command"] == f"flywheel resume {failed_run}"

    scenario.fix(world)
    resumed = world.flywheel("resume", "-p", "pipeline.yaml")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert world.executed(world.latest_run()) == scenario.reruns
    assert snapshot(world.home) == world.oracle


# ---------------------------------------------------------------------------------------------
# Every way of selecting work, then `resume` and `verify`: the data ends equal to an uninterrupted
# run's and verify passes, whatever was selected first (the recovery-correctness issue).

MAPPING_OK = "fields:\n  hashed_email: EMAIL_ADDRESS\n"


@dataclass(frozen=True)
class Selection:
    name: str
    first: tuple[str, ...]  # after the oracle's successful run 1
    runs: frozenset[str]  # what the selection executes
    status: str  # how that run ends
    then_resume_runs: frozenset[str] | None  # None: nothing is left, resume says so


SELECTIONS = [
    Selection("--only a step", ("--only", "4"), frozenset({"prepare-part-tables"}), "partial", frozenset(AFTER_4)),
    Selection(
        "--only a context",
        ("--only", "register-part-tables[addressable_ids]"),
        frozenset({ALL_3[0]}),
        "partial",
        frozenset({"prepare-part-tables", *AFTER_4}),
    ),
    Selection("--from-step", ("--from-step", "5"), frozenset(AFTER_4), "succeeded", None),
    Selection(
        "--skip-steps",
        ("--skip-steps=1,2",),
        frozenset({*ALL_3, "prepare-part-tables", *AFTER_4}),
        "succeeded",
        None,
    ),
]


@pytest.mark.parametrize("selection", SELECTIONS, ids=lambda s: s.name)
def test_a_selection_then_resume_ends_with_the_data_of_an_uninterrupted_run(world: World, selection: Selection) -> None:
    world.reset(after_oracle=True)
    first = world.flywheel("run", "pipeline.yaml", *selection.first, "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    assert world.executed(2) == selection.runs
    status = json.loads(world.flywheel("status", "2", "--json", "-p", "pipeline.yaml").stdout)
    assert status["status"] == selection.status

    resumed = world.flywheel("resume", "-p", "pipeline.yaml", "--yes")
    if selection.then_resume_runs is None:
        assert resumed.returncode == 2 and "nothing to resume" in resumed.stderr
    else:
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert world.executed(3) == selection.then_resume_runs
    verified = world.flywheel("verify", "-p", "pipeline.yaml")
    assert verified.returncode == 0, verified.stdout
    assert snapshot(world.home) == world.oracle


def test_a_mark_of_a_step_without_outputs_is_refused_and_the_resume_after_the_fix_does_not_loop(world: World) -> None:
    world.reset(after_oracle=True)
    _write_mapping("fields:\n  hashed_email: EMAIL\n")(world)
    failed = world.flywheel("run", "pipeline.yaml", "--skip-steps=1-4", "--yes")
    assert failed.returncode == 1 and world.failures(2) == {AFTER_4[0]: "SchemaMappingError"}
    shutil.rmtree(world.home / "data" / "er")  # the failed step left no outputs behind

    mark = world.flywheel("mark", "2", "5", "--succeeded", "--note", "INC-1: fixed", "-p", "pipeline.yaml")
    assert mark.returncode == 2 and "declared output(s) are not there" in mark.stderr

    _write_mapping(MAPPING_OK)(world)
    resumed = world.flywheel("resume", "-p", "pipeline.yaml", "--yes")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert world.executed(3) == set(AFTER_4)
    assert world.flywheel("verify", "-p", "pipeline.yaml").returncode == 0
    assert snapshot(world.home) == world.oracle
