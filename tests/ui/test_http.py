"""The dashboard over HTTP: a real server on 127.0.0.1 reading a real journal of tiny pipelines.

Pages are checked through the attributes the templates give every row and node (`data-state`,
`data-run`, ...), the same ones the browser test and an operator's eye rely on.
"""

from __future__ import annotations

import re
import sqlite3
import time
from typing import Any

import pytest

from flywheel import api
from tests.conftest import Sandbox
from tests.ui.conftest import Client, Served, World, execute, fan_out, serve_in_thread, write_project

pytestmark = pytest.mark.e2e  # a real server over real runs of real pipelines


def runs_listed(body: str) -> list[int]:
    return [int(x) for x in re.findall(r'<tr data-run="(\d+)"', body)]


def states(body: str, element: str = "g") -> dict[str, str]:
    return dict(re.findall(rf'<{element} class="node state-\w+" data-key="([^"]+)" data-state="(\w+)"', body))


# ---------------------------------------------------------------------------------------------
# reading


def test_the_run_list_filters_by_pipeline_env_and_status(served: Served) -> None:
    client = served.client()
    assert runs_listed(client.get("/runs").body) == [3, 2, 1]
    assert runs_listed(client.get("/runs?pipeline=tiny").body) == [2, 1]
    assert runs_listed(client.get("/runs?env=dev").body) == [2]
    assert runs_listed(client.get("/runs?status=failed").body) == [1]
    assert runs_listed(client.get("/runs?status=succeeded&pipeline=tiny").body) == [2]
    empty = client.get("/runs?pipeline=other&status=failed").body
    assert runs_listed(empty) == [] and "no runs match these filters" in empty
    page = client.get("/runs").body
    assert '<tr data-run="1" data-status="failed" data-pipeline="tiny" data-env="local" data-attention="1">' in page
    # the failed run is the only one that needs someone: the "needs attention" filter keeps just it
    assert runs_listed(client.get("/runs?attention=1").body) == [1]
    assert runs_listed(client.get("/runs?attention=1&status=succeeded").body) == []
    for option in ("tiny", "other", "local", "dev", "failed", "succeeded", "running", "interrupted"):
        assert f'<option value="{option}"' in page
    assert client.get("/").status == 303 and client.get("/").headers["location"] == "/runs"


def test_the_page_of_a_failed_run(served: Served) -> None:
    page = served.client().get("/runs/1")
    assert page.status == 200
    body = page.body
    assert states(body) == {"a": "succeeded", "b[x]": "succeeded", "b[y]": "failed", "c": "not_started"}
    assert '<span id="run-status" data-status="failed">' in body
    assert re.search(r'<tr data-key="b\[y\]" data-state="failed"', body)  # the steps table agrees
    # the failed step: its error (escaped), classified cause, the pipeline's hint and the log line
    failure = body[body.index('<div class="failure" data-key="b[y]">') :]
    assert "InjectedFault: the source file /data/raw/&lt;ids&gt;.csv is missing" in failure
    assert '<b class="cause">data</b>' in failure and "Re-deliver the source file, then resume." in failure
    assert '<span class="err">ERROR InjectedFault: the source file /data/raw/&lt;ids&gt;.csv is missing</span>' in body
    assert "<script" in body and "<script>" not in body  # no inline script
    assert '<div id="incident-box" data-src="/runs/1/incident">' in body
    incident = served.client().get("/runs/1/incident").body
    assert 'id="incident-1" data-status="open"' in incident and 'href="/incidents/1"' in incident
    assert 'href="/runs/1/logs/b%5By%5D.attempt-1.log/view"' in body  # the log viewer
    # the dry-run plan of the resume, the time it saves and the button: loaded after the page
    assert '<div id="resume" data-src="/runs/1/plan">' in body
    section = served.client().get("/runs/1/plan").body
    plan = dict(re.findall(r'<tr data-key="([^"]+)" data-action="(\w+)">', section))
    assert plan == {"a": "reuse", "b[x]": "reuse", "b[y]": "run", "c": "run"}
    assert '<b id="plan-run">2</b>' in section and '<b id="plan-reuse">2</b>' in section
    assert 'id="plan-saved"' in section and "failed in run 1: InjectedFault" in section
    assert 'id="resume-button"' in section and 'id="confirm-env"' not in section  # local: no typed confirmation


