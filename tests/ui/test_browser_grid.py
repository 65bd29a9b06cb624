"""The runs grid in a real headless Chromium: an on-call engineer in New York, on a laptop and on a
phone, finds the one failure nobody recovered among runs that were, and opens its failed step.

Set FLYWHEEL_UI_SCREENSHOTS=docs/screenshots to refresh the screenshots in the docs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Sandbox
from tests.support.browser import headless_chromium
from tests.ui.conftest import serve_in_subprocess
from tests.ui.test_browser import Shots

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

CELLS = "els => els.map(e => [e.dataset.key, e.dataset.state, e.querySelector('svg.icon') !== null])"
PHONE = {"width": 400, "height": 800}


def page_width(page: Any) -> int:
    """How wide the document is: wider than the screen means the page scrolls sideways."""
    return int(page.evaluate("document.documentElement.scrollWidth"))


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with headless_chromium() as browser:
        yield browser


def test_the_grid_finds_the_open_failure_and_opens_its_step_on_a_laptop_and_a_phone(
    chain: Sandbox, chromium: Any, tmp_path: Path
) -> None:
    chain.fail("b[y]")
    assert chain.cli("run", "pipeline.yaml").returncode == 1  # run 1: fails at b[y]
    chain.fix("b[y]")
    assert chain.cli("resume", "1", "--yes", "-p", "pipeline.yaml").returncode == 0  # run 2 recovers it
    chain.fail("d")
    assert chain.cli("run", "pipeline.yaml").returncode == 1  # run 3: fails at d, nobody resumed it
    shot = Shots(tmp_path)

    with serve_in_subprocess(chain, "--pipeline", "pipeline.yaml") as (url, _):
        context = chromium.new_context(viewport={"width": 1366, "height": 768}, timezone_id="America/New_York")
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(url + "runs")

        columns = page.eval_on_selector_all("#runs th.gkey", "els => els.map(e => e.dataset.key)")
        assert columns == ["a", "b[x]", "b[y]", "c", "d"]
        run3 = page.eval_on_selector_all('#runs tr[data-run="3"] .gcell[data-key]', CELLS)
        assert run3 == [
            ["a", "succeeded", True],
            ["b[x]", "succeeded", True],
            ["b[y]", "succeeded", True],
            ["c", "succeeded", True],
            ["d", "failed", True],
        ]  # every cell an SVG icon with its label: no emoji font, never colour alone
        reused = page.locator('#runs tr[data-run="2"] .gcell[data-key="a"]')
        assert reused.get_attribute("data-state") == "reused" and "from run 1" in (reused.get_attribute("title") or "")
        assert page.locator('#runs tr[data-run="1"] .recovered').inner_text() == "recovered by run 2"

        # started times in the reader's zone (New York in December: EST), UTC on hover
        started = page.locator('#runs tr[data-run="3"] time')
        assert started.inner_text().endswith(" EST")
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", started.get_attribute("title") or "")
        shot(page, "runs-grid.png")

        page.check("#attention")  # needs attention: only the open failure is left
        page.wait_for_url("**attention=1**")
        assert page.eval_on_selector_all("#runs tr[data-run]", "els => els.map(e => e.dataset.run)") == ["3"]

        page.click('#runs tr[data-run="3"] .gcell[data-key="d"]')  # the failed cell opens that step
        page.wait_for_url("**/runs/3#step-d")
        assert page.locator('#steps tr[data-key="d"]').get_attribute("data-state") == "failed"

        # on a 400 px phone the page never scrolls sideways: the grid scrolls inside its box
        page.set_viewport_size(PHONE)
        for path in ("runs", "runs/3", "incidents"):
            page.goto(url + path)
            width = page_width(page)
            assert width <= 400, f"/{path} is {width} px wide on a 400 px screen"
        page.goto(url + "runs")
        shot(page, "runs-grid-phone.png")
        assert problems == []
        context.close()


def test_a_reader_who_asks_for_less_motion_gets_no_pulsing(chain: Sandbox, chromium: Any) -> None:
    assert chain.cli("run", "pipeline.yaml").returncode == 0
    with serve_in_subprocess(chain) as (url, _):
        for motion, expected in (("no-preference", "pulse"), ("reduce", "none")):
            context = chromium.new_context(reduced_motion=motion)
            page = context.new_page()
            page.goto(url + "runs/1")
            name = page.evaluate(
                "() => { const dot = document.querySelector('#live-banner .dot');"
                " return getComputedStyle(dot).animationName; }"
            )
            assert name == expected, (motion, name)
            context.close()


def test_resume_is_the_second_choice_when_nothing_changed_and_refused_once_a_resume_of_a_resume_recovered_it(
    chain: Sandbox, chromium: Any
) -> None:
    chain.fail("b[y]")
    assert chain.cli("run", "pipeline.yaml").returncode == 1  # run 1: fails at b[y]

    with serve_in_subprocess(chain, "--pipeline", "pipeline.yaml") as (url, _):
        page = chromium.new_page(viewport={"width": 1366, "height": 768})

        # nothing changed since the failure: Resume is still offered, above the fold, but not as the answer
        page.goto(url + "runs/1")
        page.wait_for_selector("#resume-button")
        button = page.locator("#resume-button")
        assert button.get_attribute("class") == "secondary" and "anyway" in button.inner_text()
        assert "nothing changed since b[y] failed in run 1" in page.locator("#resume").inner_text()
        box = button.bounding_box()
        assert box is not None and box["y"] + box["height"] <= 768, box

        # on a phone the decision wraps: the whole button is on screen and nothing scrolls sideways
        phone = chromium.new_page(viewport=PHONE)
        phone.goto(url + "runs/1")
        phone.wait_for_selector("#resume-button")
        box = phone.locator("#resume-button").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 400, box
        assert page_width(phone) <= 400
        phone.close()

        assert chain.cli("resume", "1", "--yes", "-p", "pipeline.yaml").returncode == 1  # run 2: same error
        chain.fix("b[y]")  # the fix touches what b[y] reads: Resume is the answer again
        page.goto(url + "runs/2")
        page.wait_for_selector("#resume-button")
        assert page.locator("#resume-button").get_attribute("class") == "primary"
        assert "nothing changed" not in page.locator("#resume").inner_text()

        assert chain.cli("resume", "2", "--yes", "-p", "pipeline.yaml").returncode == 0  # run 3 recovers 2, so 1
        for run in ("1", "2"):
            page.goto(url + "runs/" + run)
            assert page.locator("#recovered").inner_text().startswith("recovered by run 3")
            assert page.locator("#resume-button").count() == 0, f"run {run} offers Resume though run 3 recovered it"
        page.close()
