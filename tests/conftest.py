"""Shared fixtures: tiny real pipelines in temporary folders, each with its own flywheel home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def step(
    step_id: str,
    number: int,
    depends_on: Sequence[str] = (),
    contexts: Sequence[str] = (),
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": step_id,
        "number": number,
        "title": step_id.upper(),
        "job": "tests.support.jobs:record",
        "depends_on": list(depends_on),
        "params": {"inputs": list(depends_on)},
    }
    if contexts:
        body["contexts"] = {c: {} for c in contexts}
    body.update(extra)
    return body


SHAPES: Mapping[str, list[dict[str, Any]]] = {
    "linear": [step("a", 1), step("b", 2, ["a"]), step("c", 3, ["b"])],
    "diamond": [step("a", 1), step("b", 2, ["a"]), step("c", 3, ["a"]), step("d", 4, ["b", "c"])],
    "parallel-pair": [step("a", 1), step("b", 2)],
    "fan-out": [step("a", 1), step("b", 2, ["a"], contexts=["x", "y", "z"])],
    "fan-out-join": [
        step("a", 1),
        step("b", 2),
        step("c", 3, ["a", "b"], contexts=["x", "y"]),
        step("d", 4, ["c"]),
        step("e", 5, ["d"]),
    ],
}


@dataclass
class Sandbox:
    """A pipeline folder and a flywheel home: everything one test's runs touch."""

    root: Path
    home: Path

    @property
    def pipeline(self) -> Path:
        return self.root / "pipeline.yaml"

    def write(self, steps: list[dict[str, Any]], name: str = "tiny", **top: Any) -> Path:
        body = {
            "pipeline": name,
            "params": {
                "record_file": "{home}/record.txt",
                "faults": "{home}/faults",
                "out": "{home}/out",
            },
            "steps": steps,
            **top,
        }
        self.pipeline.write_text(yaml.safe_dump(body, sort_keys=False))
        return self.pipeline

    def fail(self, key: str, message: str = "") -> None:
        faults = self.home / "faults"
        faults.mkdir(parents=True, exist_ok=True)
        (faults / key).write_text(message or f"injected failure in {key}")

    def fix(self, key: str) -> None:
        (self.home / "faults" / key).unlink()

    def executions(self) -> list[tuple[int, str]]:
        path = self.home / "record.txt"
        if not path.exists():
            return []
        return [(int(r), k) for r, k in (line.split(" ", 1) for line in path.read_text().splitlines())]

    def executed_in(self, run_id: int) -> list[str]:
        return sorted(k for r, k in self.executions() if r == run_id)

    def outputs(self) -> dict[str, str]:
        out = self.home / "out"
        return {p.name: p.read_text() for p in sorted(out.glob("*.txt"))} if out.exists() else {}

    def cli(self, *args: str, check: bool = False, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "FLYWHEEL_HOME": str(self.home), "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
        env.pop("FLYWHEEL_ENV", None)
        result = subprocess.run(
            [sys.executable, "-m", "flywheel", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.root,
            timeout=timeout,
            **kw,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"flywheel {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def json(self, *args: str) -> Any:
        """Run a `--json` command that must succeed, and parse what it printed."""
        result = self.cli(*args, "--json")
        assert result.returncode == 0, (
            f"flywheel {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
        return json.loads(result.stdout)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    root = tmp_path / "project"
    root.mkdir()
    home = tmp_path / "home"
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    monkeypatch.delenv("FLYWHEEL_ENV", raising=False)
    monkeypatch.delenv("FLYWHEEL_PIPELINE", raising=False)
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", f"{REPO}{os.pathsep}{path}" if path else str(REPO))
    yield Sandbox(root=root, home=home)


@pytest.fixture
def chain(sandbox: Sandbox) -> Sandbox:
    """a -> b[x], b[y] -> c -> d, every output declared: the runbook's shape in small (a step with two
    contexts between plain ones), for stories told through the real CLI."""
    sandbox.write(
        [
            step("a", 1, outputs=["{out}/a.txt"]),
            step("b", 2, ["a"], contexts=["x", "y"], outputs=["{out}/b[{context}].txt"]),
            step("c", 3, ["b"], outputs=["{out}/c.txt"]),
            step("d", 4, ["c"], outputs=["{out}/d.txt"]),
        ]
    )
    return sandbox


# Tiers: the fast tier (`make unit`) is pure code: planner, spec, journal, events, export, classification.
# Anything that runs real jobs on data, a real server (moto, HTTP, SMTP) or pipelines in subprocesses
# is end-to-end, whatever file it lives in.
_E2E_FIXTURES = frozenset(
    {"sandbox", "aws", "moto_server", "lake", "split_lake", "fresh_lake", "hooks", "inbox", "world"}
)
_E2E_FOLDERS = ("db_refresh", "reliability", "ui")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        uses = set(getattr(item, "fixturenames", ()))
        if (folder in _E2E_FOLDERS or uses & _E2E_FIXTURES) and "slow" not in item.keywords:
            item.add_marker(pytest.mark.e2e)
