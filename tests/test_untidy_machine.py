"""An untidy machine: bad definitions, bad values, odd homes. Each ends in a clear error, never a traceback.

Every case: a message naming the problem and the fix, exit 2 (usage or definition) or 3 (environment),
no Python traceback, and nothing journaled or lost.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import Sandbox, step

pytestmark = pytest.mark.e2e


def clean_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    assert "fix:" in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in:\n{result.stderr}"


@pytest.fixture
def tiny(sandbox: Sandbox) -> Sandbox:
    sandbox.write([step("a", 1, outputs=["{out}/a.txt"]), step("b", 2, ["a"], outputs=["{out}/b.txt"])])
    return sandbox


def test_a_definition_with_one_byte_that_is_not_utf8_names_the_byte(tiny: Sandbox) -> None:
    text = tiny.pipeline.read_bytes()
    at = text.index(b"title")
    tiny.pipeline.write_bytes(text[:at] + b"\xe9" + text[at:])  # a Latin-1 "é" pasted in
    clean_error(tiny.cli("validate", "pipeline.yaml"), 2, f"not UTF-8 at byte {at}", "save the file as UTF-8")
    clean_error(tiny.cli("run", "pipeline.yaml"), 2, f"not UTF-8 at byte {at}")
    assert not (tiny.home / "journal.sqlite").exists()


def test_a_key_written_twice_is_rejected_with_both_lines(tiny: Sandbox) -> None:
    lines = tiny.pipeline.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("pipeline:"))
    lines.insert(first + 1, "pipeline: other")  # the second would silently win
    tiny.pipeline.write_text("\n".join(lines) + "\n")
    clean_error(
        tiny.cli("validate", "pipeline.yaml"),
        2,
        f"pipeline: written twice, on lines {first + 1} and {first + 2}",
    )


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("a.memory=lots", "'lots' is not a valid memory"),
        ("a.timeout=0", "a timeout must be longer than 0"),
        ("a.workers=-5", "'-5' is not a valid workers"),
        ("a.threads=many", "'many' is not a valid threads"),
        ("a.worker_type=huge", "'huge' is not a valid worker_type"),
        ("nope.timeout=1h", "--set names unknown step 'nope'"),
    ],
)
def test_a_bad_set_value_is_refused_before_anything_runs(tiny: Sandbox, setting: str, named: str) -> None:
    clean_error(tiny.cli("run", "pipeline.yaml", "--set", setting), 2, named)
    assert tiny.executions() == []
    assert not (tiny.home / "journal.sqlite").exists()
