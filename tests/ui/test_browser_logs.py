"""The log viewer in a real headless Chromium: an operator opens the log of a step that is still running,
finds its error line, narrows the lines with a search, and watches a line the step writes appear, on a
laptop (1366x768) and on a 400 px phone.

Set FLYWHEEL_UI_SCREENSHOTS=docs/screenshots to refresh `log-viewer.png` and `log-viewer-phone.png`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Sandbox
from tests.support.browser import headless_chromium
from tests.ui.conftest import serve_in_subprocess
from tests.ui.test_browser import Shots

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

LINES = "els => els.map(e => Number(e.dataset.n))"
VISIBLE = "els => els.filter(e => !e.hidden).map(e => Number(e.dataset.n))"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with headless_chromium() as browser:
        yield browser


def slow_step(gate: Path) -> str:
    """A step that writes 60 lines (an ERROR at line 31, a long line at 45), then waits for `gate` to
    exist before writing its last line: the test decides when the step goes on."""
    return (
        'for i in $(seq 1 30); do echo "reading part $i of the raw files"; done;'
        ' echo "ERROR part 7 is late: retrying in 5 s";'
        ' for i in $(seq 32 44); do echo "reading part $i of the raw files"; done;'
        f' echo "s3://bucket/{"x" * 400}.parquet";'
        ' for i in $(seq 46 60); do echo "reading part $i of the raw files"; done;'
        f" while [ ! -f {gate} ]; do sleep 0.2; done;"
        ' echo "all parts read after the wait"'
    )


def start_run(sandbox: Sandbox) -> subprocess.Popen[str]:
    env = {**os.environ, "FLYWHEEL_HOME": str(sandbox.home), "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "flywheel", "run", "pipeline.yaml"],
        cwd=sandbox.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def wait_for_log(sandbox: Sandbox, lines: int) -> Path:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = list(sandbox.home.rglob("a.attempt-1.log"))
        if found and found[0].read_text().count("\n") >= lines:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"the step did not write {lines} lines within 30 s")


@pytest.mark.parametrize("width,height", [(1366, 768), (400, 800)])
def test_an_operator_reads_and_follows_the_log_of_a_running_step(
    sandbox: Sandbox, chromium: Any, tmp_path: Path, width: int, height: int
) -> None:
    gate = sandbox.home / "gate"
    sandbox.write([{"id": "a", "number": 1, "title": "A", "command": slow_step(gate)}])
    sandbox.home.mkdir(parents=True, exist_ok=True)
    run = start_run(sandbox)
    shot = Shots(tmp_path)
    try:
        wait_for_log(sandbox, 60)
        with serve_in_subprocess(sandbox) as (url, _):
            context = chromium.new_context(viewport={"width": width, "height": height})
            page = context.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)

            # from the run page's Logs section to the viewer
            page.goto(url + "runs/1")
            page.click('details.log[data-key="a"] a.log-viewer')
            page.wait_for_url("**/runs/1/logs/a.attempt-1.log/view")
            assert page.locator("#log-page").get_attribute("data-follow") == "1"
            assert page.locator("#log-follow").is_visible()

            # every line numbered as the file counts them, the error line marked in text, not colour only
            assert page.eval_on_selector_all("#log-lines .line", LINES) == list(range(1, 61))
            error = page.locator("#log-lines .line.err")
            assert error.count() == 1 and error.get_attribute("id") == "L31"
            assert error.locator(".flag").inner_text() == "ERR"
            assert error.evaluate("e => getComputedStyle(e).backgroundColor") != page.locator("#L30").evaluate(
                "e => getComputedStyle(e).backgroundColor"
            )
            page.click("#log-first-error")
            assert page.evaluate("location.hash") == "#L31"

            # no sideways scrolling of the page: the 400-character line wraps inside the viewer
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            long_line = page.locator("#L45").bounding_box()
            assert long_line is not None and long_line["height"] > 30  # wrapped over several rows

            # search narrows the lines as one types, and marks the text
            page.fill("#log-search", "PART 4")
            page.wait_for_selector("#L5", state="hidden")  # the page's CSP forbids eval: wait on the DOM
            parts_4x = [4, 40, 41, 42, 43, 44, 46, 47, 48, 49]  # "part 4", "part 40".."part 49"; 45 is the long line
            assert page.eval_on_selector_all("#log-lines .line", VISIBLE) == parts_4x
            assert page.locator("#L4 mark").inner_text() == "part 4"
            assert "10 of 60 lines match" in page.inner_text("#log-count")
            page.fill("#log-search", "")
            page.wait_for_selector("#L5", state="visible")
            assert page.eval_on_selector_all("#log-lines .line", VISIBLE) == list(range(1, 61))

            # the step goes on: its new line appears without a reload, and following stops when it ends
            page.evaluate("window.__sameDocument = true")
            gate.write_text("go")
            page.wait_for_selector("#L61", timeout=20_000)
            assert page.locator("#L61 .t").inner_text() == "all parts read after the wait"
            page.wait_for_selector('#log-page[data-finished="succeeded"]', timeout=30_000)
            assert page.evaluate("window.__sameDocument === true"), "the page reloaded instead of following"
            assert page.locator("#log-ended").inner_text() == "the step ended: succeeded"
            assert page.locator("#log-outcome .badge").inner_text() == "succeeded"
            assert not page.locator("#log-follow").is_visible()
            assert page.eval_on_selector_all("#log-lines .line", LINES) == list(range(1, 62))
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            assert page.inner_text("#log-total") == "61"
            page.evaluate("window.scrollTo(0, 0)")
            if width > 1000:
                shot(page, "log-viewer.png")
            else:
                page.fill("#log-search", "part 7")  # the search marks its text; the error line keeps its marker
                page.wait_for_selector("#L5", state="hidden")
                shot(page, "log-viewer-phone.png", full_page=False)
            assert problems == []
            context.close()
    finally:
        gate.write_text("go")
        try:
            run.wait(30)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
    assert run.returncode == 0
