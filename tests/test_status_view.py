"""`flywheel status` after a real failure: the run as a tree an operator reads top to bottom.

Steps in operator order, the ones that run side by side under `in parallel`, a fanned-out step with one
row per context, each row with its state, duration and detail; the failed context's error, and the
command that resumes the run. After the resume, the reused steps name the run they came from.
"""

from __future__ import annotations

import re

from tests.conftest import SHAPES, Sandbox

DURATION = re.compile(r"\d+ ms|\d+\.\d s")


def row(text: str, label: str) -> str:
    """The one line of the tree whose step label is `label`."""
    found = [line for line in text.splitlines() if re.search(rf" \d {re.escape(label)}( |$)", line)]
    assert len(found) == 1, (label, text)
    return found[0]


def test_status_of_a_failed_run_is_a_tree_with_the_error_and_the_resume_command(sandbox: Sandbox) -> None:
    sandbox.write(SHAPES["fan-out-join"])  # a, b in parallel; c over contexts x and y; then d, e
    sandbox.fail("c[y]", "SchemaMappingError: invalid match key type EMAIL")
    assert sandbox.cli("run", "pipeline.yaml").returncode == 1

    status = sandbox.cli("status", "-p", "pipeline.yaml")
    assert status.returncode == 0, status.stderr
    out = status.stdout
    lines = out.splitlines()
    assert lines[0] == "run 1  tiny · local · failed"

    # a and b ran side by side: they hang under one `in parallel` node
    parallel = lines.index("├── in parallel")
    assert lines[parallel + 1].startswith("│   ├── ✅ 1 a ") and lines[parallel + 2].startswith("│   └── ✅ 2 b ")
    for label in ("a", "b", "c[x]", "c[y]"):
        assert DURATION.search(row(out, label)), row(out, label)

    # the fanned-out step shows the worst of its contexts, and one row per context beneath it
    assert row(out, "c").startswith("├── ❌ 3 c ") and row(out, "c").endswith("2 contexts: 1 succeeded, 1 failed")
    assert row(out, "c[x]").startswith("│   ├── ✅ 3 c[x]") and row(out, "c[x]").endswith("succeeded")
    failed = row(out, "c[y]")
    assert failed.startswith("│   └── ❌ 3 c[y]")
    assert failed.endswith("failed; InjectedFault: SchemaMappingError: invalid match key type EMAIL")
    assert row(out, "d").startswith("├── ⏸️ 4 d") and row(out, "d").endswith("not executed")
    assert row(out, "e").startswith("└── ⏸️ 5 e") and row(out, "e").endswith("not executed")

    # under the tree: the error in full with its log, then the exact command that continues the run
    assert "❌ c[y] failed: InjectedFault: SchemaMappingError: invalid match key type EMAIL" in out
    assert re.search(r"log: .*c\[y\]\.attempt-1\.log", out)
    assert "to continue after fixing the cause:  flywheel resume 1" in out
    assert "to preview first:                    flywheel resume 1 --dry-run" in out

    sandbox.fix("c[y]")
    assert sandbox.cli("resume", "1").returncode == 0
    resumed = sandbox.cli("status", "2", "-p", "pipeline.yaml").stdout
    assert resumed.splitlines()[0] == "run 2  tiny · local · succeeded"
    for label in ("a", "b", "c[x]"):
        assert re.search(r"⏭ .*reused from run 1$", row(resumed, label)), row(resumed, label)
    assert row(resumed, "c").endswith("2 contexts: 1 reused, 1 succeeded")
    for label in ("c[y]", "d", "e"):
        assert "✅" in row(resumed, label) and row(resumed, label).endswith("succeeded")
    assert "flywheel resume" not in resumed
