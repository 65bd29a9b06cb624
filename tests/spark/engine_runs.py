"""Run the whole db-refresh pipeline in this process on one engine, and read back what it produced in an
engine-neutral form, so that a DuckDB run and a Spark run can be compared field by field.

The parameters are the ones the runner gives each step in the `local` environment (the real
`pipeline.yaml` and `project.yaml`, resolved by `flywheel.params.resolve_params`), with a few overrides
for tiny data. Jobs are called through `flywheel.entry.call_job`, the same call a step's subprocess and a
Glue job make. Outputs are read back with DuckDB directly (not through either engine), from the files.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from flywheel.entry import call_job
from flywheel.invocation import StepInvocation
from flywheel.params import resolve_params
from flywheel.pipelines.db_refresh import catalog
from flywheel.spec import load_project

PARTITIONED = (
    "split_part/addressable_ids",
    "split_part/infobase_attributes",
    "er/part_addressable_ids_er",
)
SEGMENT_DIMENSIONS = ["age_range", "gender"]
SEGMENT_MIN_K = 40


def step_params(home: Path, n_parts: int) -> dict[str, Any]:
    """Overrides on top of the local environment: tiny data, small memory, segments that publish."""
    return {
        "n_parts": n_parts,
        "memory_limit": "1GB",
        "threads": 1,
        "temp_directory": str(home / "tmp"),
        "cleanrooms_dimensions": SEGMENT_DIMENSIONS,
        "cleanrooms_min_k": SEGMENT_MIN_K,
        "monitor_fail_on_breach": False,
    }


def run_pipeline(home: Path, raw_root: Path, engine: str, n_parts: int) -> dict[str, Mapping[str, Any]]:
    """Every step of db-refresh in order (step 3 once per context); returns each key's job metrics."""
    project = load_project("db-refresh")
    spec, env = project.spec, project.config.environment("local")
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "raw").exists():
        (data / "raw").symlink_to(raw_root, target_is_directory=True)
    metrics: dict[str, Mapping[str, Any]] = {}
    for key in spec.keys:
        params = {**resolve_params(spec, key, "local", env, str(home), engine=engine), **step_params(home, n_parts)}
        invocation = StepInvocation(
            pipeline=spec.pipeline,
            step=key.step,
            context=key.context,
            run_id=1,
            attempt=1,
            env="local",
            job=spec.step(key.step).job or "",
            params=params,
        )
        body = call_job(invocation)
        assert body["ok"], (
            f"{engine} n_parts={n_parts}: {key} failed: {body.get('error_type')} {body.get('error_message')}"
        )
        metrics[str(key)] = body.get("metrics") or {}
    return metrics


@dataclass(frozen=True)
class Produced:
    """Everything a run left behind that must not depend on the engine."""

    engine: str
    n_parts: int
    step_metrics: Mapping[str, Mapping[str, Any]]
    parts: Mapping[str, Mapping[str, int]]
    """output -> id -> the part directory it is in."""
    rows: Mapping[str, Counter[tuple[Any, ...]]]
    """output -> every row (all columns, the part included) with its multiplicity."""
    column_types: Mapping[str, frozenset[tuple[str, ...]]]
    """output -> the Parquet leaf columns of its files: (name, physical type, meaning, repetition, children)."""
    manifest_rows: Mapping[str, Mapping[int, int]]
    catalog: Mapping[str, Any]
    schema_mapping: Any
    monitor: Mapping[str, Any]
    segments_csv: str
    segments_json: Mapping[str, Any]
    writers: frozenset[str]
    """The `created_by` of the ER table's Parquet files: which engine wrote them."""


