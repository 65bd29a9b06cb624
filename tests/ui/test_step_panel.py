"""The step panel over HTTP (`GET /runs/{id}/step?key=KEY`): a real server over the world's real runs
(run 1 failed at b[y] with the source file missing; run 2 succeeded in dev)."""

from __future__ import annotations

import re
import shlex
from html import unescape
from urllib.parse import quote

import pytest

from tests.ui.conftest import Served, World

pytestmark = pytest.mark.e2e


def test_the_panel_of_a_failed_key_has_its_attempt_error_log_and_rerun_command(served: Served, world: World) -> None:
    reply = served.client().get("/runs/1/step?key=" + quote("b[y]"))
    assert reply.status == 200
    body = reply.body
    assert '<div class="panel-body" data-key="b[y]" data-state="failed">' in body
    assert re.search(r'<tr data-attempt="1" data-outcome="failed">', body)
    assert "the source file /data/raw/&lt;ids&gt;.csv is missing" in body  # the injected error, escaped
    assert 'href="/runs/1/logs/' in body and "b[y].attempt-1.log" in body
    command = re.search(r'<code class="cmd" id="rerun-command">([^<]+)</code>', body)
    assert command is not None
    words = shlex.split(unescape(command.group(1)))
    assert words[:3] == ["flywheel", "run", str(world.tiny.pipeline.resolve())]
    assert words[3:] == ["--env", "local", "--only", "b[y]", "--home", str(world.home.resolve())]


def test_the_panel_of_a_run_in_another_env_reruns_in_that_env(served: Served) -> None:
    body = served.client().get("/runs/2/step?key=c").body
    assert 'data-state="succeeded"' in body and "--env dev --only c " in body


def test_an_unknown_key_or_run_is_a_404_that_says_what_exists(served: Served) -> None:
    client = served.client()
    missing = client.get("/runs/1/step?key=nope")
    assert missing.status == 404
    assert "run 1 has no step 'nope'" in unescape(missing.body) and "pick one of: a, b[x], b[y], c" in missing.body
    assert client.get("/runs/99/step?key=a").status == 404
    unnamed = client.get("/runs/1/step")
    assert unnamed.status == 400 and "?key=STEP" in unnamed.body
