"""docs/recovery.md is a story this test tells: every command in it runs, in order, against a demo home.

The demo is the runbook's step-5 failure on db-refresh (an invalid match-key type in the ER schema
mapping). The test reads the fenced `bash` commands from the page and runs them; the page and the
test's list of expectations must agree command for command, so a command added to the page without
being exercised fails here. Commands quoted inline in the prose must be ones the page runs (same
subcommand, known options).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability.support import REPO, events

pytestmark = pytest.mark.e2e

DOC = REPO / "docs" / "recovery.md"
FENCED = re.compile(r"```bash\n(.*?)```", re.DOTALL)
INLINE = re.compile(r"`(flywheel [^`]+)`")


def fenced_commands(text: str) -> list[str]:
    return [
        line.strip()
        for block in FENCED.findall(text)
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _options(command: str) -> tuple[str, set[str]]:
    words = shlex.split(command)
    return words[1], {w.split("=")[0] for w in words[2:] if w.startswith("--")}


class Demo:
    def __init__(self, home: Path) -> None:
        self.home = home

    def flywheel(self, command: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "FLYWHEEL_HOME": str(self.home), "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
        env.pop("FLYWHEEL_ENV", None)
        words = shlex.split(command)
        assert words[0] == "flywheel", command
        return subprocess.run(
            [sys.executable, "-m", "flywheel", *words[1:]],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.home.parent,
            timeout=300,
        )

    def mapping(self, field_type: str) -> None:
        config = self.home / "data" / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "er-schema-mapping.yaml").write_text(f"fields:\n  hashed_email: {field_type}\n")

    def executed(self, run_id: int) -> list[str]:
        return sorted(str(e.key) for e in events(self.home)[run_id] if e.kind.value == "step_started")


Check = Callable[[Demo, subprocess.CompletedProcess[str]], None]


def _failed_step_shown(demo: Demo, out: subprocess.CompletedProcess[str]) -> None:
    assert "create-part-addressable-ids-er-table failed: SchemaMappingError" in out.stdout
    assert "flywheel resume 1" in out.stdout


def _log_shown(demo: Demo, out: subprocess.CompletedProcess[str]) -> None:
    assert "did you mean EMAIL_ADDRESS?" in out.stdout


def _fix_then_nothing_recorded(demo: Demo, out: subprocess.CompletedProcess[str]) -> None:
    assert "works on the current inputs" in out.stdout and "nothing was recorded" in out.stdout
    assert not (demo.home / "data" / "er").exists(), "try wrote into the real outputs"
    assert list(events(demo.home)) == [1]


def _plan_explained(demo: Demo, out: subprocess.CompletedProcess[str]) -> None:
    assert "failed in run 1: SchemaMappingError" in out.stdout and "time saved" in out.stdout


def _minimal_work(demo: Demo, out: subprocess.CompletedProcess[str]) -> None:
    assert demo.executed(2) == [
        "create-part-addressable-ids-er-table",
        "generate-cleanrooms-report",
        "generate-data-monitor-report",
    ]


def _verified(demo: Demo, out: subprocess.CompletedProcess[str]) -> None:
    assert "all outputs verified" in out.stdout


def _kept(demo: Demo, out: subprocess.CompletedProcess[str]) -> None:
    assert "plan (dry run" in out.stdout


def _only_reuses_nothing_downstream(demo: Demo, out: subprocess.CompletedProcess[str]) -> None:
    """The page's claim: the downstream of `--only` is left not executed, never reused, all the way down."""
    rows = {line.split()[1]: line for line in out.stdout.splitlines() if line[:1].isdigit()}
    assert "▶ run" in rows["register-part-tables[addressable_ids]"]
    assert "reuse" in rows["register-part-tables[infobase_attributes]"]
    for step in ("prepare-part-tables", *_AFTER_4):
        assert "skip" in rows[step] and "not selected" in rows[step], rows[step]


_AFTER_4 = ("create-part-addressable-ids-er-table", "generate-data-monitor-report", "generate-cleanrooms-report")


def _marked(demo: Demo, out: subprocess.CompletedProcess[str]) -> None:
    assert "marked succeeded in run 1" in out.stdout


# (command, exit code, check, what the operator does after it)
STORY: list[tuple[str, int, Check | None, Callable[[Demo], None] | None]] = [
    ("flywheel status", 0, _failed_step_shown, None),
    ("flywheel logs 1 --step 5", 0, _log_shown, None),
    ("flywheel steps", 0, None, lambda demo: demo.mapping("EMAIL_ADDRESS")),  # the fix
    ("flywheel try create-part-addressable-ids-er-table", 0, _fix_then_nothing_recorded, None),
    ("flywheel resume --dry-run", 0, _plan_explained, None),
    ("flywheel resume 1 --set create-part-addressable-ids-er-table.timeout=2h --dry-run", 0, _kept, None),
    ('flywheel resume 1 --reuse-stale --note "INC-4711: comment-only change in engine.py" --dry-run', 0, _kept, None),
    ("flywheel run --only 'register-part-tables[addressable_ids]' --dry-run", 0, _only_reuses_nothing_downstream, None),
    ("flywheel resume", 0, _minimal_work, None),
    ("flywheel verify", 0, _verified, None),
    (
        'flywheel mark 1 create-part-addressable-ids-er-table --succeeded --note "INC-4711: ER table rebuilt by hand"',
        0,
        _marked,
        None,
    ),
    ("flywheel runs", 0, None, None),
    ("flywheel run --dry-run", 0, _kept, None),
]


def test_the_page_and_the_story_list_the_same_commands_in_the_same_order() -> None:
    assert fenced_commands(DOC.read_text()) == [command for command, *_ in STORY]


def test_every_command_quoted_in_the_prose_is_one_the_page_runs() -> None:
    text = DOC.read_text()
    runs: dict[str, set[str]] = {}
    for command in fenced_commands(text):
        sub, options = _options(command)
        runs.setdefault(sub, set()).update(options)
    for quoted in INLINE.findall(text):
        sub, options = _options(quoted.replace("RUN", "1").replace("STEP[CONTEXT]", "5"))
        assert sub in runs, f"`{quoted}` is quoted but no command of the page runs `flywheel {sub}`"
        assert options <= runs[sub], f"`{quoted}` uses options the page never runs: {options - runs[sub]}"


def test_every_command_of_the_recovery_page_works_as_it_says(tmp_path: Path) -> None:
    demo = Demo(tmp_path / "home")
    assert demo.flywheel("flywheel data generate --rows 400 --seed 3").returncode == 0
    demo.mapping("EMAIL")  # the cause: not a valid Entity Resolution type
    failed = demo.flywheel("flywheel run")
    assert failed.returncode == 1, failed.stdout + failed.stderr

    for command, code, check, then in STORY:
        result = demo.flywheel(command)
        assert result.returncode == code, f"{command}:\n{result.stdout}\n{result.stderr}"
        if check is not None:
            check(demo, result)
        if then is not None:
            then(demo)
