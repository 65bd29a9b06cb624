"""Step 3, register part tables: one context per table, `{table_prefix}{table}` over its storage root.

The table's schema is read from the data its split step wrote, and the partitions on disk at this
moment are registered with it. Directories that appear later stay invisible until step 4 repairs the
partitions, exactly as a Glue table behaves before MSCK REPAIR.
"""

from __future__ import annotations

from flywheel.invocation import JobResult, StepInvocation
from flywheel.pipelines.db_refresh import catalog, engine
from flywheel.pipelines.db_refresh.engine import JobErrorType, job_error


def run(invocation: StepInvocation) -> JobResult:
    params = invocation.params
    table, storage_root = params.get("table"), params.get("storage_root")
    if not table or not storage_root:
        raise job_error(
            JobErrorType.UNSUPPORTED,
            "register-part-tables needs `table` and `storage_root` (one context per table in pipeline.yaml)",
        )
    name = f"{params.get('table_prefix') or ''}{table}"
    if catalog.is_glue_catalog(params) or str(storage_root).startswith("s3://"):
        info = catalog.register_table(params, name, str(storage_root))  # the Glue catalog lists S3 itself
        return _result(name, info)
    root = engine.local_path(str(storage_root))
    if not root.is_dir():
        raise job_error(
            JobErrorType.MISSING_SOURCE,
            f"storage_root {root} of table {name} does not exist: run the split step that writes it "
            "(1 or 2), or fix storage_root",
        )
    return _result(name, catalog.register_table(params, name, root))


def _result(name: str, info: catalog.TableInfo) -> JobResult:
    output = {
        "uri": f"table:{name}",
        "kind": "table",
        "table": info.qualified_name,
        "storage_root": info.storage_root,
        "columns": [list(c) for c in info.columns],
        "partitions": len(info.partitions),
        "fingerprint": catalog.fingerprint_of(info),
    }
    metrics = {"partitions": len(info.partitions), "rows": sum(p.rows for p in info.partitions)}
    return JobResult(outputs=(output,), metrics=metrics)