def collect(home: Path, engine: str, n_parts: int, step_metrics: Mapping[str, Mapping[str, Any]]) -> Produced:
    data = home / "data"
    conn = duckdb.connect()
    conn.execute("SET TimeZone = 'UTC'")
    parts: dict[str, dict[str, int]] = {}
    rows: dict[str, Counter[tuple[Any, ...]]] = {}
    types: dict[str, frozenset[tuple[str, ...]]] = {}
    manifests: dict[str, dict[int, int]] = {}
    for output in PARTITIONED:
        root = data / output
        files = sorted(str(p) for p in root.glob("id_part=*/*.parquet"))
        assert files, f"{engine}: no files under {root}"
        relation = conn.execute(
            "SELECT * FROM read_parquet(?, hive_partitioning = true, hive_types = {'id_part': INTEGER})", [files]
        )
        names = [d[0] for d in relation.description]
        table = [tuple(_hashable(v) for v in row) for row in relation.fetchall()]
        rows[output] = Counter(table)
        at_id, at_part = names.index("id"), names.index("id_part")
        parts[output] = {}
        for row in table:
            assert parts[output].setdefault(row[at_id], row[at_part]) == row[at_part], f"{row[at_id]} in two parts"
        types[output] = parquet_leaf_types(conn, files)
        manifest = json.loads((root / "_manifest.json").read_text())
        manifests[output] = {int(k): int(v["rows"]) for k, v in manifest["partitions"].items()}
    monitor = json.loads((data / "reports/data_monitor/metrics.json").read_text())
    segments = json.loads((data / "reports/cleanrooms/segments.json").read_text())
    segments.pop("generated_at", None)
    er_files = [str(p) for p in (data / PARTITIONED[2]).glob("id_part=*/*.parquet")]
    writers = frozenset(
        str(r[0])
        for r in conn.execute("SELECT DISTINCT created_by FROM parquet_file_metadata(?)", [er_files]).fetchall()
    )
    conn.close()
    return Produced(
        engine=engine,
        n_parts=n_parts,
        step_metrics=step_metrics,
        parts=parts,
        rows=rows,
        column_types=types,
        manifest_rows=manifests,
        catalog=_catalog_view(home),
        schema_mapping=json.loads((data / "er/schema_mapping.json").read_text()),
        monitor={k: monitor[k] for k in ("status", "metrics", "checks", "n_parts", "thresholds")},
        segments_csv=(data / "reports/cleanrooms/segments.csv").read_text(),
        segments_json=segments,
        writers=writers,
    )


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# How each writer annotates a type differs in form, not meaning: Spark adds the String and List logical
# types beside the UTF8 and LIST converted types that say the same; DuckDB marks INT32 columns INT_32
# where Spark leaves the plain physical type (which means a signed 32-bit integer). Any other
# annotation, timestamps included, is compared exactly as written.
_SAME_MEANING = {
    ("BYTE_ARRAY", "UTF8", None): "string",
    ("BYTE_ARRAY", "UTF8", "StringType()"): "string",
    ("None", "LIST", None): "list",
    ("None", "LIST", "ListType()"): "list",
    ("INT32", None, None): "int32",
    ("INT32", "INT_32", None): "int32",
}


def parquet_leaf_types(conn: duckdb.DuckDBPyConnection, files: Sequence[str]) -> frozenset[tuple[str, ...]]:
    """The columns of every file's footer, the root element left out (its name is the writer's)."""
    found = conn.execute(
        "SELECT file_name, name, type, converted_type, logical_type, repetition_type, num_children "
        "FROM parquet_schema(?)",
        [list(files)],
    ).fetchall()
    columns: set[tuple[str, ...]] = set()
    seen_root: set[str] = set()
    for file_name, name, physical, converted, logical, repetition, children in found:
        if file_name not in seen_root:  # the first element of each file is its root
            seen_root.add(file_name)
            continue
        if physical == "INT96":
            raise AssertionError(f"{file_name}: column {name} is INT96 (Spark's legacy timestamp)")
        meaning = _SAME_MEANING.get((str(physical), converted, logical), f"{converted}/{logical}")
        columns.add((str(name), str(physical), meaning, str(repetition), str(children)))
    return frozenset(columns)


def _catalog_view(home: Path) -> Mapping[str, Any]:
    """Registered tables as the catalog has them: schema, partitions and their row counts (not file names)."""
    project = load_project("db-refresh")
    settings = project.config.environment("local").settings
    params = {
        "catalog": str(settings["catalog"]).replace("{home}", str(home)),
        "database": settings["database"],
    }
    return {
        t.name: {
            "columns": t.columns,
            "partition_col": t.partition_col,
            "partitions": [(p.value, p.rows) for p in t.partitions],
        }
        for t in catalog.list_tables(params)
    }
