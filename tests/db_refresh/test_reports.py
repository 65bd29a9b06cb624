"""Steps 6 and 7 after a real refresh of sample data: the data monitor's numbers are the numbers one
gets by counting the files by hand, drift is judged against the last good run, and the clean-rooms
report publishes exact segment sizes with no segment under k and no figure that gives one away."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flywheel.invocation import JobError, StepInvocation
from flywheel.pipelines.db_refresh import catalog, engine, sample_data
from flywheel.pipelines.db_refresh.footers import PartFooters, read_part_footers
from flywheel.pipelines.db_refresh.jobs import (
    addressable_split,
    cleanrooms_report,
    create_er_table,
    data_monitor_report,
    infobase_split,
    prepare_part_tables,
    register_part_tables,
)
from flywheel.pipelines.db_refresh.jobs.data_monitor_report import measure_match, measure_table, parse_settings
from flywheel.pipelines.db_refresh.monitor_checks import (
    MatchMetrics,
    MonitorSettings,
    PartMetrics,
    Snapshot,
    Status,
    TableMetrics,
    evaluate,
)

N_PARTS = 4
ROWS = 1500


@dataclass
class Refresh:
    """Storage after steps 1-5 of one refresh; each test reports into its own folder."""

    root: Path
    params: dict[str, Any]

    def invocation(self, step: str, run_id: int = 1, **params: Any) -> StepInvocation:
        return StepInvocation(
            pipeline="db-refresh",
            step=step,
            context=None,
            run_id=run_id,
            attempt=1,
            env="local",
            job=f"flywheel.pipelines.db_refresh.jobs.{step}:run",
            params={**self.params, **params},
        )

    def monitor(self, run_id: int, **params: Any) -> dict[str, Any]:
        """Run step 6 and return what it wrote, whether it passed or failed."""
        data_monitor_report.run(self.invocation("data_monitor_report", run_id, **params))
        return self.monitor_document()

    def monitor_document(self) -> dict[str, Any]:
        path = Path(self.params["reports_root"]) / "data_monitor" / "metrics.json"
        return dict(json.loads(path.read_text()))

    def rows(self, relative: str) -> list[dict[str, Any]]:
        """Every row of a partitioned output, read with plain DuckDB SQL (not through our code)."""
        glob = f"{self.root}/{relative}/*/*.parquet"
        cursor = duckdb.connect().execute(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@pytest.fixture(scope="module")
def refresh(tmp_path_factory: pytest.TempPathFactory) -> Refresh:
    root = tmp_path_factory.mktemp("refresh")
    params: dict[str, Any] = {
        "engine": "duckdb",
        "data_root": str(root),
        "raw_root": str(root / "raw"),
        "split_root": str(root / "split_part"),
        "er_root": str(root / "er"),
        "reports_root": str(root / "reports"),
        "config_root": str(root / "config"),
        "catalog": str(root / "catalog.duckdb"),
        "database": "omc_flywheel_test",
        "table_prefix": "part_",
        "n_parts": N_PARTS,
        "memory_limit": "1GB",
        "threads": 1,
        "temp_directory": str(root / "tmp"),
    }
    lake = Refresh(root, params)
    sample_data.generate(root / "raw", ROWS, seed=7, files=2)
    addressable_split.run(lake.invocation("addressable_split"))
    infobase_split.run(lake.invocation("infobase_split"))
    for table in ("addressable_ids", "infobase_attributes"):
        context: dict[str, Any] = {"table": table, "storage_root": str(root / "split_part" / table)}
        register_part_tables.run(lake.invocation("register_part_tables", **context))
    prepare_part_tables.run(lake.invocation("prepare_part_tables"))
    create_er_table.run(lake.invocation("create_er_table"))
    return lake


@pytest.fixture
def reports(refresh: Refresh, tmp_path: Path) -> Iterator[Refresh]:
    yield Refresh(refresh.root, {**refresh.params, "reports_root": str(tmp_path / "reports")})


# ---------------------------------------------------------------------------------------------
# step 6: the data monitor


def hand_count(rows: list[dict[str, Any]], key: str = "id") -> dict[str, Any]:
    """The metrics of one table, counted in plain Python."""
    parts: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        parts.setdefault(row["id_part"], []).append(row)
    columns = [c for c in rows[0] if c != "id_part"]

    def missing(value: Any) -> bool:
        return value is None or (isinstance(value, str) and not value.strip()) or value == []

    return {
        "key": key,
        "rows": len(rows),
        "distinct_ids": len({r["id"] for r in rows if r["id"] is not None}),
        "distinct_keys": len({r[key] for r in rows if r[key] is not None}),
        "missing": {c: sum(missing(r[c]) for r in rows) for c in columns},
        "parts": {
            str(p): {
                "rows": len(part),
                "distinct_ids": len({r["id"] for r in part}),
                "missing": {c: sum(missing(r[c]) for r in part) for c in columns},
            }
            for p, part in sorted(parts.items())
        },
    }


def test_the_monitor_reports_the_counts_one_gets_by_hand(reports: Refresh) -> None:
    document = reports.monitor(run_id=1)

    addressable = reports.rows("split_part/addressable_ids")
    infobase = reports.rows("split_part/infobase_attributes")
    tables = document["metrics"]["tables"]
    assert tables["part_addressable_ids"] == hand_count(addressable)
    assert tables["part_infobase_attributes"] == hand_count(infobase)
    assert tables["part_addressable_ids_er"] == hand_count(reports.rows("er/part_addressable_ids_er"), "record_id")
    known = {(r["id_part"], r["id"]) for r in infobase}
    ids = {(r["id_part"], r["id"]) for r in addressable}
    assert document["metrics"]["match"] == {"addressable_ids": len(ids), "matched_ids": len(ids & known)}
    assert document["status"] in ("ok", "warn") and document["step_succeeded"] is True
    assert document["baseline"] is None, "the first run has nothing to drift from"
    page = (Path(reports.params["reports_root"]) / "data_monitor" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    for external in ("<script", "<link", "src=", "href=", "url(", "@import"):
        assert external not in page, "the page is self-contained"


def test_drift_is_judged_against_the_last_successful_run(reports: Refresh) -> None:
    strict = {"monitor_thresholds": {"rows_change_fail": 0.2}}
    first = reports.monitor(run_id=1, **strict)
    history = Path(reports.params["reports_root"]) / "data_monitor" / "history"

    # A part of the addressable table goes missing from the catalog: about a quarter of its rows.
    lost = catalog.list_partitions(reports.params, "part_addressable_ids")[0]
    catalog.drop_partitions(reports.params, "part_addressable_ids", [lost.value])
    try:
        with pytest.raises(JobError) as failure:
            reports.monitor(run_id=2, **strict)
        failed = reports.monitor_document()
        tolerated = reports.monitor(run_id=3, **strict, monitor_fail_on_breach=False)
    finally:
        catalog.add_partitions(reports.params, "part_addressable_ids", [lost.value])

    assert failure.value.error_type == "DataQualityError"
    assert "part_addressable_ids rows_change" in str(failure.value)
    before = first["metrics"]["tables"]["part_addressable_ids"]["rows"]
    change = next(c for c in failed["checks"] if c["table"] == "part_addressable_ids" and c["metric"] == "rows_change")
    assert change["value"] == pytest.approx(lost.rows / before)
    assert change["status"] == "fail"
    assert failed["baseline"]["run_id"] == 1 and failed["step_succeeded"] is False
    # The failed run is in history but never a baseline: run 3 is still judged against run 1.
    assert tolerated["baseline"]["run_id"] == 1
    assert tolerated["status"] == "fail" and tolerated["step_succeeded"] is True
    entries = sorted(history.glob("*.json"))
    assert [json.loads(p.read_text())["run_id"] for p in entries] == [1, 2, 3]

    # Run 3 breached but was allowed to succeed, so it is the baseline of the next run.
    recorded = data_monitor_report.read_history(history)
    assert data_monitor_report.pick_baseline(recorded, run_id=4) == recorded[-1]
    assert data_monitor_report.pick_baseline(recorded, run_id=3) == recorded[0], "never the run itself"


def test_the_match_counts_each_id_once_when_a_table_repeats_ids(tmp_path: Path) -> None:
    """Part tables from elsewhere may repeat an id (or lack one): the match still counts distinct ids."""
    params = {"engine": "duckdb", "memory_limit": "1GB", "threads": 1, "temp_directory": str(tmp_path)}
    with engine.session_scope(params) as session:
        addressable = session.createDataFrame([(0, "a"), (0, "a"), (1, "b"), (1, None), (2, "c")], ["id_part", "id"])
        infobase = session.createDataFrame([(0, "a"), (0, "a"), (2, "z")], ["id_part", "id"])
        measured = (measure_table(addressable, "addressable"), measure_table(infobase, "infobase"))

        match = measure_match(addressable, infobase, measured=measured)

        assert (measured[0].rows, measured[0].distinct_ids) == (5, 3)
        assert match == MatchMetrics(addressable_ids=3, matched_ids=1)
        unique = session.createDataFrame([(0, "a"), (1, "b")], ["id_part", "id"])
        measured_unique = (measure_table(unique, "addressable"), measure_table(infobase, "infobase"))
        assert measure_match(unique, infobase, measured=measured_unique) == MatchMetrics(2, 1)


@pytest.mark.parametrize(
    "rows",
    [
        pytest.param([(0, "a"), (0, "a"), (1, "b"), (1, "d"), (2, None), (3, "e")], id="each id in one part"),
        pytest.param([(0, "a"), (0, "a"), (1, "a"), (1, "b"), (2, None), (2, "c"), (3, "c")], id="ids in two parts"),
    ],
)
def test_distinct_ids_per_part_and_overall_are_the_counts_by_hand(
    tmp_path: Path, rows: list[tuple[int, str | None]]
) -> None:
    """Part distinct counts add up to the table's only when no id crosses parts; when ids do, the
    report says how many (the bucketing is broken) and each part still counts its own ids."""
    params = {"engine": "duckdb", "memory_limit": "1GB", "threads": 1, "temp_directory": str(tmp_path)}
    ids_of_part: dict[int, set[str]] = {}
    for part, id_ in rows:
        ids_of_part.setdefault(part, set()).update([id_] if id_ else [])
    all_ids = set().union(*ids_of_part.values())
    with engine.session_scope(params) as session:
        metrics = measure_table(session.createDataFrame(rows, ["id_part", "id"]), "t")

    assert {n: p.distinct_ids for n, p in metrics.parts.items()} == {n: len(s) for n, s in ids_of_part.items()}
    assert {n: p.rows for n, p in metrics.parts.items()} == dict(Counter(part for part, _ in rows))
    assert (metrics.rows, metrics.distinct_ids, metrics.distinct_keys) == (len(rows), len(all_ids), len(all_ids))
    assert metrics.ids_in_several_parts == sum(len(s) for s in ids_of_part.values()) - len(all_ids)
    assert metrics.missing["id"] == 1


def test_footers_settle_what_they_can_and_the_metrics_are_those_counted_from_the_data(tmp_path: Path) -> None:
    """Rows and nulls come from the Parquet footers; a column that may hold blanks (its smallest
    value is empty or starts with a space) or a list is still counted from the data."""
    params = {"engine": "duckdb", "memory_limit": "1GB", "threads": 1, "temp_directory": str(tmp_path)}
    rows = [
        (0, "a", "x", "", " y", 1, ["k"]),
        (0, "b", None, "  ", "z", None, []),
        (1, "c", "w", "v", "u", 2, None),
        (1, None, "w", None, None, None, ["m"]),
        (2, "d", None, None, None, None, None),
    ]
    schema = "id_part int, id string, clean string, blanks string, spaced string, n int, tags array<string>"
    parts = [0, 1, 2]
    with engine.session_scope(params) as session:
        engine.write_partitioned(session.createDataFrame(rows, schema), tmp_path / "t", "id_part")
        table = engine.read_partitions(session, tmp_path / "t", "id_part", parts)
        footers = read_part_footers(session, str(tmp_path / "t"), "id_part", parts, ["id", "clean", "blanks", "spaced"])
        from_footers = measure_table(table, "t", footers=footers)
        from_data = measure_table(table, "t")
        told = footers or {}
        lying = {n: PartFooters(f.rows, {**f.missing, "n": f.missing["n"] + 1}) for n, f in told.items()}
        stale = {n: PartFooters(f.rows + 1, f.missing) for n, f in told.items()}
        assert measure_table(table, "t", footers=lying).missing["n"] == 3 + 3, "what footers settle is taken"
        assert measure_table(table, "t", footers=stale) == from_data, "footers that miscount rows are not"

    assert from_footers == from_data
    assert from_data.missing == {"id": 1, "clean": 2, "blanks": 4, "spaced": 2, "n": 3, "tags": 3}
    assert {n: f.rows for n, f in (footers or {}).items()} == {0: 2, 1: 2, 2: 1}
    settled = set.intersection(*(set(f.missing) for f in (footers or {}).values()))
    assert settled == {"id", "clean", "n"}, "blanks and lists are left to the data"


def test_drift_arithmetic_on_hand_made_metrics() -> None:
    def snapshot(rows: int, missing_email: int, matched: int) -> Snapshot:
        part = PartMetrics(rows=rows, distinct_ids=rows, missing={"id": 0, "hashed_email": missing_email})
        table = TableMetrics("t", "id", rows, rows, rows, {0: part}, dict(part.missing))
        return Snapshot({"t": table}, MatchMetrics(rows, matched))

    settings = MonitorSettings(thresholds=parse_settings({}).thresholds, n_parts=1)
    checks = {
        c.metric: c
        for c in evaluate(snapshot(1100, 330, 990), snapshot(1000, 100, 900), settings)
        if c.table in ("t", "*")
    }

    assert checks["rows_change"].value == pytest.approx(0.10) and checks["rows_change"].status is Status.OK
    assert checks["null_rate:hashed_email_change"].value == pytest.approx(0.30 - 0.10)
    assert checks["null_rate:hashed_email_change"].status is Status.WARN
    assert checks["match_rate"].value == pytest.approx(0.90) and checks["match_rate_change"].value == 0.0
    worse = evaluate(snapshot(1700, 100, 300), snapshot(1000, 100, 900), settings)
    statuses = {(c.table, c.metric): c.status for c in worse}
    assert statuses[("t", "rows_change")] is Status.FAIL
    assert statuses[("*", "match_rate")] is Status.FAIL


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"monitor_thresholds": {"rows_change_wrn": 0.2}}, "unknown threshold 'rows_change_wrn'"),
        ({"monitor_thresholds": {"rows_change_warn": 0.9}}, "rows_change_warn (0.9) must be <="),
        ({"monitor_thresholds": {"match_rate_warn": 0.1}}, "lower is worse"),
        ({"monitor_fail_on_breach": "sometimes"}, "monitor_fail_on_breach must be true or false"),
    ],
)
def test_bad_monitor_settings_are_refused(params: dict[str, Any], fragment: str) -> None:
    with pytest.raises(JobError) as failure:
        parse_settings(params)
    assert failure.value.error_type == "ReportConfigError"
    assert fragment in str(failure.value)


# ---------------------------------------------------------------------------------------------
# step 7: the clean-rooms report


DIMENSIONS = ["age_range", "income_range"]
K = 30


def true_segments(refresh: Refresh, dimensions: list[str]) -> Counter[tuple[str, ...]]:
    """Distinct ids per segment over the whole ER table, suppressed or not (the secret side)."""
    ids: dict[tuple[str, ...], set[str]] = {}
    for row in refresh.rows("er/part_addressable_ids_er"):
        key = tuple("unknown" if row[d] is None else str(row[d]) for d in dimensions)
        ids.setdefault(key, set()).add(row["id"])
    return Counter({k: len(v) for k, v in ids.items()})


def published(reports: Refresh) -> tuple[list[dict[str, str]], dict[str, Any], str]:
    folder = Path(reports.params["reports_root"]) / "cleanrooms"
    rows = list(csv.DictReader(io.StringIO((folder / "segments.csv").read_text())))
    return rows, json.loads((folder / "segments.json").read_text()), (folder / "report.html").read_text()


def test_segments_are_exact_and_none_is_under_k(reports: Refresh) -> None:
    result = cleanrooms_report.run(
        reports.invocation("cleanrooms_report", cleanrooms_dimensions=DIMENSIONS, cleanrooms_min_k=K)
    )

    truth = true_segments(reports, DIMENSIONS)
    expected = {k: n for k, n in truth.items() if n >= K}
    assert expected and len(expected) < len(truth), "the sample must have segments on both sides of k"
    rows, body, _ = published(reports)
    assert {tuple(r[d] for d in DIMENSIONS): int(r["distinct_ids"]) for r in rows} == expected
    assert {tuple(s[d] for d in DIMENSIONS): s["distinct_ids"] for s in body["segments"]} == expected
    assert all(int(r["distinct_ids"]) >= K for r in rows)
    assert body["min_k"] == K and body["dimensions"] == DIMENSIONS
    assert result.metrics["suppressed_segments"] == len(truth) - len(expected)


def test_no_published_figure_gives_a_suppressed_count_away(reports: Refresh) -> None:
    cleanrooms_report.run(reports.invocation("cleanrooms_report", cleanrooms_dimensions=DIMENSIONS, cleanrooms_min_k=K))

    truth = true_segments(reports, DIMENSIONS)
    rows, body, page = published(reports)
    shown = {tuple(r[d] for d in DIMENSIONS): int(r["distinct_ids"]) for r in rows}
    # Figures that include a suppressed segment: the population and every margin over all segments.
    secrets = {sum(truth.values())}
    for axis, _ in enumerate(DIMENSIONS):
        for value in {k[axis] for k in truth}:
            margin = sum(n for k, n in truth.items() if k[axis] == value)
            if margin != sum(n for k, n in shown.items() if k[axis] == value):
                secrets.add(margin)
    secrets -= set(shown.values())  # a coincidence with a published cell gives nothing away
    assert secrets, "the sample must have margins that include suppressed segments"

    text = " ".join(re.findall(r">([^<]+)<", page))  # what a reader sees, not SVG geometry
    figures = {int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", text + json.dumps(body))}
    assert not figures & secrets
    assert set(body) == {
        "report",
        "generated_at",
        "run_id",
        "env",
        "dimensions",
        "measure",
        "min_k",
        "suppression",
        "published_segments",
        "published_total",
        "segments",
    }
    assert body["published_total"]["value"] == sum(shown.values())
    assert "published segments only" in body["published_total"]["label"]


def test_with_k_above_every_segment_nothing_is_published(reports: Refresh) -> None:
    cleanrooms_report.run(reports.invocation("cleanrooms_report", cleanrooms_min_k=ROWS * 10))

    rows, body, page = published(reports)
    assert rows == [] and body["segments"] == [] and body["published_total"]["value"] == 0
    assert "nothing is published" in page


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"cleanrooms_min_k": 0}, "cleanrooms_min_k must be an integer >= 1"),
        ({"cleanrooms_min_k": "many"}, "cleanrooms_min_k must be an integer >= 1"),
        ({"cleanrooms_dimensions": ["age_range", "shoe_size"]}, "'shoe_size' is not a column"),
        ({"cleanrooms_dimensions": ["state", "record_id"]}, "would publish single ids"),
        ({"cleanrooms_dimensions": []}, "non-empty list"),
    ],
)
def test_invalid_report_configuration_fails_before_anything_is_written(
    reports: Refresh, params: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(JobError) as failure:
        cleanrooms_report.run(reports.invocation("cleanrooms_report", **params))

    assert failure.value.error_type == "ReportConfigError"
    assert fragment in str(failure.value)
    assert not (Path(reports.params["reports_root"]) / "cleanrooms").exists()
