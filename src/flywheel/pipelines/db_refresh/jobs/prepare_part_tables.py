"""Step 4, prepare part tables: partition repair (the MSCK REPAIR TABLE equivalent) and a parity check.

After this step every `id_part=<k>` directory under a part table's storage root is a registered
partition and nothing else is. Both part tables must then hold the same `n_parts` non-empty parts,
0..n_parts-1, because the ER step joins part k of one with part k of the other.

Everything is checked on disk before the catalog is touched: a failed check leaves the catalog as it
was, so fixing the data and resuming starts from a known state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flywheel.invocation import JobError, JobResult, StepInvocation
from flywheel.pipelines.db_refresh import catalog
from flywheel.pipelines.db_refresh.engine import JobErrorType, job_error
from flywheel.pipelines.db_refresh.jobs.addressable_split import parts_param

TABLES = ("addressable_ids", "infobase_attributes")


def run(invocation: StepInvocation) -> JobResult:
    params = invocation.params
    n_parts = parts_param(params)
    names = [f"{params.get('table_prefix') or ''}{t}" for t in TABLES]
    infos = _registered(params, names)
    scanned = {info.name: catalog.scan_partitions(info.storage_root, info.partition_col) for info in infos}
    _check(scanned, {info.name: info.storage_root for info in infos}, n_parts)

    outputs: list[Mapping[str, Any]] = []
    metrics: dict[str, Any] = {"n_parts": n_parts}
    for info in infos:
        added, dropped = catalog.sync_partitions(params, info.name, [p.value for p in scanned[info.name]])
        repaired = catalog.get_table(params, info.name)
        outputs.append(
            {
                "uri": f"partitions:{info.name}",
                "kind": "partitions",
                "table": repaired.qualified_name,
                "partitions": list(repaired.partition_values),
                "added": list(added),
                "dropped": list(dropped),
                "rows": sum(p.rows for p in repaired.partitions),
                "fingerprint": catalog.fingerprint_of(repaired),
            }
        )
        metrics[f"{info.name}.added"] = len(added)
        metrics[f"{info.name}.dropped"] = len(dropped)
        metrics[f"{info.name}.rows"] = sum(p.rows for p in repaired.partitions)
    return JobResult(outputs=tuple(outputs), metrics=metrics)


def _registered(params: Mapping[str, Any], names: list[str]) -> list[catalog.TableInfo]:
    """Both tables, or one `tables-not-registered` error naming every missing one."""
    infos, missing = [], []
    for name in names:
        try:
            infos.append(catalog.get_table(params, name))
        except JobError as exc:
            if exc.error_type != JobErrorType.TABLE_NOT_REGISTERED:
                raise
            missing.append(name)
    if missing:
        raise job_error(
            JobErrorType.TABLE_NOT_REGISTERED,
            f"tables not registered in {catalog.database_name(params)}: {', '.join(missing)}. "
            "Run step 3 (register-part-tables) first",
        )
    return infos


def _check(scanned: Mapping[str, tuple[catalog.Partition, ...]], roots: Mapping[str, str], n_parts: int) -> None:
    expected = set(range(n_parts))
    problems: list[str] = []
    empty: list[str] = []
    for name, parts in scanned.items():
        values = {p.value for p in parts}
        if values != expected:
            missing, extra = sorted(expected - values), sorted(values - expected)
            problems.append(
                f"{name} has {len(values)} parts under {roots[name]}, expected {n_parts}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unexpected {extra})" if extra else "")
            )
        empty += [f"{name} part {p.value} ({p.location})" for p in parts if p.rows == 0]
    if empty:
        raise job_error(
            JobErrorType.EMPTY_PARTITION,
            f"empty partitions: {'; '.join(empty)}. Re-run the split step that wrote them",
        )
    if problems:
        raise job_error(
            JobErrorType.PARTITION_MISMATCH,
            f"part tables do not have the same {n_parts} parts: {'; '.join(problems)}. Re-run steps 1 "
            "and 2 with the same n_parts (or the data is too small for n_parts)",
        )
