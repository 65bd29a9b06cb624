"""`flywheel run` in a terminal draws the run live; piped, it prints one plain line per step event.

The terminal case runs the real CLI under a pseudo-terminal and reads what the operator's screen got.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

from tests.conftest import REPO, SHAPES, Sandbox

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
KEYS = ("a", "b", "c[x]", "c[y]", "d", "e")


def in_a_terminal(sandbox: Sandbox, *args: str) -> tuple[int, str]:
    """Run `flywheel ARGS` with a pseudo-terminal as its stdout and stderr; its exit code and screen text."""
    env = {**os.environ, "FLYWHEEL_HOME": str(sandbox.home), "PYTHONPATH": str(REPO), "TERM": "xterm"}
    env.update(COLUMNS="120", LINES="60")
    main, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "flywheel", *args],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        cwd=sandbox.root,
        env=env,
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal's other side closed: the process is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    code = process.wait(timeout=60)
    return code, ESCAPE.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r", "")


def test_a_run_in_a_terminal_is_drawn_live_and_its_last_frame_shows_every_step_done(sandbox: Sandbox) -> None:
    sandbox.write(SHAPES["fan-out-join"])
    code, screen = in_a_terminal(sandbox, "run", "pipeline.yaml")
    assert code == 0, screen

    # frames carry the elapsed time in their header; the plain progress lines are not printed
    frames = re.split(r"run 1  tiny · local · (?:running|succeeded) · [\d.]+ m?s\n", screen)
    assert len(frames) > 2, screen
    assert "  ▶ 1 a started" not in screen
    assert re.search(r"🔄 \d [a-e]\S* +\d+ ms  attempt 1, running since", screen), "no frame showed a step running"
    assert "waiting" in frames[1]  # the first frame: nothing has run yet

    last = frames[-1].split("\nrun 1  tiny · local · succeeded\n")[0]  # then comes the final status
    for key in KEYS:
        assert re.search(rf"✅ \d {re.escape(key)} .*succeeded", last), (key, last)
    assert "waiting" not in last and "🔄" not in last

    final = screen.split("\nrun 1  tiny · local · succeeded\n")[-1]
    for key in KEYS:
        assert re.search(rf"✅ \d {re.escape(key)} .*succeeded", final), (key, final)


def test_a_piped_run_prints_plain_lines(sandbox: Sandbox) -> None:
    sandbox.write(SHAPES["linear"])
    result = sandbox.cli("run", "pipeline.yaml")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    started = lines.index("run 1 started")
    assert lines[started + 1] == "  ▶ 1 a started"
    assert re.fullmatch(r"  ✅ 1 a succeeded in \d+ ms", lines[started + 2])
    assert lines[started + 7] == "run 1 succeeded"
    assert "\x1b[" not in result.stdout  # no cursor movement in a log