def test_a_succeeded_run_has_no_resume(served: Served) -> None:
    body = served.client().get("/runs/2").body
    assert set(states(body).values()) == {"succeeded"}
    assert 'id="resume"' not in body and 'id="incident-box"' not in body
    assert 'id="no-incident"' in served.client().get("/runs/2/incident").body
    section = served.client().get("/runs/2/plan").body
    assert 'id="not-resumable"' in section and 'id="resume-button"' not in section


def test_logs_are_served_only_for_the_runs_own_attempts(served: Served) -> None:
    client = served.client()
    log = client.get("/runs/1/logs/b%5By%5D.attempt-1.log")
    assert log.status == 200 and log.headers["content-type"].startswith("text/plain")
    assert "ERROR InjectedFault" in log.body
    assert client.get("/runs/1/logs/..%2F..%2Fjournal.sqlite").status == 404
    assert client.get("/runs/1/logs/c.attempt-1.log").status == 404  # c never ran in run 1
    assert client.get("/runs/99/logs/a.attempt-1.log").status == 404


def test_unknown_runs_and_incidents_are_404_pages(served: Served) -> None:
    client = served.client()
    for path in ("/runs/99", "/runs/abc", "/incidents/99", "/runs/99/live", "/runs/99/plan", "/runs/99/incident"):
        reply = client.get(path)
        assert reply.status == 404, path
    assert "no run 99" in client.get("/runs/99").body


def test_incidents_their_notes_and_the_patterns(served: Served) -> None:
    client = served.client()
    listing = client.get("/incidents").body
    assert '<tr data-incident="1" data-status="open">' in listing
    assert client.get("/incidents?status=resolved").body.count("<tr data-incident=") == 0
    page = client.get("/incidents/1").body
    assert "Re-deliver the source file, then resume." in page and 'id="note-form"' in page
    csrf = client.csrf("/incidents/1")
    noted = client.post(
        "/incidents/1/notes",
        {"cause": "late+delivery", "fix": "vendor+resent+the+file", "category": "data"},
        csrf=csrf,
        origin=client.origin,
    )
    assert noted.status == 201, noted.body
    page = client.get("/incidents/1").body
    assert "vendor resent the file" in page and "(dashboard)" in page
    refused = client.post("/incidents/1/notes", {"cause": "x"}, csrf=None, origin=client.origin)
    assert refused.status == 403
    report = client.get("/incidents/report?since=all").body
    assert '<div class="kpi" data-kpi="incidents"><b>1</b>' in report and 'data-label="b[y]"' in report


# ---------------------------------------------------------------------------------------------
# the guard


def test_every_response_forbids_framing_and_foreign_scripts(served: Served) -> None:
    reply = served.client().get("/runs")
    csp = reply.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert reply.headers["x-frame-options"] == "DENY" and reply.headers["cache-control"] == "no-store"
    assert re.search(r"flywheel_session_\d+=\S+; Path=/; HttpOnly; SameSite=Strict", reply.headers["set-cookie"])


def test_on_loopback_a_foreign_host_header_is_refused(served: Served) -> None:
    """DNS rebinding: a page on evil.example resolving its name to 127.0.0.1 still sends Host: evil.example."""
    client = served.client()
    assert client.get("/runs", Host=f"evil.example:{served.port}").status == 400
    assert client.get("/runs", Host=f"localhost:{served.port}").status == 200


def test_a_resume_without_the_right_csrf_token_or_origin_is_refused(served: Served, world: World) -> None:
    client = served.client()
    csrf = client.csrf("/runs/1")
    path = "/runs/1/resume"
    assert client.post(path, csrf=None, origin=client.origin).status == 403
    assert client.post(path, csrf="0" * 64, origin=client.origin).status == 403
    assert client.post(path, csrf=csrf, origin="http://evil.example").status == 403
    assert client.post(path, csrf=csrf, origin=f"http://127.0.0.1:{served.port + 1}").status == 403
    assert client.post(path, csrf=csrf, origin=None).status == 403  # neither Origin nor Referer
    stranger = served.client()  # another session's token is not this session's
    stranger.csrf("/runs")
    assert stranger.post(path, csrf=csrf, origin=client.origin).status == 403
    refused = client.post(path, csrf=csrf, origin="http://evil.example")
    assert "cross-site request refused" in refused.body
    with api.open_session(str(world.tiny.pipeline), home=world.home).journal() as journal:
        assert [r.run_id for r in journal.runs()] == [3, 2, 1]  # nothing was started
    assert not (world.home / "ui").exists()


