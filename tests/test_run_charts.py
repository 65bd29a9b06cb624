"""The run's graph and Gantt as SVG, checked without a browser (issue 17, points 3 and 4).

Histories are written by hand, so the expected bars come from the events, not from the drawing code:
a resumed run that reused `a` (5 s in run 1), a retried `c`, a runner that died, a run still running.
"""

from __future__ import annotations

import re
from xml.etree import ElementTree

from flywheel.events import (
    Event,
    RunFinished,
    RunStarted,
    StepFailed,
    StepReused,
    StepStarted,
    StepSucceeded,
)
from flywheel.reports.run_charts import attempts, graph_svg, timeline_svg, wrap_name
from flywheel.spec import PipelineSpec, load_project
from flywheel.state import RunOutcome, as_crashed, as_running, fold

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ElementTree.Element:
    return ElementTree.fromstring(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))


def spec_of(*steps: dict[str, object]) -> PipelineSpec:
    return PipelineSpec.model_validate({"pipeline": "p", "steps": list(steps)})


ABC = spec_of(
    {"id": "a", "number": 1, "title": "A", "job": "m:f"},
    {"id": "b", "number": 2, "title": "B", "job": "m:f", "depends_on": ["a"]},
    {"id": "c", "number": 3, "title": "C", "job": "m:f", "depends_on": ["b"]},
)


def resumed() -> list[Event]:
    """Run 2 resumes run 1: reuses a (it took 5 s there), runs b, and c fails once then succeeds."""
    return [
        RunStarted(run_id=2, at=100.0, pipeline="p", env="local", parent_run=1, root_run=1),
        StepReused(run_id=2, at=100.0, step="a", source_run=1, duration=5.0),
        StepStarted(run_id=2, at=100.0, step="b"),
        StepSucceeded(run_id=2, at=102.0, step="b", started_at=100.0, duration=2.0),
        StepStarted(run_id=2, at=102.0, step="c", attempt=1),
        StepFailed(run_id=2, at=103.0, step="c", attempt=1, started_at=102.0, duration=1.0, will_retry=True),
        StepStarted(run_id=2, at=104.0, step="c", attempt=2),
        StepSucceeded(run_id=2, at=106.0, step="c", attempt=2, started_at=104.0, duration=2.0),
        RunFinished(run_id=2, at=106.0, outcome=RunOutcome.SUCCEEDED),
    ]


def bars(root: ElementTree.Element, key: str) -> list[ElementTree.Element]:
    return [g for g in root.iter(f"{SVG}g") if g.get("data-key") == key and "span" in (g.get("class") or "")]


def x_range(group: ElementTree.Element) -> tuple[float, float]:
    rect = group.find(f"{SVG}rect")
    assert rect is not None
    x, w = float(rect.get("x") or 0), float(rect.get("width") or 0)
    return x, x + w


def test_a_reused_key_is_a_ghost_bar_naming_its_source_run_as_long_as_it_took_there() -> None:
    events = resumed()
    state = fold(2, events)
    root = parse(timeline_svg(ABC, state, attempts(events, state), now=10_000.0))
    (ghost,) = bars(root, "a")
    assert ghost.get("data-source-run") == "1" and "ghost" in (ghost.get("class") or "")
    assert "".join(ghost.itertext()).endswith("reused from run 1")
    scale = float(root.get("data-scale") or 0)
    start, end = x_range(ghost)
    assert abs((end - start) - 5.0 * scale) < 0.2  # 5 s, as long as it took in run 1
    (b,) = bars(root, "b")
    assert abs((x_range(b)[1] - x_range(b)[0]) - 2.0 * scale) < 0.2


def test_retries_sit_side_by_side_in_their_row() -> None:
    events = resumed()
    state = fold(2, events)
    root = parse(timeline_svg(ABC, state, attempts(events, state), now=10_000.0))
    first, second = bars(root, "c")
    assert (first.get("data-attempt"), first.get("data-state")) == ("1", "failed")
    assert (second.get("data-attempt"), second.get("data-state")) == ("2", "succeeded")
    assert x_range(first)[1] <= x_range(second)[0]  # 1 s apart: 103 → 104
    same_row = {r.get("y") for g in (first, second) for r in g.iter(f"{SVG}rect")}
    assert len(same_row) == 1
    assert root.get("viewBox") and root.get("width") == "100%"
    assert all("data-tick-start" not in e.attrib for e in root.iter())  # a finished run does not grow


