"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): an operator opens the failed
run, sees which node failed, fixes the cause, clicks Resume, confirms, and watches every node finish
without reloading the page.

Set FLYWHEEL_UI_SCREENSHOTS=docs/screenshots to refresh the screenshots in the docs.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Sandbox
from tests.support.browser import headless_chromium
from tests.ui.conftest import execute, fan_out, serve_in_subprocess, write_project

GRAPH_STATES = "els => Object.fromEntries(els.map(e => [e.dataset.key, e.dataset.state]))"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium() as chromium:
        yield chromium


class Shots:
    """Screenshots into the test's folder, copied to FLYWHEEL_UI_SCREENSHOTS when it is set."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        target = os.environ.get("FLYWHEEL_UI_SCREENSHOTS")
        self.target = REPO / target if target else None  # an absolute path stays absolute

    def __call__(self, page: Any, name: str, *, full_page: bool = True) -> None:
        path = self.folder / name
        page.screenshot(path=str(path), full_page=full_page)
        if self.target is not None:
            self.target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.target / name)


@pytest.mark.browser
@pytest.mark.e2e
def test_an_operator_resumes_a_failed_run_and_watches_it_finish(sandbox: Sandbox, browser: Any, tmp_path: Path) -> None:
    sandbox.write(fan_out(sleep=1.0))
    write_project(sandbox)
    sandbox.fail("b[y]", "the source file /data/raw/part-0007.csv is missing")
    assert execute(sandbox) == 1
    shot = Shots(tmp_path)
    with serve_in_subprocess(sandbox) as (url, _):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)

        page.goto(url + "runs")
        row = page.locator('#runs tr[data-run="1"]')
        assert row.get_attribute("data-status") == "failed" and row.locator(".badge").inner_text() == "failed"

        # the failed run: the failed node is marked failed, the rest succeeded or not executed
        row.locator("a").first.click()
        page.wait_for_url("**/runs/1")
        graph = page.eval_on_selector_all("#graph g.node", GRAPH_STATES)
        assert graph == {"a": "succeeded", "b[x]": "succeeded", "b[y]": "failed", "c": "not_started"}
        failed = page.locator('#graph g.node[data-key="b[y]"]')
        assert failed.is_visible()
        assert failed.locator("rect").evaluate("e => getComputedStyle(e).fill") == "rgb(251, 213, 213)"
        failed_icon = page.locator('#steps tr[data-key="b[y]"] .sym svg.icon')  # drawn, so no emoji font needed
        assert failed_icon.get_attribute("aria-label") == "failed" and failed_icon.bounding_box()["width"] == 16
        assert page.locator('#steps tr[data-key="c"] .sym svg.icon').get_attribute("aria-label") == "not executed"
        failure = page.locator('.failure[data-key="b[y]"]')
        assert failure.locator(".cause").inner_text() == "data"
        assert "Re-deliver the source file" in failure.locator(".hint").inner_text()
        page.wait_for_selector("#plan")  # the resume plan comes after the page
        assert page.locator('#plan tr[data-key="b[y]"]').get_attribute("data-action") == "run"
        assert page.locator('#plan tr[data-key="a"]').get_attribute("data-action") == "reuse"
        page.wait_for_selector('#incident-box[data-loaded="1"] .incident[data-status="open"]')
        shot(page, "failed-run.png")

        # on a 1366x768 laptop the decision is above the fold: what failed, why, and Resume
        page.set_viewport_size({"width": 1366, "height": 768})
        page.evaluate("window.scrollTo(0, 0)")
        for selector in ('#decision .decision-failure[data-key="b[y]"]', "#resume-button"):
            box = page.locator(selector).bounding_box()
            assert box is not None and box["y"] + box["height"] <= 768, f"{selector} is below the fold: {box}"
        assert "Re-deliver the source file" in page.locator("#decision").inner_text()
        page.set_viewport_size({"width": 1280, "height": 900})

        # fix the cause, then Resume and confirm
        sandbox.fix("b[y]")
        page.click("#resume-button")
        dialog = page.locator("#resume-dialog")
        assert dialog.is_visible() and "reruns 2 unit(s) of work and reuses 2" in dialog.inner_text()
        shot(page, "resume-dialog.png", full_page=False)
        page.click("#resume-confirm")
        page.wait_for_url("**/runs/2", timeout=30_000)
        page.evaluate("window.__sameDocument = true")
        live = page.get_attribute("#run-page", "data-live")
        assert live == "1", "the resumed run had finished before its page opened"
        assert page.locator("#live-banner").is_visible()

        # every node finishes through the live updates, in the same document
        page.wait_for_selector('#run-page[data-finished="succeeded"]', timeout=40_000)
        assert page.evaluate("window.__sameDocument === true"), "the page reloaded instead of updating"
        assert int(page.inner_text("#live-events")) >= 2
        graph = page.eval_on_selector_all("#graph g.node", GRAPH_STATES)
        assert graph == {"a": "reused", "b[x]": "reused", "b[y]": "succeeded", "c": "succeeded"}
        assert page.locator("#run-status").get_attribute("data-status") == "succeeded"
        assert page.locator("#run-status .badge").inner_text() == "succeeded"
        assert page.locator('#steps tr[data-key="c"]').get_attribute("data-state") == "succeeded"
        log = page.locator('details.log[data-key="c"]')  # created by the live tail: c had not started yet
        assert "tiny run 2 c attempt 1" in log.locator("pre").inner_text()
        assert log.locator(".outcome .badge").inner_text() == "succeeded"
        assert log.locator("a.log-viewer").get_attribute("href") == "/runs/2/logs/c.attempt-1.log/view"
        page.click("#done-banner a")  # reload: the incident it closed and the time saved
        page.wait_for_selector('.incident[data-status="resolved"]')
        assert page.evaluate("window.__sameDocument === undefined")
        shot(page, "resumed-run.png")
        page.goto(url + "runs")
        assert page.locator('#runs tr[data-run="2"]').get_attribute("data-status") == "succeeded"
        shot(page, "runs.png")

        # the incident closed by the resume, and the patterns
        page.goto(url + "incidents")
        incident = page.locator('#incidents tr[data-incident="1"]')
        assert incident.get_attribute("data-status") == "resolved"
        shot(page, "incidents.png")
        page.goto(url + "incidents/1")
        page.fill("#note-cause", "the vendor delivered part 7 late")
        page.fill("#note-fix", "asked the vendor to resend part 7")
        page.click("#note-form button[type=submit]")
        page.wait_for_selector("table.notes")
        assert "asked the vendor to resend part 7" in page.locator("table.notes").inner_text()
        shot(page, "incident.png")
        page.goto(url + "incidents/report?since=all")
        assert page.locator('.kpi[data-kpi="incidents"] b').inner_text() == "1"
        shot(page, "patterns.png")
        page.close()
        assert problems == []
    assert sandbox.executed_in(2) == ["b[y]", "c"]
