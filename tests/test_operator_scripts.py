"""The runbook's scripts still work, and the runbook's typing mistakes no longer rerun hours of work."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e


def script(name: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLYWHEEL_HOME": str(home), "NO_COLOR": "1"}
    return subprocess.run(
        [str(REPO / "scripts" / name), *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_dev_script_dry_run_plans_all_seven_steps_in_dev(tmp_path: Path) -> None:
    result = script("run-dev-db-refresh.sh", "--dry-run", "--json", home=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["env"] == "dev" and len(plan["to_run"]) == 8  # 7 steps, step 3 twice


@pytest.mark.parametrize("typed", [["--skip-steps=1,2,3"], ["--skip-steps", "1,2,3"], ["--skip-steps=1, 2, 3"]])
def test_every_way_of_typing_skip_steps_is_understood_and_refused_without_a_success_to_reuse(
    tmp_path: Path, typed: list[str]
) -> None:
    result = script("run-dev-db-refresh.sh", *typed, "--dry-run", home=tmp_path)
    assert result.returncode == 2
    assert "cannot skip addressable-split-and-part: no successful run" in result.stderr
    assert "Traceback" not in result.stderr


def test_prod_script_wants_a_note_for_skips_and_a_confirmation(tmp_path: Path) -> None:
    noted = script("run-prod-db-refresh.sh", "--skip-steps=1,2,3", home=tmp_path)
    assert noted.returncode == 2 and "need --note" in noted.stderr
    unconfirmed = script("run-prod-db-refresh.sh", home=tmp_path)
    assert unconfirmed.returncode == 2 and "needs confirmation" in unconfirmed.stderr
    assert "add --yes" in unconfirmed.stderr
