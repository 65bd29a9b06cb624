"""The on-call engineer's view of many runs: a grid of runs by step, read from the run index.

Each story runs the real CLI on a tiny pipeline (a -> b[x], b[y] -> c -> d) into a real journal, then
reads the dashboard over HTTP. The index is a cache of the journal's fold: these tests also check that
it never shows what the journal no longer says (a note added later, a journal restored from a backup).
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from flywheel import api
from flywheel.incidents import incidents
from flywheel.journal import backup_journal, open_journal, restore_journal
from flywheel.state import fold
from tests.conftest import Sandbox
from tests.ui.conftest import serve_in_thread

pytestmark = pytest.mark.e2e


def grid(listing: str) -> dict[str, dict[str, str]]:
    """{run: {key: state}} as the cells of the runs grid show it."""
    rows = {row.split('"')[1]: row for row in listing.split("<tr data-run=")[1:]}
    cell = re.compile(r'class="gcell[^"]*" data-key="([^"]+)" data-state="(\w+)"')
    return {run: dict(cell.findall(row)) for run, row in rows.items()}


def test_a_failed_run_and_its_resume_read_as_a_grid_in_the_pipelines_order(chain: Sandbox) -> None:
    chain.fail("b[y]")
    assert chain.cli("run", "pipeline.yaml").returncode == 1
    chain.fix("b[y]")
    assert chain.cli("resume", "1", "--yes", "-p", "pipeline.yaml").returncode == 0

    with serve_in_thread(chain.home, pipeline=str(chain.pipeline)) as served:
        listing = served.client().get("/runs").body

    columns = re.findall(r'<th class="gkey" scope="col" title="([^"]+)"', listing)
    assert columns == ["a", "b[x]", "b[y]", "c", "d"]  # the definition's order, contexts under their step
    cells = grid(listing)
    assert cells["1"] == {"a": "succeeded", "b[x]": "succeeded", "b[y]": "failed"}  # c and d never started
    assert cells["2"] == {"a": "reused", "b[x]": "reused", "b[y]": "succeeded", "c": "succeeded", "d": "succeeded"}
    # a reused cell opens the attempt that produced it: run 1's step
    assert re.search(r'data-key="a" data-state="reused" href="/runs/1#step-a"', listing)
    # lineage both ways, and the failed run is recovered, not open
    assert 'resumes <a href="/runs/1" data-parent="1">' in listing and 'data-child="2"' in listing
    assert 'data-recovered-by="2"' in listing and "open-failure" not in listing
    assert re.search(r'<tr data-run="1"[^>]*>', listing) and "data-attention" not in listing


def test_needs_attention_keeps_open_failures_and_interrupted_runs_and_pages_through_them(chain: Sandbox) -> None:
    chain.fail("c")
    for _ in range(3):
        assert chain.cli("run", "pipeline.yaml").returncode == 1  # runs 1-3 fail at c
    chain.fix("c")
    assert chain.cli("resume", "3", "--yes", "-p", "pipeline.yaml").returncode == 0  # run 4 recovers 3 only
    assert chain.cli("run", "pipeline.yaml", "--only", "a").returncode == 0  # run 5 is partial: work left

    with serve_in_thread(chain.home) as served:
        client = served.client()
        first = client.get("/runs?attention=1").body
        assert re.findall(r'<tr data-run="(\d+)"', first) == ["5", "2", "1"]
        with_status = client.get("/runs?attention=1&status=failed").body
        assert re.findall(r'<tr data-run="(\d+)"', with_status) == ["2", "1"]

    with open_journal(chain.home) as journal:  # paging goes on through the index past a full page
        page = api.RunIndex(chain.home, journal)
        page.refresh()
        from flywheel.ui.views import list_runs

        one = list_runs(journal, chain.home, attention=True, limit=1)
        two = list_runs(journal, chain.home, attention=True, limit=1, before=one.runs[-1].run_id)
        page.close()
    assert [r.run_id for r in one.runs] == [5] and one.truncated
    assert [r.run_id for r in two.runs] == [2] and two.truncated


def test_the_index_follows_the_journal_a_note_added_later_and_a_restored_backup(chain: Sandbox) -> None:
    chain.fail("b[x]")
    assert chain.cli("run", "pipeline.yaml").returncode == 1
    after_the_failure = backup_journal(chain.home)
    chain.fix("b[x]")
    assert chain.cli("resume", "1", "--yes", "-p", "pipeline.yaml").returncode == 0

    with open_journal(chain.home) as journal, api.RunIndex(chain.home, journal) as index:
        assert index.refresh() == 2
        assert index.refresh() == 0  # nothing new: nothing folded again
        for digest in index.digests():  # each digest is the fold of its run
            state = fold(digest.run_id, journal.events(digest.run_id))
            assert digest.status is state.status and digest.failed == state.failed_keys
            assert {c.key: c.status for c in digest.cells} == {k: s.status for k, s in state.steps.items()}
        assert index.incidents() == incidents(journal, None, all_pipelines=True)

    assert chain.cli("incident", "note", "1", "--fix", "re-delivered b[x]", "-p", "pipeline.yaml").returncode == 0
    with open_journal(chain.home) as journal, api.RunIndex(chain.home, journal) as index:
        assert index.refresh() == 1  # only run 1, which got the note
        (found,) = index.incidents()
        assert [n.fix for n in found.notes] == ["re-delivered b[x]"]

    restore_journal(chain.home, after_the_failure)  # back to one failed run: the index must not keep run 2
    with open_journal(chain.home) as journal, api.RunIndex(chain.home, journal) as index:
        index.refresh()
        assert [d.run_id for d in index.digests()] == [1]
        assert index.incidents() == incidents(journal, None, all_pipelines=True)

    (chain.home / "index.sqlite").unlink()  # a cache: deleting it loses nothing
    with open_journal(chain.home) as journal, api.RunIndex(chain.home, journal) as index:
        assert index.refresh() == 1 and [d.status.value for d in index.digests()] == ["failed"]


def test_an_index_of_another_version_is_rebuilt_not_trusted(chain: Sandbox) -> None:
    assert chain.cli("run", "pipeline.yaml").returncode == 0
    with open_journal(chain.home) as journal, api.RunIndex(chain.home, journal) as index:
        index.refresh()
    db = sqlite3.connect(chain.home / "index.sqlite")
    db.execute("UPDATE digests SET status = 'failed'")  # what an older flywheel might have stored
    db.execute("UPDATE meta SET value = '0' WHERE name = 'version'")
    db.commit()
    db.close()
    with open_journal(chain.home) as journal, api.RunIndex(chain.home, journal) as index:
        assert index.refresh() == 1 and [d.status.value for d in index.digests()] == ["succeeded"]


def test_a_failed_runs_page_opens_on_the_fix_recorded_last_time_for_the_same_error(chain: Sandbox) -> None:
    chain.fail("c", "source file /data/in.csv is missing")
    assert chain.cli("run", "pipeline.yaml").returncode == 1
    fix = "asked the vendor to re-deliver in.csv"
    assert chain.cli("incident", "note", "1", "--fix", fix, "-p", "pipeline.yaml").returncode == 0
    chain.fix("c")
    assert chain.cli("resume", "1", "--yes", "-p", "pipeline.yaml").returncode == 0
    chain.fail("c", "source file /data/in.csv is missing")  # the same error, another night
    assert chain.cli("run", "pipeline.yaml").returncode == 1

    with serve_in_thread(chain.home, pipeline=str(chain.pipeline)) as served:
        page = served.client().get("/runs/3").body
        first = served.client().get("/runs/1").body
    decision = page.split('<section id="decision"')[1].split("</section>")[0]
    assert fix in decision and 'href="/incidents/1"' in decision
    assert 'id="past-fix"' not in first  # nothing was recorded before the first failure


def test_incidents_read_from_the_index_equal_the_projection_over_every_event(tmp_path: Path) -> None:
    """The index reads only the runs the incident projection can use (failures, their resumes, the
    fresh success after a failure): over a journal of 600 db-refresh-shaped runs with resumed,
    re-failed, noted and superseded failures, that gives exactly what folding every run gives."""
    from bench.dashboard import write_runs

    write_runs(tmp_path, 600, seed=7)
    with open_journal(tmp_path) as journal, api.RunIndex(tmp_path, journal) as index:
        index.refresh()
        found = index.incidents()
        every = incidents(journal, None, all_pipelines=True)
    assert found == every
    statuses = {i.status.value for i in found}
    assert {"resolved", "superseded"} <= statuses and any(i.notes for i in found)
    assert any(len({f.run_id for f in i.failures}) == 2 for i in found)  # a resume failed again and joined
