"""Step 6: data-quality metrics of the refreshed tables, their drift since the last good run, a verdict.

For each table (`part_addressable_ids`, `part_infobase_attributes`, `part_addressable_ids_er`) and each
of its parts: rows, distinct ids, duplicate keys, the missing-value rate of every column (null, or a
blank string), the part skew; across tables the share of addressable ids that have infobase
attributes. Every metric gets a status `ok` / `warn` / `fail` from thresholds that are parameters
(`monitor_thresholds`, defaults in `monitor_checks.DEFAULT_THRESHOLDS`), both on its level and on its
change since the baseline run. A `fail` fails the step with JobError(DataQualityError) unless
`monitor_fail_on_breach` is false, after the report is written, so the operator has it to read.

The baseline is the newest entry of the report's own history (`data_monitor/history/*.json`) written
by a *successful* attempt of an earlier run. It is read from storage, never from flywheel's journal:
the same job runs as a Glue job where there is no journal. A failing attempt is recorded in history
too (marked `step_succeeded: false`) but never becomes a baseline, so a bad load cannot quietly
become the norm that the next load is judged against.

Some checks are invariants, not thresholds: an empty table, an id in two parts (the bucketing is
broken and the part-wise joins of step 5 are wrong), a null id, a duplicate ER `record_id` or a part
number outside `0..n_parts-1` always fail.

Files under `{reports_root}/data_monitor/`: `metrics.json` (this run), `report.html` (self-contained,
inline SVG charts) and `history/<UTC stamp>-run<run_id>-a<attempt>.json`; each is replaced atomically
(on S3 each is one PUT).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flywheel.invocation import JobError, JobResult, StepInvocation
from flywheel.pipelines.db_refresh import catalog, engine, storage
from flywheel.pipelines.db_refresh import report_html as h
from flywheel.pipelines.db_refresh.footers import PartFooters, read_part_footers
from flywheel.pipelines.db_refresh.jobs.create_er_table import (
    ER_TABLE,
    PARTITION_COLUMN,
    read_er_table,
)
from flywheel.pipelines.db_refresh.monitor_checks import (
    DEFAULT_THRESHOLDS,
    LOWER_IS_WORSE,
    Check,
    MatchMetrics,
    MonitorSettings,
    PartMetrics,
    Snapshot,
    Status,
    TableMetrics,
    evaluate,
    format_value,
    worst,
)

log = logging.getLogger(__name__)

DATA_QUALITY_ERROR = "DataQualityError"
REPORT_CONFIG_ERROR = "ReportConfigError"
SCHEMA_VERSION = 1
HISTORY_IN_CHART = 20
DEFAULT_HISTORY_KEEP = 200


def _config_error(message: str) -> JobError:
    return JobError(message, error_type=REPORT_CONFIG_ERROR)


def _as_bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    raise _config_error(f"parameter {name} must be true or false, not {value!r}")


def parse_settings(params: Mapping[str, Any]) -> MonitorSettings:
    """Thresholds from `monitor_thresholds` over the defaults; every mistake reported at once."""
    raw = params.get("monitor_thresholds") or {}
    if not isinstance(raw, Mapping):
        raise _config_error(f"parameter monitor_thresholds must be a mapping, not {raw!r}")
    problems: list[str] = []
    merged = dict(DEFAULT_THRESHOLDS)
    for key, value in raw.items():
        if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d*)?\s*", value):
            value = float(value)  # from the command line every value is text
        if key not in DEFAULT_THRESHOLDS:
            problems.append(f"unknown threshold {key!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            problems.append(f"threshold {key} must be a number >= 0, not {value!r}")
        else:
            merged[key] = float(value)
    for key in DEFAULT_THRESHOLDS:
        if key.endswith("_warn"):
            name = key.removesuffix("_warn")
            warn, fail = merged[key], merged[f"{name}_fail"]
            if name in LOWER_IS_WORSE and warn < fail:
                problems.append(f"{name}_warn ({warn}) must be >= {name}_fail ({fail}): lower is worse")
            elif name not in LOWER_IS_WORSE and warn > fail:
                problems.append(f"{name}_warn ({warn}) must be <= {name}_fail ({fail})")
    n_parts = params.get("n_parts", 16)
    if isinstance(n_parts, bool) or not isinstance(n_parts, int) or n_parts < 1:
        problems.append(f"n_parts must be a positive integer, not {n_parts!r}")
        n_parts = 1
    if problems:
        raise _config_error(
            "invalid data monitor configuration: "
            + "; ".join(problems)
            + f". Valid thresholds: {', '.join(DEFAULT_THRESHOLDS)}"
        )
    fail_on_breach = _as_bool(params.get("monitor_fail_on_breach", True), "monitor_fail_on_breach")
    return MonitorSettings(thresholds=merged, fail_on_breach=fail_on_breach, n_parts=n_parts)


# ---------------------------------------------------------------------------------------------
# measuring (PySpark DataFrame API: SQLFrame locally, Spark on Glue)


def _is_list(dtype: str) -> bool:
    kind = dtype.lower()
    return kind.startswith("array") or kind.endswith("[]") or kind.startswith("list")


def _missing(F: Any, column: str, dtype: str) -> Any:
    """Null, or a value that carries nothing: a blank string or an empty list."""
    col = F.col(column)
    if _is_list(dtype):
        return col.isNull() | (F.size(col) == F.lit(0))
    if dtype.lower() in ("string", "varchar", "text"):
        # Only a value that starts with a space can trim to blank: trimming every value (a copy of
        # each string) doubled the cost of measuring a table.
        return col.isNull() | (col == F.lit("")) | (col.startswith(" ") & (F.trim(col) == F.lit("")))
    return col.isNull()


def measure_table(
    df: Any,
    table: str,
    *,
    key: str = "id",
    partition_col: str = PARTITION_COLUMN,
    footers: Mapping[int, PartFooters] | None = None,
) -> TableMetrics:
    """Rows, distinct ids and keys and missing values per part.

    `footers` (see `footers.read_part_footers`), when given, are the account of `df`'s own files: the
    rows and the missing values they settle are taken from them, and only the other columns are
    counted from the data.
    """
    F = engine.functions(_session_of(df))
    dtypes = [(n, t) for n, t in engine.schema_of(df) if n != partition_col]
    parts = _rows_and_missing(df, partition_col, dtypes, footers)
    ids_by_part, distinct_ids = _distinct_ids(df, partition_col)
    parts = {n: PartMetrics(p.rows, ids_by_part.get(n, 0), p.missing) for n, p in parts.items()}
    distinct_keys = distinct_ids
    if key != "id":
        distinct_keys = int(df.agg(F.countDistinct(key).alias("keys")).collect()[0]["keys"] or 0)
    return TableMetrics(
        table=table,
        key=key,
        rows=sum(p.rows for p in parts.values()),
        distinct_ids=distinct_ids,
        distinct_keys=distinct_keys,
        parts=parts,
        missing={name: sum(p.missing.get(name, 0) for p in parts.values()) for name, _ in dtypes},
    )


def _rows_and_missing(
    df: Any, partition_col: str, dtypes: Sequence[tuple[str, str]], footers: Mapping[int, PartFooters] | None
) -> dict[int, PartMetrics]:
    """Each part's rows and missing values (distinct ids left at 0): from the footers where they
    settle a column in every part, from one aggregation over the data for the rest. Footers that do
    not agree with the data's own row counts are not used."""
    known = footers or {}
    names = [name for name, _ in dtypes]
    settled = set(names).intersection(*(f.missing for f in known.values())) if known else set()
    counted = [(name, kind) for name, kind in dtypes if name not in settled]
    if known and not counted:
        return {n: PartMetrics(f.rows, 0, {c: f.missing[c] for c in names}) for n, f in known.items()}
    F = engine.functions(_session_of(df))
    missing = [
        F.sum(F.when(_missing(F, name, kind), 1).otherwise(0)).alias(f"m{i}") for i, (name, kind) in enumerate(counted)
    ]
    rows = df.groupBy(partition_col).agg(F.count(F.lit(1)).alias("rows"), *missing).collect()
    if settled and {int(r[partition_col]): int(r["rows"]) for r in rows} != {n: f.rows for n, f in known.items()}:
        return _rows_and_missing(df, partition_col, dtypes, None)
    parts: dict[int, PartMetrics] = {}
    for row in rows:
        part = int(row[partition_col])
        counts = {name: int(row[f"m{i}"] or 0) for i, (name, _) in enumerate(counted)}
        counts = {c: counts[c] if c in counts else known[part].missing[c] for c in names}
        parts[part] = PartMetrics(int(row["rows"]), 0, counts)
    return parts