def test_a_running_attempt_grows_in_the_browser_and_the_axis_leaves_it_room() -> None:
    events: list[Event] = [
        RunStarted(run_id=1, at=1000.0, pipeline="p", env="local"),
        StepStarted(run_id=1, at=1000.0, step="a"),
    ]
    state = as_running(fold(1, events))
    root = parse(timeline_svg(ABC, state, attempts(events, state), now=1010.0))
    (a,) = bars(root, "a")
    rect = a.find(f"{SVG}rect")
    assert rect is not None and rect.get("data-tick-start") == "1000.000"
    scale, plot_end = float(root.get("data-scale") or 0), float(root.get("data-plot-end") or 0)
    assert x_range(a)[1] < plot_end  # drawn to now (10 s), with room to grow until the next event
    assert abs((x_range(a)[1] - x_range(a)[0]) - 10.0 * scale) < 0.2


def test_an_attempt_of_a_dead_runner_ends_at_the_last_event_however_late_the_page_is_read() -> None:
    events: list[Event] = [
        RunStarted(run_id=1, at=1000.0, pipeline="p", env="local"),
        StepStarted(run_id=1, at=1000.0, step="a"),
        StepSucceeded(run_id=1, at=1002.0, step="a", duration=2.0, started_at=1000.0),
        StepStarted(run_id=1, at=1002.0, step="b"),
        StepStarted(run_id=1, at=1008.0, step="c"),  # the last thing journaled, 8 s in
    ]
    state = as_crashed(fold(1, events))
    root = parse(timeline_svg(ABC, state, attempts(events, state), now=1000.0 + 159))
    (b,) = bars(root, "b")
    assert b.get("data-state") == "interrupted" and float(b.get("data-end") or 0) == 1008.0
    assert "never finished" in "".join(b.itertext())
    labels = [t.text for t in root.iter(f"{SVG}text") if (t.text or "").startswith("+")]
    assert labels[-1] == "+8.0 s"  # the axis ends where the run stopped, not 2 min 39 s later


def test_db_refresh_graph_groups_step_3s_contexts_and_wraps_long_names() -> None:
    spec = load_project("db-refresh").spec
    step3 = next(s for s in spec.steps if s.number == 3)
    assert len(step3.contexts) == 2
    state = fold(1, [RunStarted(run_id=1, at=0.0, pipeline=spec.pipeline, env="local")])
    root = parse(graph_svg(spec, state))
    width = float((root.get("viewBox") or "").split()[2])
    assert root.get("width") == "100%" and f"max-width:{width:.0f}px" in (root.get("style") or "")
    (group,) = [g for g in root.iter(f"{SVG}g") if g.get("class") == "group"]
    assert group.get("data-step") == step3.id
    label = group.find(f"{SVG}text")
    assert label is not None and label.text == f"3 {step3.id}"
    box = group.find(f"{SVG}rect")
    assert box is not None
    bx, by = float(box.get("x") or 0), float(box.get("y") or 0)
    bw, bh = float(box.get("width") or 0), float(box.get("height") or 0)
    nodes = [g for g in root.iter(f"{SVG}g") if (g.get("class") or "").startswith("node ")]
    assert {n.get("data-key") for n in nodes} == {str(k) for k in spec.keys}
    for node in nodes:
        assert node.get("tabindex") == "0" and node.get("role") == "button"
        title = node.find(f"{SVG}title")
        assert title is not None and (title.text or "").startswith(f"{node.get('data-key')}: not_started")
        rect = node.find(f"{SVG}rect")
        assert rect is not None
        x, y, w, h = (float(rect.get(a) or 0) for a in ("x", "y", "width", "height"))
        assert x + w <= width  # nothing beyond the viewBox: nothing clipped
        if (node.get("data-key") or "").startswith(f"{step3.id}["):
            assert bx <= x and x + w <= bx + bw and by <= y and y + h <= by + bh
        else:  # a plain step's name is whole on its two lines
            texts = ["".join(t.itertext()) for t in node.findall(f"{SVG}text")][:-1]
            assert re.sub(r"^\d+ ", "", "".join(texts)) == node.get("data-key")


def test_names_wrap_on_two_lines_and_only_a_very_long_one_is_cut() -> None:
    assert wrap_name("create-part-addressable-ids-er-table") == ("create-part-addressable-", "ids-er-table")
    assert wrap_name("short") == ("short", "")
    first, second = wrap_name("x" * 80)
    assert len(first) == 25 and second.endswith("…") and len(second) == 25
