"""The log viewer over HTTP: a real server over real runs whose steps wrote real logs.

Expected lines come from the commands the steps ran (`seq`, `echo`), never from the viewer's own code.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.conftest import Sandbox
from tests.ui.conftest import Served, serve_in_thread

pytestmark = pytest.mark.e2e

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # the example key of the AWS IAM User Guide
VIEW = "/runs/1/logs/a.attempt-1.log/view"


def line_numbers(body: str) -> list[int]:
    return [int(n) for n in re.findall(r'<span class="line[^"]*" id="L(\d+)"', body)]


def texts(body: str) -> list[str]:
    return re.findall(r'<span class="t">(.*?)</span></span>', body)


def test_the_viewer_numbers_lines_marks_errors_and_links_the_download(served: Served) -> None:
    client = served.client()
    run = client.get("/runs/1").body
    assert 'href="/runs/1/logs/b%5By%5D.attempt-1.log/view"' in run  # the Logs section opens the viewer
    assert 'href="/runs/1/logs/b%5By%5D.attempt-1.log?whole=1" download=' in run
    page = client.get("/runs/1/logs/b%5By%5D.attempt-1.log/view")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    numbers = line_numbers(page.body)
    assert numbers and numbers == list(range(1, len(numbers) + 1))
    error = re.search(
        r'<span class="line err" id="L(\d+)" data-n="\d+" data-error="1">.*?<span class="flag">ERR</span>'
        r'<span class="t">(ERROR InjectedFault[^<]*)</span>',
        page.body,
    )
    assert error, "the ERROR line is marked with a class and a text marker"
    assert f'id="log-error-link">first error line: {error.group(1)}' in page.body
    assert 'id="log-download" href="/runs/1/logs/b%5By%5D.attempt-1.log?whole=1"' in page.body
    assert "<script>" not in page.body and '<script src="/static/log.js" defer></script>' in page.body
    failure_link = re.search(r'href="(/runs/1/logs/b%5By%5D.attempt-1.log/view#L(\d+))">whole log</a>', run)
    assert failure_link and int(failure_link.group(2)) == int(error.group(1))  # the excerpt opens at its line


def test_unknown_runs_and_logs_are_404_pages_with_a_message(served: Served) -> None:
    client = served.client()
    for path, message in (
        ("/runs/99/logs/a.attempt-1.log/view", "no run"),
        ("/runs/1/logs/c.attempt-1.log/view", "run 1 has no log &#39;c.attempt-1.log&#39;"),
    ):
        reply = client.get(path)
        assert reply.status == 404 and message in reply.body and 'id="error"' in reply.body, path
    assert client.get("/runs/1/logs/..%2F..%2Fjournal.sqlite/view").status == 404  # no route outside the run
    json_reply = client.get("/runs/1/logs/c.attempt-1.log/view?from=0", accept="application/json")
    assert json_reply.status == 404 and "has no log" in json_reply.json()["error"]


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    """Run 1: step a wrote 30,000 numbered lines, an ERROR line, a line with the AWS secret, 3 more lines."""
    base = tmp_path_factory.mktemp("noisy")
    sandbox = Sandbox(root=base / "p", home=base / "home")
    sandbox.root.mkdir()
    command = (
        'for i in $(seq 1 30000); do echo "line $i of a noisy step ................................"; done;'
        ' echo "ERROR the partner API refused the upload";'
        ' echo "using key $AWS_SECRET_ACCESS_KEY for the upload";'
        " echo after-1; echo after-2; echo after-3"
    )
    sandbox.write([{"id": "a", "number": 1, "title": "A", "command": command}])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        assert sandbox.cli("run", "pipeline.yaml").returncode == 0
    return sandbox


@pytest.fixture(scope="module")
def noisy_served(noisy: Sandbox) -> Iterator[Served]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # the dashboard knows the secret, as an operator's shell does
        with serve_in_thread(noisy.home) as server:
            yield server


def test_a_big_log_shows_its_tail_with_the_files_line_numbers_and_the_whole_file_on_request(
    noisy_served: Served,
) -> None:
    client = noisy_served.client()
    page = client.get(VIEW).body
    numbers = line_numbers(page)
    assert len(numbers) == 2000 and numbers[-1] == 30_005  # 30,000 + 5 lines written
    assert numbers == list(range(30_005 - 1999, 30_006))
    assert 'id="log-cut"' in page and f'href="{VIEW}?whole=1"' in page
    assert "line 1 of a noisy step" not in page
    whole = client.get(VIEW + "?whole=1")
    assert whole.status == 200 and "transfer-encoding" in whole.headers  # streamed, not built in memory
    assert line_numbers(whole.body) == list(range(1, 30_006))
    assert texts(whole.body)[0] == "line 1 of a noisy step ................................"
    assert 'id="log-cut"' not in whole.body and 'data-line="30006"' in whole.body


def test_search_without_script_keeps_the_matching_lines_with_their_numbers(noisy_served: Served) -> None:
    client = noisy_served.client()
    page = client.get(VIEW + "?q=after-").body
    assert line_numbers(page) == [30_003, 30_004, 30_005]
    assert "<mark>after-</mark>1" in page and "3 of 2000 lines contain" in page
    whole = client.get(VIEW + "?whole=1&q=LINE%2029999%20").body  # case-insensitive, plain text
    assert line_numbers(whole) == [29_999]


def test_follow_from_a_byte_returns_the_next_lines_and_where_to_read_next(noisy_served: Served, noisy: Sandbox) -> None:
    client = noisy_served.client()
    log = next(noisy.home.rglob("a.attempt-1.log"))
    data = log.read_bytes()
    start = data.index(b"line 29999 ")
    reply = client.get(f"{VIEW}?from={start}&line=29999", accept="application/json").json()
    assert [x["n"] for x in reply["lines"]] == list(range(29_999, 30_006))
    assert reply["lines"][2] == {"n": 30_001, "text": "ERROR the partner API refused the upload", "error": True}
    assert reply["next"] == len(data) and reply["line"] == 30_006
    assert reply["running"] is False and reply["outcome"] == "succeeded"
    assert client.get(f"{VIEW}?from={len(data)}&line=30006").json()["lines"] == []


def test_a_secret_in_a_log_is_masked_in_every_view(noisy_served: Served, noisy: Sandbox) -> None:
    log = next(noisy.home.rglob("a.attempt-1.log"))
    assert SECRET.encode() in log.read_bytes()  # the job printed it: the raw file keeps it
    client = noisy_served.client()
    inside = log.read_bytes().index(SECRET.encode()) + 5  # a crafted offset inside the secret
    for path in (
        VIEW,
        VIEW + "?whole=1",
        VIEW + "?q=using",
        VIEW + "?whole=1&q=" + SECRET[:10],
        VIEW + f"?q={SECRET}",
        VIEW + "?from=0",
        VIEW + f"?from={inside}",
        VIEW + f"?from={inside}&line=30002",
    ):
        body = client.get(path).body
        assert SECRET not in body and SECRET[5:] not in body and SECRET[:-5] not in body, path
    page = client.get(VIEW + "?q=using").body
    assert texts(page) == ["<mark>using</mark> key *** for the upload"]