def test_a_resume_of_a_run_that_succeeded_is_refused(served: Served) -> None:
    client = served.client()
    csrf = client.csrf()
    reply = client.post("/runs/2/resume", csrf=csrf, origin=client.origin)
    assert reply.status == 409 and "only a failed, interrupted or partial run resumes" in reply.json()["error"]


def test_off_loopback_every_request_needs_the_token(world: World) -> None:
    token = "t0ken-for-this-test-only"
    with serve_in_thread(world.home, host="0.0.0.0", token=token) as served:
        client = served.client()
        assert client.get("/runs").status == 401
        assert client.get("/runs?token=wrong").status == 401
        assert client.get("/static/app.css").status == 401
        assert client.get("/runs", Authorization=f"Bearer {token}").status == 200
        assert client.get("/runs", X_Flywheel_Token=token).status == 200
        first = client.get(f"/runs?status=failed&token={token}")  # once, then a cookie
        assert first.status == 303 and first.headers["location"] == "/runs?status=failed"
        assert f"flywheel_token_{served.port}" in first.cookies
        assert "HttpOnly; SameSite=Strict" in first.headers["set-cookie"]
        page = client.get("/runs?status=failed")
        assert page.status == 200 and runs_listed(page.body) == [1]
        assert token not in page.body  # nothing secret in pages
        assert client.get("/runs", Host="dashboard.example:1").status == 200  # the token, not the Host, protects
        assert served.client().get("/runs", Cookie=f"flywheel_token_{served.port}=nope").status == 401


def test_the_command_generates_and_prints_a_token_off_loopback(world: World) -> None:
    from tests.ui.conftest import serve_in_subprocess

    with serve_in_subprocess(world.tiny, "--host", "0.0.0.0") as (url, _):
        match = re.search(r":(\d+)/\?token=([\w-]{20,})$", url)
        assert match, url
        port, token = int(match.group(1)), match.group(2)
        client = Client("127.0.0.1", port)
        assert client.get("/runs").status == 401
        assert client.get("/runs", Authorization=f"Bearer {token}").status == 200


# ---------------------------------------------------------------------------------------------
# starting a resume


