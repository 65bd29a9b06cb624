"""The run page in a real headless Chromium (issue 17, points 3 and 4), on a laptop (1366x768, and the
1,400 px window where the last node used to be clipped) and on a phone (400 px):

- the graph is a working surface: every node is a focusable button; Enter or a click opens a side
  panel (state, attempts, the log tail, the command that reruns just that key, which really works);
  Escape closes it and gives the focus back; the contexts of a step sit in a box labelled with it;
  long names wrap instead of being cut, and the full name is in each node's <title>;
- the Gantt shows reused keys as ghost bars naming the run they come from, and a killed run's
  unfinished attempt ends where the run stopped, not at the time the page is read;
- while a slow step runs, elapsed times tick every second between the server's events.

Set FLYWHEEL_UI_SCREENSHOTS=docs/screenshots to refresh run-panel.png, run-panel-phone.png and run-resumed.png.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flywheel.journal import open_journal
from tests.conftest import REPO, Sandbox, step
from tests.support.browser import headless_chromium
from tests.ui.conftest import serve_in_subprocess
from tests.ui.test_browser import Shots

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

LONG = "create-part-addressable-ids-er-table"  # 36 characters: cut at 24 before issue 17
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 400, "height": 800}


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with headless_chromium() as browser:
        yield browser


def seven_columns(sleep_b: float = 0.0) -> list[dict[str, Any]]:
    """a → b[x], b[y] → LONG → d → e → f → g: seven columns, wider than a 1,400 px window at natural size."""
    b_params: dict[str, Any] = {"inputs": ["a"]}
    if sleep_b:
        b_params.update(sleep=sleep_b, sleep_only="b")
    steps = [step("a", 1), step("b", 2, ["a"], contexts=["x", "y"], params=b_params), step(LONG, 3, ["b"])]
    before = LONG
    for number, name in enumerate("defg", start=4):
        steps.append(step(name, number, [before]))
        before = name
    return steps


def watch_errors(page: Any) -> list[str]:
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    return problems


def seconds(text: str) -> float:
    """`6.0 s`, `850 ms`, `1 min 05 s` as seconds (the forms `flywheel.durations.duration` writes)."""
    if m := re.fullmatch(r"(\d+) ms", text):
        return int(m.group(1)) / 1000
    if m := re.fullmatch(r"([\d.]+) s", text):
        return float(m.group(1))
    m = re.fullmatch(r"(\d+) min (\d+) s", text)
    assert m, f"not a duration: {text!r}"
    return int(m.group(1)) * 60 + int(m.group(2))


READ_TICKING = """() => ({
  at: performance.now(),
  events: document.getElementById("live-events").textContent,
  took: document.getElementById("run-took").textContent,
  row: document.querySelector('#steps tr[data-key="b[x]"] [data-tick-start]').textContent,
  bar: Number(document.querySelector('#timeline g.span[data-key="b[x]"] rect').getAttribute("width")),
})"""


def read_ticking(page: Any) -> dict[str, Any]:
    """The header's "took", b[x]'s "took" and its bar's width, read at one moment with that moment."""
    return dict(page.evaluate(READ_TICKING))