def _distinct_ids(df: Any, partition_col: str) -> tuple[dict[int, int], int]:
    """(distinct ids of each part, distinct ids of the table).

    Each id is grouped once, with the lowest and the highest part it occurs in. An id whose two are
    equal lives in one part, so counting ids by their lowest part gives each part's distinct ids and
    their sum the table's. Counting distinct (part, id) pairs and then distinct ids built two hash
    tables of every id, a third of this step at 10M rows. Only a table whose ids cross parts (broken
    bucketing, which fails an invariant) is counted part by part the slow way, so that the report
    says how many ids are in several parts.
    """
    F = engine.functions(_session_of(df))
    spans = (
        df.where(F.col("id").isNotNull())
        .groupBy("id")
        .agg(F.min(partition_col).alias("lowest"), F.max(partition_col).alias("highest"))
        .groupBy("lowest", "highest")
        .agg(F.count(F.lit(1)).alias("ids"))
        .collect()
    )
    ids_by_part: dict[int, int] = {}
    for row in spans:
        ids_by_part[int(row["lowest"])] = ids_by_part.get(int(row["lowest"]), 0) + int(row["ids"])
    if any(row["lowest"] != row["highest"] for row in spans):
        crossing = df.groupBy(partition_col).agg(F.countDistinct("id").alias("ids")).collect()
        ids_by_part = {int(row[partition_col]): int(row["ids"]) for row in crossing}
    return ids_by_part, sum(int(row["ids"]) for row in spans)