def wait_for_job(client: Client, status_url: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(status_url).json()
        if job["state"] == "exited":
            return job
        assert time.monotonic() < deadline, f"the resume did not finish: {job}"
        time.sleep(0.1)


def test_resume_starts_in_the_background_and_the_live_stream_follows_it(sandbox: Sandbox) -> None:
    sandbox.write(fan_out(sleep=0.3))
    write_project(sandbox)
    sandbox.fail("b[y]")
    assert execute(sandbox) == 1
    sandbox.fix("b[y]")
    with serve_in_thread(sandbox.home) as served:
        client = served.client()
        csrf = client.csrf("/runs/1")
        started = client.post("/runs/1/resume", csrf=csrf, origin=client.origin)
        assert started.status == 202, started.body
        status_url = started.json()["status_url"]
        deadline = time.monotonic() + 30
        while (job := client.get(status_url).json())["run_id"] is None:
            assert job["state"] == "running" and time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["run_id"] == 2 and job["url"] == "/runs/2"
        stream = client.get("/runs/2/live")  # read until the stream ends with `done`
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = re.findall(r"^event: (\w+)$", stream.body, re.MULTILINE)
        assert events[0] == "state" and events[-1] == "done" and "log" in events
        assert '"status":"succeeded"' in stream.body.split("event: done")[1]
        assert wait_for_job(client, status_url)["exit_code"] == 0
        page = client.get("/runs/2").body
        assert states(page) == {"a": "reused", "b[x]": "reused", "b[y]": "succeeded", "c": "succeeded"}
        assert "resumed from the dashboard by" in page  # the run says where it came from
        again = client.post("/runs/1/resume", csrf=csrf, origin=client.origin)
        assert again.status == 409 and "already recovered by run 2" in again.json()["error"]
        assert 'id="recovered"' in client.get("/runs/1").body and 'id="recovered"' in client.get("/runs/1/plan").body
    assert sandbox.executed_in(2) == ["b[y]", "c"]


def test_in_prod_the_environment_name_must_be_typed(sandbox: Sandbox) -> None:
    sandbox.write(fan_out())
    write_project(sandbox, {"prod": {"executor": "subprocess", "confirm": True}})
    sandbox.fail("c")
    assert execute(sandbox, "prod") == 1
    sandbox.fix("c")
    with serve_in_thread(sandbox.home) as served:
        client = served.client()
        section = client.get("/runs/1/plan").body
        assert '<input name="confirm_env" id="confirm-env" autocomplete="off" data-expected="prod">' in section
        csrf = client.csrf("/runs/1")
        for typed in ({}, {"confirm_env": "dev"}, {"confirm_env": "Prod"}):
            refused = client.post("/runs/1/resume", typed, csrf=csrf, origin=client.origin)
            assert refused.status == 400 and "needs its name typed" in refused.json()["error"]
        started = client.post("/runs/1/resume", {"confirm_env": "prod"}, csrf=csrf, origin=client.origin)
        assert started.status == 202, started.body
        job = wait_for_job(client, started.json()["status_url"])
        assert job["exit_code"] == 0 and job["run_id"] == 2
    assert sandbox.executed_in(2) == ["c"]


def test_a_run_recorded_with_a_relative_definition_is_drawn_with_pipeline(sandbox: Sandbox) -> None:
    """Journals written before flywheel recorded absolute paths hold `pipeline.yaml`, relative to a folder
    the dashboard may not be in. `flywheel ui --pipeline PATH` supplies it."""
    sandbox.write(fan_out())
    write_project(sandbox)
    sandbox.cli("run", check=True)
    db = sqlite3.connect(sandbox.home / "journal.sqlite")  # as an older flywheel recorded it
    db.execute("UPDATE events SET body = json_set(body, '$.definition', 'pipeline.yaml') WHERE kind = 'run_started'")
    db.commit()
    db.close()
    with serve_in_thread(sandbox.home) as served:
        assert "cannot be found" in served.client().get("/runs/1").body
    with serve_in_thread(sandbox.home, pipeline=str(sandbox.pipeline)) as served:
        assert set(states(served.client().get("/runs/1").body).values()) == {"succeeded"}


def test_status_icons_are_drawn_not_typed_so_a_server_without_an_emoji_font_shows_them(served: Served) -> None:
    """On a fresh Linux server with no colour-emoji font, ✅ ❌ ⏸️ render as empty boxes: the run page
    draws its status icons as inline SVG, each with a text label (colour is never the only signal)."""
    page = served.client().get("/runs/1").body
    steps = page[page.index('<table id="steps"') : page.index("</table>", page.index('<table id="steps"'))]
    icons = re.findall(r'<svg class="icon icon-(\w+)"[^>]*aria-label="([^"]+)"', steps)
    assert icons and all(label for _, label in icons)
    assert not re.search("[\u2705\u274c\u23f8\u23ed\u2611\u26a0\U0001f504]", steps)


def test_a_big_log_is_served_as_its_tail_unless_the_whole_file_is_asked_for(sandbox: Sandbox) -> None:
    noisy = 'for i in $(seq 1 30000); do echo "line $i of a noisy step ................................"; done'
    sandbox.write([{"id": "a", "number": 1, "title": "A", "command": noisy}])
    assert sandbox.cli("run", "pipeline.yaml").returncode == 0
    with serve_in_thread(sandbox.home) as served:
        client = served.client()
        capped = client.get("/runs/1/logs/a.attempt-1.log").body
        whole = client.get("/runs/1/logs/a.attempt-1.log?whole=1").body
    assert capped.startswith("(the last 1024 KiB of ") and "add ?whole=1" in capped.splitlines()[0]
    assert "line 30000 of a noisy step" in capped and "line 1 of a noisy step" not in capped
    assert whole.splitlines()[0] == "line 1 of a noisy step ................................"
    assert len(whole.splitlines()) == 30000


def test_the_run_list_pages_through_older_runs(sandbox: Sandbox) -> None:
    from flywheel.events import RunFinished, RunOutcome, RunStarted
    from flywheel.journal import open_journal

    with open_journal(sandbox.home) as journal:  # 230 finished runs, as a journal grows over months
        for _ in range(230):
            run = journal.new_run("tiny", "local")
            journal.append(
                RunStarted(run_id=run, at=1.0e9 + run, pipeline="tiny", env="local"),
                RunFinished(run_id=run, at=1.0e9 + run + 5, outcome=RunOutcome.SUCCEEDED),
            )
    seen: list[int] = []
    with serve_in_thread(sandbox.home) as served:
        client, path = served.client(), "/runs"
        while True:
            page = client.get(path).body
            seen += [int(r) for r in re.findall(r'<tr data-run="(\d+)"', page)]
            link = re.search(r'id="older-link" href="([^"]+)"', page)
            if link is None:
                break
            path = "/runs" + link.group(1).replace("&amp;", "&")
    assert seen == list(range(230, 0, -1))  # every run once, newest first, over three pages