def test_the_graph_opens_a_panel_per_step_whose_rerun_command_works(
    sandbox: Sandbox, chromium: Any, tmp_path: Path
) -> None:
    sandbox.write(seven_columns())
    sandbox.fail("b[y]", "the source file /data/raw/part-0007.csv is missing")
    assert sandbox.cli("run", "pipeline.yaml").returncode == 1  # run 1 fails at b[y]
    sandbox.fix("b[y]")
    assert sandbox.cli("resume", "1", "--yes", "-p", "pipeline.yaml").returncode == 0  # run 2 reuses a and b[x]
    shot = Shots(tmp_path)
    with serve_in_subprocess(sandbox) as (url, _):
        for viewport in (LAPTOP, {"width": 1400, "height": 900}, PHONE):
            page = chromium.new_page(viewport=viewport)
            problems = watch_errors(page)
            page.goto(url + "runs/1")
            where = f"at {viewport['width']} px"

            # every node is a focusable button with its full name in <title>; long names wrap, uncut
            nodes = page.locator("#graph g.node")
            assert nodes.count() == 8, where
            assert page.eval_on_selector_all(
                "#graph g.node", "els => els.every(e => e.tabIndex === 0 && e.getAttribute('role') === 'button')"
            )
            long_node = page.locator(f'#graph g.node[data-key="{LONG}"]')
            assert (long_node.locator("title").text_content() or "").startswith(f"{LONG}: not_started")
            name = "".join(t.text_content() or "" for t in long_node.locator("text").all()[:2])
            assert name == f"3 {LONG}" and "…" not in name, name

            # the two contexts of b sit inside a box labelled with the step
            group = page.locator('#graph g.group[data-step="b"]')
            assert (group.locator("text.group-label").text_content() or "").strip() == "2 b"
            box = group.locator("rect").bounding_box()
            for key in ("b[x]", "b[y]"):
                inner = page.locator(f'#graph g.node[data-key="{key}"] rect').bounding_box()
                assert box["x"] <= inner["x"] and inner["x"] + inner["width"] <= box["x"] + box["width"], where
                assert box["y"] <= inner["y"] and inner["y"] + inner["height"] <= box["y"] + box["height"], where

            # fit to width on a laptop: the whole graph (its last node too) lies inside its box
            graph = page.locator("#graph").bounding_box()
            holder = page.locator("#graph-box").bounding_box()
            last = page.locator('#graph g.node[data-key="g"] rect').bounding_box()
            if viewport is not PHONE:
                assert graph["x"] + graph["width"] <= holder["x"] + holder["width"] + 0.5, where
                assert last["x"] + last["width"] <= holder["x"] + holder["width"] + 0.5, where
                assert page.evaluate("document.getElementById('graph-box').scrollWidth") <= page.evaluate(
                    "document.getElementById('graph-box').clientWidth"
                ), where
            else:  # a phone scrolls the graph inside its box instead of shrinking the text to nothing
                assert page.evaluate("document.documentElement.scrollWidth") <= 400 + 1, "the page itself scrolls"

            # keyboard: focus the failed node, Enter opens its panel, Escape closes it and focus returns
            failed = page.locator('#graph g.node[data-key="b[y]"]')
            failed.focus()
            page.keyboard.press("Enter")
            panel = page.locator("#step-panel")
            page.wait_for_selector('#step-panel[data-key="b[y]"] .panel-body')
            assert panel.is_visible(), where
            body = panel.locator(".panel-body")
            assert body.get_attribute("data-state") == "failed"
            attempt = panel.locator(".panel-attempts tr[data-attempt='1']")
            assert attempt.get_attribute("data-outcome") == "failed"
            assert "the source file /data/raw/part-0007.csv is missing" in panel.inner_text()
            assert "/data/raw/part-0007.csv is missing" in panel.locator("pre.panel-log").inner_text()
            command = panel.locator("#rerun-command").inner_text()
            assert shlex.split(command)[:2] == ["flywheel", "run"] and "--only 'b[y]'" in command, command
            shown = panel.bounding_box()
            assert shown["x"] >= 0 and shown["x"] + shown["width"] <= viewport["width"] + 0.5, where
            if viewport is LAPTOP:
                shot(page, "run-panel.png", full_page=False)
            if viewport is PHONE:
                shot(page, "run-panel-phone.png", full_page=False)
            page.keyboard.press("Escape")
            assert panel.is_hidden()
            assert page.evaluate("document.activeElement.dataset.key") == "b[y]", "focus did not return to the node"

            # a click opens another node's panel
            page.locator('#graph g.node[data-key="a"]').click()
            page.wait_for_selector('#step-panel[data-key="a"] .panel-body[data-state="succeeded"]')
            assert "--only a " in page.locator("#rerun-command").inner_text() + " "
            page.keyboard.press("Escape")

            # the resumed run: ghost bars for what it reused, naming the run they come from
            page.goto(url + "runs/2")
            for key in ("a", "b[x]"):
                ghost = page.locator(f'#timeline g.ghost[data-key="{key}"]')
                assert ghost.get_attribute("data-source-run") == "1", where
                assert (ghost.locator("text").text_content() or "") == "reused from run 1"
                assert float(ghost.locator("rect").get_attribute("opacity") or 1) < 1
            assert page.locator('#timeline g.span:not(.ghost)[data-key="b[y]"]').get_attribute("data-state") == (
                "succeeded"
            )
            if viewport is LAPTOP:
                shot(page, "run-resumed.png")
            page.close()
            assert problems == [], where

    # the command the panel showed reruns just b[y], from another folder, with nothing else set
    words = shlex.split(command)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env["PYTHONPATH"] = str(REPO)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    argv = [sys.executable, "-m", "flywheel", *words[1:]]
    done = subprocess.run(argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sandbox.executed_in(3) == ["b[y]"]


def test_elapsed_times_tick_while_a_slow_step_runs_and_a_killed_run_ends_where_it_stopped(
    sandbox: Sandbox, chromium: Any
) -> None:
    sandbox.write(seven_columns(sleep_b=25))
    env = {**os.environ, "FLYWHEEL_HOME": str(sandbox.home), "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    runner = subprocess.Popen(
        [sys.executable, "-m", "flywheel", "run", "pipeline.yaml"],
        cwd=sandbox.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill below takes its jobs too
    )
    try:
        with serve_in_subprocess(sandbox) as (url, _):
            deadline = time.monotonic() + 30
            while "b[x]" not in sandbox.executed_in(1):  # b's two contexts have started their 25 s sleep
                assert time.monotonic() < deadline, "b never started"
                time.sleep(0.1)
            # a running local attempt has no JobRunId: its panel names the step's live process instead
            with urllib.request.urlopen(url + "runs/1/step?key=b%5Bx%5D", timeout=10) as reply:
                panel = reply.read().decode()
            shown = re.search(r"pid (\d+)", panel)
            assert shown is not None, panel
            assert int(shown.group(1)) in descendants(runner.pid), "the pid shown is not one of the run's processes"
            for viewport in (LAPTOP, PHONE):
                page = chromium.new_page(viewport=viewport)
                problems = watch_errors(page)
                page.goto(url + "runs/1")
                assert page.get_attribute("#run-page", "data-live") == "1"
                page.wait_for_selector('#steps tr[data-key="b[x]"][data-state="running"]')
                page.wait_for_function("Number(document.getElementById('live-events').textContent) >= 1")
                first = read_ticking(page)
                page.wait_for_timeout(1000)
                second = read_ticking(page)
                where = f"at {viewport['width']} px: {first} then {second}"
                assert second["events"] == first["events"], "a server event came: this is not the ticking"
                waited = (second["at"] - first["at"]) / 1000  # about 1 s; more on a busy machine
                for name in ("took", "row"):  # shown at each 1 s tick: within a tick of the time waited
                    moved = seconds(second[name]) - seconds(first[name])
                    assert moved > 0 and abs(moved - waited) <= 1.05, (name, where)
                assert second["bar"] > first["bar"], where
                page.close()
                assert problems == [], viewport
        # the runner dies (kill -9, no event); the page is read a few seconds later
        os.killpg(runner.pid, signal.SIGKILL)
        killed_at = time.time()
        runner.wait(10)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait(10)
    time.sleep(3)
    with open_journal(sandbox.home, create=False) as journal:
        last_event = journal.events(1)[-1].at
    with serve_in_subprocess(sandbox) as (url, _):
        page = chromium.new_page(viewport=LAPTOP)
        page.goto(url + "runs/1")
        assert page.get_attribute("#run-status", "data-status") == "interrupted"
        cut = page.locator('#timeline g.span[data-key="b[x]"]')
        assert cut.get_attribute("data-state") == "interrupted"
        end = float(cut.get_attribute("data-end") or 0)
        assert end <= killed_at and abs(end - last_event) < 0.01, (end, last_event, killed_at)
        assert page.locator("#timeline [data-tick-start]").count() == 0, "a stopped run does not grow"
        title = cut.locator("title").text_content() or ""
        assert "never finished" in title and seconds(title.rsplit(", ", 1)[1]) < 2.0, title
        page.close()


def descendants(root: int) -> set[int]:
    """Every process below `root`, from the parent ids in /proc: what `ps --forest` would show."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return found - {root}