def measure_match(
    addressable: Any,
    infobase: Any,
    *,
    partition_col: str = PARTITION_COLUMN,
    measured: tuple[TableMetrics, TableMetrics] | None = None,
) -> MatchMetrics:
    """Distinct addressable ids, and how many of them have an infobase row in the same part.

    `measured`: the two tables' own metrics, when taken. A table whose rows and distinct ids are equal
    has one row per id (and no null id), so its ids are joined as they are, without the DISTINCT.
    """
    F = engine.functions(_session_of(addressable))
    keys = [partition_col, "id"]
    unique = [m is not None and m.rows == m.distinct_ids for m in (measured or (None, None))]
    ids = addressable.select(*keys).where(F.col("id").isNotNull())
    ids = ids if unique[0] else ids.distinct()
    known = infobase.select(*keys).where(F.col("id").isNotNull())
    known = (known if unique[1] else known.distinct()).withColumn("_known", F.lit(1))
    row = (
        ids.join(known, on=keys, how="left")
        .agg(F.count(F.lit(1)).alias("ids"), F.count("_known").alias("matched"))
        .collect()[0]
    )
    return MatchMetrics(addressable_ids=int(row["ids"] or 0), matched_ids=int(row["matched"] or 0))


def _session_of(df: Any) -> Any:
    return df.sparkSession if hasattr(df, "sparkSession") else df.session


# ---------------------------------------------------------------------------------------------
# history: the report's own memory of earlier runs


@dataclass(frozen=True)
class HistoryEntry:
    path: str
    document: Mapping[str, Any]

    @property
    def run_id(self) -> int | None:
        value = self.document.get("run_id")
        return int(value) if isinstance(value, int) else None

    @property
    def succeeded(self) -> bool:
        return bool(self.document.get("step_succeeded"))

    @property
    def snapshot(self) -> Snapshot:
        return Snapshot.from_json(self.document["metrics"])


def history_name(generated_at: datetime, run_id: int, attempt: int) -> str:
    """Sortable by time: `20250101T120000123456Z-run42-a1.json`."""
    return f"{generated_at.strftime('%Y%m%dT%H%M%S%fZ')}-run{run_id}-a{attempt}.json"


