"""HTML reports are self-contained pages that say what happened; a real headless Chromium renders them
and the failed step's state is read from the rendered DOM."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flywheel import api
from flywheel.incidents import incidents, note_incident, summarize
from flywheel.planner import Mode, PlanRequest
from flywheel.reports import incidents_report
from flywheel.reports.run_report import render_run_report
from tests.conftest import Sandbox, step
from tests.support.browser import headless_chromium

CAUSES = [{"match": "source file .* is missing", "cause": "data", "hint": "Re-deliver the source file, then resume."}]


def fan_out() -> list[dict[str, Any]]:
    return [step("a", 1), step("b", 2, ["a"], contexts=["x", "y"], causes=CAUSES), step("c", 3, ["b"])]


@pytest.fixture
def failed_and_resumed(sandbox: Sandbox) -> Sandbox:
    """Run 1 fails at b[y] (subprocess steps, so there are log files); run 2 resumes it after the fix."""
    sandbox.write(fan_out())
    env = {"executor": "subprocess", "max_parallel": 2}
    (sandbox.root / "project.yaml").write_text(yaml.safe_dump({"environments": {"local": env}}))
    session = api.open_session(str(sandbox.pipeline), home=sandbox.home)
    sandbox.fail("b[y]", "the source file /data/raw/<ids>.csv is missing")
    api.execute(session, PlanRequest())
    with session.journal() as journal:
        note_incident(journal, session.spec, 1, cause="late <vendor>", fix="resent", category=None, user="ann@h")
    sandbox.fix("b[y]")
    api.execute(session, PlanRequest(mode=Mode.RESUME))
    return sandbox


def render(sandbox: Sandbox, run_id: int) -> str:
    session = api.open_session(str(sandbox.pipeline), home=sandbox.home)
    with session.journal() as journal:
        return render_run_report(journal, session.spec, run_id)


def assert_self_contained(page: str) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "a report must not load anything"
    assert "@import" not in page and "url(" not in page


def test_the_report_of_a_failed_run_shows_its_graph_timeline_incident_and_logs(failed_and_resumed: Sandbox) -> None:
    page = render(failed_and_resumed, 1)
    assert_self_contained(page)
    assert 'class="node state-failed" data-key="b[y]" data-state="failed"' in page
    assert 'data-key="b[x]" data-state="succeeded"' in page and 'data-key="c" data-state="not_started"' in page
    assert 'class="span state-failed" data-key="b[y]" data-attempt="1"' in page
    assert "incident 1" in page and "Re-deliver the source file" in page and "resent" in page
    assert "late &lt;vendor&gt;" in page and "&lt;ids&gt;.csv is missing" in page  # escaped, never markup
    assert '<span class="err">ERROR InjectedFault: the source file /data/raw/&lt;ids&gt;.csv is missing</span>' in page
    assert "flywheel resume 1" in page


def test_the_report_of_the_resume_shows_the_reused_steps_and_the_time_saved(failed_and_resumed: Sandbox) -> None:
    page = render(failed_and_resumed, 2)
    assert_self_contained(page)
    assert 'data-key="a" data-state="reused"' in page and 'data-key="b[y]" data-state="succeeded"' in page
    assert 'id="time-saved"' in page and "by reusing 2 finished step(s)" in page
    assert "closed by run 2 (resolved)" in page


def test_the_incidents_report_in_every_format(failed_and_resumed: Sandbox) -> None:
    session = api.open_session(str(failed_and_resumed.pipeline), home=failed_and_resumed.home)
    with session.journal() as journal:
        summary = summarize(incidents(journal, session.spec))
    page = incidents_report.to_html(summary)
    assert_self_contained(page)
    assert 'data-incident="1" data-status="resolved"' in page and 'data-label="b[y]"' in page
    assert '"count": 1' in incidents_report.to_json(summary)
    header, row = incidents_report.to_csv(summary).splitlines()
    assert header.split(",")[:4] == ["id", "pipeline", "env", "status"] and row.startswith("1,tiny,local,resolved")


@pytest.mark.e2e
def test_report_and_incidents_report_commands_write_files(failed_and_resumed: Sandbox) -> None:
    out = failed_and_resumed.cli("report", "1", check=True).stdout
    written = failed_and_resumed.home / "reports" / "run-1.html"
    assert str(written) in out and 'data-state="failed"' in written.read_text()
    target = failed_and_resumed.root / "patterns.html"
    failed_and_resumed.cli("incidents", "report", "--format", "html", "--output", str(target), check=True)
    assert "Failures by step" in target.read_text()
    assert failed_and_resumed.cli("report", "42").returncode == 2


# ---------------------------------------------------------------------------------------------
# a real browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium() as chromium:
        yield chromium


@pytest.mark.browser
def test_chromium_renders_the_failed_step_as_failed(failed_and_resumed: Sandbox, browser: Any, tmp_path: Path) -> None:
    path = tmp_path / "run-1.html"
    path.write_text(render(failed_and_resumed, 1))
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri())

    node = page.locator('#graph g.node[data-key="b[y]"]')
    assert node.is_visible() and node.get_attribute("data-state") == "failed"
    assert node.locator("rect").evaluate("e => getComputedStyle(e).fill") == "rgb(251, 213, 213)"
    assert (node.locator("text.sub").text_content() or "").startswith("failed")
    assert node.locator("text").first.text_content() == "2 [y]"  # the step's name labels its group
    assert node.get_attribute("role") is None and node.get_attribute("tabindex") is None  # no script answers here
    assert page.locator('#graph g.node[data-key="b[x]"]').get_attribute("data-state") == "succeeded"
    row = page.locator('#steps tr[data-key="b[y]"]')
    assert row.locator(".badge").inner_text() == "failed"
    assert page.locator('#timeline g.span[data-key="b[y]"]').get_attribute("data-state") == "failed"
    log = page.locator('details.log[data-key="b[y]"]')
    assert log.get_attribute("open") is not None and "ids&gt;" not in log.inner_text()
    assert "/data/raw/<ids>.csv is missing" in log.locator(".err").inner_text()
    assert page.locator(".incident .cause").inner_text() == "data"
    assert requests == [path.as_uri()]  # nothing else was fetched
    page.close()


@pytest.mark.browser
def test_chromium_renders_the_incidents_report(failed_and_resumed: Sandbox, browser: Any, tmp_path: Path) -> None:
    session = api.open_session(str(failed_and_resumed.pipeline), home=failed_and_resumed.home)
    with session.journal() as journal:
        summary = summarize(incidents(journal, session.spec))
    path = tmp_path / "incidents.html"
    path.write_text(incidents_report.to_html(summary))
    page = browser.new_page()
    page.goto(path.as_uri())
    assert page.locator('.kpi[data-kpi="incidents"] b').inner_text() == "1"
    assert page.locator('tr[data-incident="1"] .badge').inner_text() == "resolved"
    bar = page.locator('g.bar[data-label="b[y]"] rect')
    assert bar.is_visible() and float(bar.get_attribute("width") or 0) > 100
    page.close()


def test_an_attempt_cut_off_by_a_dead_runner_ends_where_the_run_stopped_not_now() -> None:
    """A runner that died as step b started, looked at 2 min 39 s later: b ends at the last event, not now."""
    from flywheel.events import RunStarted, StepStarted, StepSucceeded
    from flywheel.reports.run_charts import attempts, timeline_svg
    from flywheel.spec import PipelineSpec
    from flywheel.state import as_crashed, fold

    spec = PipelineSpec.model_validate(
        {"pipeline": "p", "steps": [{"id": "a", "number": 1, "title": "A", "job": "m:f"},
                                    {"id": "b", "number": 2, "title": "B", "job": "m:f", "depends_on": ["a"]}]}
    )  # fmt: skip
    events = [
        RunStarted(run_id=1, at=1000.0, pipeline="p", env="local"),
        StepStarted(run_id=1, at=1000.0, step="a", context=None),
        StepSucceeded(run_id=1, at=1002.0, step="a", context=None, duration=2.0),
        StepStarted(run_id=1, at=1002.0, step="b", context=None),
    ]
    state = as_crashed(fold(1, events))
    svg = timeline_svg(spec, state, attempts(events, state), now=1000.0 + 159)
    tip = re.search(r"<title>(b attempt 1: [^<]*)</title>", svg)
    assert tip is not None and tip.group(1).endswith(", 0 ms"), svg
