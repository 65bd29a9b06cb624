"""Step 7: audience segment sizes for clean-room partners, with small segments suppressed.

A segment is one combination of values of the configured dimensions (`cleanrooms_dimensions`,
default age range × income range × state) and its size is the number of distinct addressable ids of
the ER table (step 5) in it; a missing attribute value counts as the value `unknown`. Following the
clean-rooms minimum-aggregation rule, a segment with fewer than `cleanrooms_min_k` (default 100)
distinct ids is *suppressed*: it is filtered out inside the engine, so its count never reaches this
process, let alone a file.

Suppression alone is not enough: a count can also be recovered by subtraction. If a report published
a grand total, or a margin such as "ids in Ohio" over all ids, then that figure minus the published
Ohio cells would be the sum of the suppressed Ohio cells, and exactly one suppressed cell's count
when only one is suppressed. So this report publishes **no total and no margin over the population**.
The only aggregate it shows is `published_total`, the sum of the published segments, labelled as such
(anyone can compute it from the rows, so it reveals nothing new); charts likewise sum published cells
only. The number of suppressed segments and the population size are reported to the operator in the
job's metrics (flywheel's journal) but are not part of the published files, since together with the
published cells they would bound the suppressed ones.

Out of scope, and worth knowing: differencing *across* reports. Two reports over the same population
with different dimension sets (say age × income and age × income × state) let a reader subtract one
from the other. Keep one dimension set per audience, or apply k to the coarser report's differences.

Files under `{reports_root}/cleanrooms/`: `segments.csv`, `segments.json`, `report.html`, replaced as a
whole directory (a reader never mixes files from two runs). On S3, which cannot swap a prefix, each is
one PUT, `segments.json` last: a reader that starts while they are written may see a newer CSV or page
beside the previous JSON for that moment (`generated_at` in both tells them apart). Invalid
configuration (an unknown or list dimension, k < 1) fails with JobError(ReportConfigError) before any data is read.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flywheel.invocation import JobError, JobResult, StepInvocation
from flywheel.pipelines.db_refresh import engine, storage
from flywheel.pipelines.db_refresh import report_html as h
from flywheel.pipelines.db_refresh.jobs.create_er_table import ER_TABLE, PARTITION_COLUMN, read_er_table

log = logging.getLogger(__name__)

REPORT_CONFIG_ERROR = "ReportConfigError"
DEFAULT_DIMENSIONS: tuple[str, ...] = ("age_range", "income_range", "state")
DEFAULT_MIN_K = 100
UNKNOWN = "unknown"
MEASURE = "distinct_ids"
_NOT_DIMENSIONS = ("id", "record_id", PARTITION_COLUMN)


@dataclass(frozen=True)
class CleanroomsConfig:
    dimensions: tuple[str, ...] = DEFAULT_DIMENSIONS
    min_k: int = DEFAULT_MIN_K


@dataclass(frozen=True, order=True)
class Segment:
    values: tuple[str, ...]
    ids: int


def _config_error(message: str) -> JobError:
    return JobError(message, error_type=REPORT_CONFIG_ERROR)


def parse_config(params: Mapping[str, Any]) -> CleanroomsConfig:
    """Dimensions and k from the parameters; a list or a comma-separated string are both accepted."""
    raw_k = params.get("cleanrooms_min_k", DEFAULT_MIN_K)
    if isinstance(raw_k, str) and raw_k.strip().lstrip("-").isdigit():
        raw_k = int(raw_k.strip())
    if isinstance(raw_k, bool) or not isinstance(raw_k, int) or raw_k < 1:
        raise _config_error(
            f"cleanrooms_min_k must be an integer >= 1, not {raw_k!r}; fix: set it to the clean room's "
            f"minimum aggregation threshold (default {DEFAULT_MIN_K})"
        )
    raw_dims = params.get("cleanrooms_dimensions", DEFAULT_DIMENSIONS)
    if isinstance(raw_dims, str):
        raw_dims = [d.strip() for d in raw_dims.split(",") if d.strip()]
    if not isinstance(raw_dims, list | tuple) or not raw_dims or not all(isinstance(d, str) for d in raw_dims):
        raise _config_error(
            f"cleanrooms_dimensions must be a non-empty list of column names, not {raw_dims!r}; "
            f"fix: e.g. {list(DEFAULT_DIMENSIONS)}"
        )
    dims = tuple(raw_dims)
    repeated = sorted({d for d in dims if dims.count(d) > 1})
    if repeated:
        raise _config_error(f"cleanrooms_dimensions names {repeated} more than once; fix: list each once")
    return CleanroomsConfig(dimensions=dims, min_k=raw_k)


def check_dimensions(config: CleanroomsConfig, dtypes: Sequence[tuple[str, str]]) -> None:
    """Every dimension must be a scalar attribute column of the source table."""
    types = dict(dtypes)
    candidates = [c for c in types if c not in _NOT_DIMENSIONS and not _is_list(types[c])]
    problems: list[str] = []
    for dim in config.dimensions:
        if dim in _NOT_DIMENSIONS:
            problems.append(f"{dim!r} identifies records, so segmenting by it would publish single ids")
        elif dim not in types:
            problems.append(f"{dim!r} is not a column of {ER_TABLE}")
        elif _is_list(types[dim]):
            problems.append(f"{dim!r} is a list column; a segment dimension needs one value per id")
    if problems:
        raise _config_error(
            "invalid cleanrooms_dimensions: " + "; ".join(problems) + f". Usable columns: {', '.join(candidates)}"
        )


def _is_list(dtype: str) -> bool:
    kind = dtype.lower()
    return kind.startswith("array") or kind.endswith("[]") or kind.startswith("list")


def count_segments(df: Any, config: CleanroomsConfig) -> tuple[list[Segment], int, int]:
    """Published segments (>= k distinct ids), the number suppressed and the number of segments.

    The k filter runs in the engine: a suppressed segment's count is never collected, only that the
    segment exists (its count comes back null). One aggregation answers both: counting the segments
    in a second query computed every segment's distinct ids twice.
    """
    F = engine.functions(df.sparkSession if hasattr(df, "sparkSession") else df.session)
    keyed = df.select(
        "id",
        *[F.coalesce(F.col(d).cast("string"), F.lit(UNKNOWN)).alias(d) for d in config.dimensions],
    )
    sizes = keyed.groupBy(*config.dimensions).agg(F.countDistinct("id").alias(MEASURE))
    at_least_k = F.when(F.col(MEASURE) >= F.lit(config.min_k), F.col(MEASURE))
    rows = sizes.select(*config.dimensions, at_least_k.alias(MEASURE)).collect()
    published = sorted(
        Segment(tuple(str(row[d]) for d in config.dimensions), int(row[MEASURE]))
        for row in rows
        if row[MEASURE] is not None
    )
    return published, len(rows) - len(published), len(rows)


def publishable(segments: Sequence[Segment], min_k: int) -> list[Segment]:
    """The last gate before anything is written: refuse a segment under k outright."""
    small = [s for s in segments if s.ids < min_k]
    if small:  # count_segments filters these; reaching here means a bug, and publishing would leak
        raise JobError(
            f"{len(small)} segment(s) below k={min_k} reached the writer; nothing was published",
            error_type="SuppressionError",
        )
    return list(segments)


# ---------------------------------------------------------------------------------------------
# rendering


def render_csv(segments: Sequence[Segment], config: CleanroomsConfig) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*config.dimensions, MEASURE])
    for segment in segments:
        writer.writerow([*segment.values, segment.ids])
    return out.getvalue()


def render_json(segments: Sequence[Segment], config: CleanroomsConfig, meta: Mapping[str, Any]) -> str:
    body = {
        "report": "cleanrooms-segments",
        **meta,
        "dimensions": list(config.dimensions),
        "measure": MEASURE,
        "min_k": config.min_k,
        "suppression": (
            f"segments with fewer than {config.min_k} distinct ids are left out; no total or margin "
            "over all ids is published, so a left-out count cannot be derived by subtraction"
        ),
        "published_segments": len(segments),
        "published_total": {
            "value": sum(s.ids for s in segments),
            "label": "sum over the published segments only; not the population size",
        },
        "segments": [{**dict(zip(config.dimensions, s.values, strict=True)), MEASURE: s.ids} for s in segments],
    }
    return json.dumps(body, indent=2) + "\n"


def render_html(segments: Sequence[Segment], config: CleanroomsConfig, meta: Mapping[str, Any]) -> str:
    dims = " × ".join(config.dimensions)
    published_total = sum(s.ids for s in segments)
    sections = [
        '<p class="note">Segments with fewer than '
        f"<b>{config.min_k:,}</b> distinct ids are suppressed. No total or margin over all ids is "
        "published; every sum on this page is over the published segments only.</p>",
        h.table(
            ["dimensions", "min k", "published segments", "sum over published segments"],
            [[dims, f"{config.min_k:,}", f"{len(segments):,}", f"{published_total:,}"]],
            numeric=(1, 2, 3),
        ),
    ]
    if segments:
        first = config.dimensions[0]
        by_first: dict[str, int] = {}
        for s in segments:
            by_first[s.values[0]] = by_first.get(s.values[0], 0) + s.ids
        labels = sorted(by_first)
        sections.append("<h2>Published ids by " + h.esc(first) + " (published segments only)</h2>")
        sections.append(
            h.bar_chart(labels, [by_first[x] for x in labels], title=f"sum of published segments by {first}")
        )
        top = sorted(segments, key=lambda s: (-s.ids, s.values))[:25]
        sections.append("<h2>Largest published segments</h2>")
        sections.append(h.bar_chart([" / ".join(s.values) for s in top], [s.ids for s in top], title=dims))
    sections.append("<h2>All published segments</h2>")
    sections.append(
        h.table(
            [*config.dimensions, "distinct ids"],
            [[*s.values, f"{s.ids:,}"] for s in segments],
            numeric=(len(config.dimensions),),
        )
        if segments
        else "<p>No segment reaches the minimum size; nothing is published.</p>"
    )
    subtitle = f"generated {meta.get('generated_at', '')} · run {meta.get('run_id', '')} · env {meta.get('env', '')}"
    return h.page("Clean rooms: audience segments", sections, subtitle=subtitle)


def replace_dir(target: Path, files: Mapping[str, str]) -> None:
    """Write `files` into a staging directory beside `target`, then swap it in as `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.staging-{uuid.uuid4().hex[:8]}"
    retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        for name, text in files.items():
            h.write_text_atomic(staging / name, text)
        if target.exists():
            target.rename(retired)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)


def publish(target: str, files: Mapping[str, str]) -> None:
    """`replace_dir` for a local directory; on S3 one PUT per file, in the order given."""
    if not storage.is_remote(target):
        replace_dir(Path(target), files)
        return
    s3 = storage.S3Storage()
    for name, text in files.items():
        s3.write_text(storage.join(target, name), text)


# ---------------------------------------------------------------------------------------------
# the job


def run(invocation: StepInvocation) -> JobResult:
    params = invocation.params
    config = parse_config(params)
    target = storage.join(str(params["reports_root"]), "cleanrooms")
    with engine.session_scope(params) as session:
        df = read_er_table(session, str(params["er_root"]))
        check_dimensions(config, engine.schema_of(df))
        segments, suppressed, total_segments = count_segments(df, config)
    segments = publishable(segments, config.min_k)
    meta = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": invocation.run_id,
        "env": invocation.env,
    }
    publish(
        target,
        {
            "segments.csv": render_csv(segments, config),
            "report.html": render_html(segments, config, meta),
            "segments.json": render_json(segments, config, meta),
        },
    )
    log.info("published %d segments (%d suppressed below k=%d)", len(segments), suppressed, config.min_k)
    return JobResult(
        outputs=({"path": target, "files": ["segments.csv", "segments.json", "report.html"]},),
        metrics={
            "segments": total_segments,
            "published_segments": len(segments),
            "suppressed_segments": suppressed,
            "min_k": config.min_k,
            "dimensions": list(config.dimensions),
        },
    )