def read_history(directory: str | Path) -> list[HistoryEntry]:
    """Entries oldest first. An unreadable entry is skipped with a warning, never fatal: losing one
    baseline must not block a refresh."""
    entries: list[HistoryEntry] = []
    store = storage.storage_for(directory)
    for path in store.list_files(str(directory), (".json",)):
        try:
            document = json.loads(store.read_text(path) or "")
            if document.get("schema_version") != SCHEMA_VERSION:
                raise ValueError(f"schema_version {document.get('schema_version')!r}")
            Snapshot.from_json(document["metrics"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipping unreadable data monitor history entry %s: %s", path, exc)
            continue
        entries.append(HistoryEntry(path, document))
    return entries


def pick_baseline(entries: Sequence[HistoryEntry], run_id: int) -> HistoryEntry | None:
    """The newest entry of a successful attempt of another run."""
    for entry in reversed(entries):
        if entry.succeeded and entry.run_id != run_id:
            return entry
    return None


def prune_history(directory: str | Path, keep: int) -> None:
    store = storage.storage_for(directory)
    store.delete(store.list_files(str(directory), (".json",))[:-keep])


# ---------------------------------------------------------------------------------------------
# rendering


def _pct(value: float) -> str:
    return f"{value:.2%}"


def _status_of(checks: Sequence[Check], table: str, metric: str) -> Status:
    return worst([c.status for c in checks if c.table == table and c.metric.startswith(metric)])


def render_html(document: Mapping[str, Any], history: Sequence[Mapping[str, Any]], n_parts: int) -> str:
    """The page an operator opens after a warning: what breached first, then every table in detail."""
    snapshot = Snapshot.from_json(document["metrics"])
    baseline_doc = document.get("baseline")
    baseline = Snapshot.from_json(baseline_doc["metrics"]) if baseline_doc else None
    checks = [
        Check(c["table"], c["part"], c["metric"], c["value"], c["previous"], Status(c["status"]), c["reason"])
        for c in document["checks"]
    ]
    status = Status(document["status"])
    sections: list[str] = [
        f"<p>Overall status {h.badge(status)}"
        + (
            f" · baseline: run {h.esc(baseline_doc['run_id'])} at {h.esc(baseline_doc['generated_at'])}"
            if baseline_doc
            else " · no baseline yet (first successful run): drift is not graded"
        )
        + "</p>"
    ]
    attention = sorted((c for c in checks if c.status is not Status.OK), key=lambda c: -c.status.rank)
    sections.append("<h2>Checks that need attention</h2>")
    sections.append(
        h.table(
            ["status", "table", "metric", "value", "baseline", "why"],
            [[h.badge(c.status), c.table, c.metric, format_value(c.value), c.previous, c.reason] for c in attention],
            raw=(0,),
            numeric=(3, 4),
        )
        if attention
        else "<p>None: every metric is within its thresholds.</p>"
    )
    m = snapshot.match
    sections.append("<h2>Addressable ids with infobase attributes</h2>")
    sections.append(
        h.table(
            ["addressable ids", "with infobase", "match rate", "baseline", "status"],
            [
                [
                    f"{m.addressable_ids:,}",
                    f"{m.matched_ids:,}",
                    _pct(m.rate),
                    _pct(baseline.match.rate) if baseline else None,
                    h.badge(_status_of(checks, "*", "match_rate")),
                ]
            ],
            numeric=(0, 1, 2, 3),
            raw=(4,),
        )
    )
    for name, t in snapshot.tables.items():
        before = baseline.tables.get(name) if baseline else None
        sections.append(f"<h2>{h.esc(name)}</h2>")
        sections.append(
            h.table(
                ["rows", "distinct ids", f"duplicate {t.key}", "duplicate rate", "parts", "part skew", "worst check"],
                [
                    [
                        f"{t.rows:,}" + (f" (was {before.rows:,})" if before else ""),
                        f"{t.distinct_ids:,}" + (f" (was {before.distinct_ids:,})" if before else ""),
                        f"{t.duplicate_keys:,}",
                        _pct(t.duplicate_rate),
                        f"{len(t.parts)} / {n_parts}",
                        f"{t.part_skew(n_parts):.2f}",
                        h.badge(worst([c.status for c in checks if c.table == name])),
                    ]
                ],
                numeric=(0, 1, 2, 3, 5),
                raw=(6,),
            )
        )
        part_ids = sorted(set(t.parts) | set(range(n_parts)))
        sections.append(
            h.bar_chart(
                [f"part {p}" for p in part_ids],
                [t.parts[p].rows if p in t.parts else 0 for p in part_ids],
                title=f"rows per part (skew status: {_status_of(checks, name, 'part_skew')})",
                statuses=[_status_of(checks, name, "part_skew").value] * len(part_ids),
                bar_height=12,
            )
        )
        columns = sorted(t.missing)
        sections.append(
            h.bar_chart(
                columns,
                [t.null_rate(c) * 100 for c in columns],
                title="missing values per column, % of rows (null, blank or empty)",
                value_format="{:.2f} %",
                statuses=[_status_of(checks, name, f"null_rate:{c}").value for c in columns],
                bar_height=12,
            )
        )
    if history:
        labels = [str(d.get("run_id", "?")) for d in history]
        series = [
            h.Series(
                name,
                [
                    float(d["metrics"]["tables"][name]["rows"]) if name in d["metrics"]["tables"] else None
                    for d in history
                ],
            )
            for name in snapshot.tables
        ]
        sections.append("<h2>History</h2>")
        sections.append(h.line_chart(labels, series, title="rows per table by run id (newest last)"))
    sections.append("<h2>Every check</h2><details><summary>show all</summary>")
    sections.append(
        h.table(
            ["status", "table", "metric", "value", "baseline", "why"],
            [[h.badge(c.status), c.table, c.metric, format_value(c.value), c.previous, c.reason] for c in checks],
            raw=(0,),
            numeric=(3, 4),
        )
    )
    sections.append("</details>")
    subtitle = (
        f"generated {document['generated_at']} · run {document['run_id']} attempt {document['attempt']} "
        f"· env {document['env']}"
    )
    return h.page("Data monitor", sections, subtitle=subtitle)


# ---------------------------------------------------------------------------------------------
# the job


def build_document(
    invocation: StepInvocation,
    settings: MonitorSettings,
    snapshot: Snapshot,
    baseline: HistoryEntry | None,
    generated_at: datetime,
) -> dict[str, Any]:
    checks = evaluate(snapshot, baseline.snapshot if baseline else None, settings)
    status = worst([c.status for c in checks])
    return {
        "schema_version": SCHEMA_VERSION,
        "report": "data-monitor",
        "generated_at": generated_at.isoformat(timespec="seconds"),
        "run_id": invocation.run_id,
        "attempt": invocation.attempt,
        "env": invocation.env,
        "status": status.value,
        "step_succeeded": not (status is Status.FAIL and settings.fail_on_breach),
        "fail_on_breach": settings.fail_on_breach,
        "thresholds": dict(settings.thresholds),
        "n_parts": settings.n_parts,
        "baseline": (
            {
                "file": storage.name_of(baseline.path),
                "run_id": baseline.run_id,
                "generated_at": baseline.document.get("generated_at"),
                "metrics": baseline.document["metrics"],
            }
            if baseline
            else None
        ),
        "metrics": snapshot.to_json(),
        "checks": [c.to_json() for c in checks],
    }


def measure(invocation: StepInvocation) -> Snapshot:
    """Metrics of the registered part tables and of the committed ER table."""
    params = invocation.params
    with engine.session_scope(params) as session:
        prefix = str(params.get("table_prefix") or "")
        addressable = catalog.read_part_table(session, params, f"{prefix}addressable_ids")
        infobase = catalog.read_part_table(session, params, f"{prefix}infobase_attributes")
        er = read_er_table(session, str(params["er_root"]))
        tables = {
            f"{prefix}addressable_ids": measure_table(
                addressable,
                f"{prefix}addressable_ids",
                footers=part_table_footers(session, params, f"{prefix}addressable_ids", addressable),
            ),
            f"{prefix}infobase_attributes": measure_table(
                infobase,
                f"{prefix}infobase_attributes",
                footers=part_table_footers(session, params, f"{prefix}infobase_attributes", infobase),
            ),
            f"{prefix}addressable_ids_er": measure_table(
                er, f"{prefix}addressable_ids_er", key="record_id", footers=er_table_footers(session, params, er)
            ),
        }
        measured = (tables[f"{prefix}addressable_ids"], tables[f"{prefix}infobase_attributes"])
        match = measure_match(addressable, infobase, measured=measured)
    return Snapshot(tables=tables, match=match)


def part_table_footers(
    session: engine.Session, params: Mapping[str, Any], table: str, df: Any
) -> dict[int, PartFooters] | None:
    """The footers of a registered part table's registered partitions (none on Spark)."""
    if engine.engine_name(params) == "spark":
        return None
    info = catalog.get_table(params, table)
    return read_part_footers(session, info.storage_root, info.partition_col, info.partition_values, _text_columns(df))


def er_table_footers(session: engine.Session, params: Mapping[str, Any], df: Any) -> dict[int, PartFooters] | None:
    """The footers of the committed ER table's partitions, those `read_er_table` reads (none on Spark)."""
    path = storage.join(str(params["er_root"]), ER_TABLE)
    manifest = engine.read_manifest(path)
    if manifest is None or engine.engine_name(params) == "spark":
        return None
    return read_part_footers(session, path, PARTITION_COLUMN, sorted(manifest.partitions), _text_columns(df))


def _text_columns(df: Any) -> list[str]:
    return [name for name, kind in engine.schema_of(df) if kind.lower() in ("string", "varchar", "text")]


def run(invocation: StepInvocation) -> JobResult:
    params = invocation.params
    settings = parse_settings(params)
    keep = params.get("monitor_history_keep", DEFAULT_HISTORY_KEEP)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise _config_error(f"monitor_history_keep must be an integer >= 1, not {keep!r}")
    root = storage.join(str(params["reports_root"]), "data_monitor")
    history_dir = storage.join(root, "history")
    store = storage.storage_for(root)

    snapshot = measure(invocation)
    entries = read_history(history_dir)
    baseline = pick_baseline(entries, invocation.run_id)
    generated_at = datetime.now(UTC)
    document = build_document(invocation, settings, snapshot, baseline, generated_at)

    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    entry_name = history_name(generated_at, invocation.run_id, invocation.attempt)
    store.write_text(storage.join(history_dir, entry_name), text)
    store.write_text(storage.join(root, "metrics.json"), text)
    shown = [e.document for e in entries[-(HISTORY_IN_CHART - 1) :]] + [document]
    store.write_text(storage.join(root, "report.html"), render_html(document, shown, settings.n_parts))
    prune_history(history_dir, keep)

    checks = document["checks"]
    failed = [c for c in checks if c["status"] == Status.FAIL.value]
    warned = [c for c in checks if c["status"] == Status.WARN.value]
    for c in warned:
        log.warning("data quality warning: %s %s: %s", c["table"], c["metric"], c["reason"])
    if failed and settings.fail_on_breach:
        listed = "; ".join(f"{c['table']} {c['metric']}: {c['reason']}" for c in failed[:10])
        more = f" (and {len(failed) - 10} more)" if len(failed) > 10 else ""
        raise JobError(
            f"{len(failed)} data quality check(s) failed: {listed}{more}. See {storage.join(root, 'report.html')}; "
            "fix the source data and re-run from step 1, or, if the change is expected, raise the "
            "threshold in monitor_thresholds (or set monitor_fail_on_breach: false) and resume",
            error_type=DATA_QUALITY_ERROR,
        )
    return JobResult(
        outputs=({"path": root, "files": ["metrics.json", "report.html", f"history/{entry_name}"]},),
        metrics={
            "status": document["status"],
            "checks": len(checks),
            "warnings": len(warned),
            "failures": len(failed),
            "baseline_run_id": baseline.run_id if baseline else None,
            "match_rate": snapshot.match.rate,
        },
    )
