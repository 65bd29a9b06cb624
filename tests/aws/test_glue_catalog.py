"""The Glue Data Catalog code against moto, and db-refresh in env `dev` end to end through the API.

moto never executes a Glue job. In the end-to-end test a stand-in worker plays Glue: for each job run
the Glue executor starts, it calls the real Glue entry point (`flywheel.aws.glue_entry.run`) with the
run's arguments, so the real job code of every step runs against the dev bucket and catalog in moto,
writes its outputs and its result to S3, and the run ends SUCCEEDED or FAILED as the job did. The one
change: the invocation's engine is DuckDB (there is no Spark here), which stages S3 through local
scratch (`flywheel.pipelines.db_refresh.storage`). So the split outputs, tables, partitions and reports
found in moto afterwards are exactly what the jobs wrote from what the invocations carried.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from flywheel import api
from flywheel.aws import glue_entry
from flywheel.aws.catalog import GlueCatalog, PartitionSpec, TableDefinition
from flywheel.events import StepAttached, StepSucceeded
from flywheel.invocation import JobError, StepInvocation
from flywheel.pipelines.db_refresh import engine, glue_catalog, glue_partitions, sample_data
from flywheel.planner import PlanRequest
from tests.aws.resources import create_bucket, create_glue_jobs
from tests.support.moto_server import MotoServer

COLUMNS = (("id", "string"), ("seen", "timestamp"), ("interests", "array<string>"))


def _table(name: str = "part_x", location: str = "s3://b/split/x") -> TableDefinition:
    return TableDefinition(name=name, location=location, columns=COLUMNS)


def test_database_must_exist_unless_asked_to_create(aws: MotoServer) -> None:
    catalog = GlueCatalog("omc_flywheel_dev")
    with pytest.raises(JobError) as missing:
        catalog.require_database()
    assert missing.value.error_type == "database-missing"
    catalog.require_database(create=True)
    catalog.require_database()
    assert catalog.database_exists()


def test_tables_are_created_updated_and_guarded(aws: MotoServer) -> None:
    catalog = GlueCatalog("db")
    catalog.require_database(create=True)
    assert catalog.ensure_table(_table()) == "created"
    assert catalog.ensure_table(_table()) == "unchanged"
    wider = TableDefinition(name="part_x", location="s3://b/split/x/", columns=(*COLUMNS, ("score", "double")))
    assert catalog.ensure_table(wider) == "updated"
    table = boto3.client("glue").get_table(DatabaseName="db", Name="part_x")["Table"]
    assert [c["Name"] for c in table["StorageDescriptor"]["Columns"]] == ["id", "seen", "interests", "score"]
    assert table["PartitionKeys"] == [{"Name": "id_part", "Type": "int"}]
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"].endswith("ParquetHiveSerDe")
    with pytest.raises(JobError) as conflict:
        catalog.ensure_table(_table(location="s3://b/elsewhere"))
    assert conflict.value.error_type == "table-prefix-conflict"


def test_partitions_register_in_batches_idempotently(aws: MotoServer) -> None:
    catalog = GlueCatalog("db")
    catalog.require_database(create=True)
    table = _table()
    catalog.ensure_table(table)
    specs = [PartitionSpec((str(v),), f"s3://b/split/x/id_part={v}", {"numRows": "10"}) for v in range(205)]
    calls: list[int] = []
    catalog.client.meta.events.register(
        "before-parameter-build.glue.BatchCreatePartition",
        lambda params, **kw: calls.append(len(params["PartitionInputList"])),
    )
    first = catalog.register_partitions(table, specs)
    assert len(first.created) == 205 and calls == [100, 100, 5]
    again = catalog.register_partitions(table, specs)
    assert (again.created, again.updated, len(again.unchanged)) == ((), (), 205)
    moved = [*specs[:-1], PartitionSpec(("204",), "s3://b/split/x2/id_part=204", {"numRows": "10"})]
    assert catalog.check_partitions("part_x", moved).mislocated == (("204",),)
    relocated = catalog.register_partitions(table, moved)
    assert relocated.updated == (("204",),) and relocated.created == ()
    changed = catalog.register_partitions(table, moved[:150], exact=True)
    assert changed.updated == () and len(changed.deleted) == 55
    assert len(catalog.partitions("part_x")) == 150
    check = catalog.check_partitions("part_x", moved)
    assert not check.ok and len(check.missing) == 55 and check.unexpected == ()
    assert "missing" in check.describe()
    catalog.register_partitions(table, moved, exact=True)
    assert catalog.check_partitions("part_x", moved).ok
    assert catalog.partitions("part_x")[("204",)]["StorageDescriptor"]["Location"] == "s3://b/split/x2/id_part=204"


def test_lake_formation_grants(aws: MotoServer) -> None:
    catalog = GlueCatalog("db")
    catalog.require_database(create=True)
    catalog.ensure_table(_table())
    principal = "arn:aws:iam::123456789012:role/analysts"
    catalog.grant(principal, "part_x")
    catalog.grant(principal, "part_x")  # twice: harmless
    granted = boto3.client("lakeformation").list_permissions()["PrincipalResourcePermissions"]
    mine = [g for g in granted if g["Principal"]["DataLakePrincipalIdentifier"] == principal]
    assert mine and set(mine[0]["Permissions"]) == {"SELECT", "DESCRIBE"}
    assert mine[0]["Resource"]["Table"]["Name"] == "part_x"


def _write_split_output(root: str, values: range, rows: int = 10) -> None:
    """Placeholder files where a split job writes its parts, and the manifest it writes last."""
    s3 = boto3.client("s3")
    bucket, _, prefix = root[len("s3://") :].partition("/")
    for value in values:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/id_part={value}/part-0.parquet", Body=b"PAR1-placeholder")
    manifest = {
        "path": root,
        "partition_col": "id_part",
        "columns": [list(c) for c in COLUMNS],
        "partitions": {str(v): {"rows": rows, "files": ["part-0.parquet"], "bytes": 16} for v in values},
    }
    s3.put_object(Bucket=bucket, Key=f"{prefix}/_manifest.json", Body=json.dumps(manifest).encode())


def test_the_db_refresh_seam_registers_from_s3(aws: MotoServer) -> None:
    create_bucket("data")
    _write_split_output("s3://data/split_part/addressable_ids", range(4))
    params = {"database": "omc_flywheel_dev", "catalog": "glue", "pipeline": "db-refresh", "create_database": True}
    assert glue_partitions.is_glue_catalog(params)
    info = glue_catalog.register_table(params, "part_addressable_ids", "s3://data/split_part/addressable_ids")
    assert info.partition_values == (0, 1, 2, 3)
    assert info.columns[-1] == ("id_part", "int") and info.partitions[0].rows == 10
    assert info.partitions[0].files == ("part-0.parquet",)
    print_before = glue_catalog.table_fingerprint(params, "part_addressable_ids")
    assert glue_catalog.register_table(params, "part_addressable_ids", "s3://data/split_part/addressable_ids") == info
    assert glue_catalog.table_fingerprint(params, "part_addressable_ids") == print_before
    assert glue_catalog.sync_partitions(params, "part_addressable_ids", [0, 1]) == ((), (2, 3))
    assert glue_catalog.add_partitions(params, "part_addressable_ids", [3]) == (3,)
    with pytest.raises(JobError) as mismatch:
        glue_catalog.sync_partitions(params, "part_addressable_ids", [9])
    assert mismatch.value.error_type == "partition-mismatch"
    with pytest.raises(JobError) as unregistered:
        glue_catalog.get_table(params, "part_nothing")
    assert unregistered.value.error_type == "tables-not-registered"


def test_s3_outputs_are_fingerprinted_by_their_listing(aws: MotoServer) -> None:
    from flywheel.aws.s3 import s3_fingerprint, s3_listing, s3_output_fingerprint

    create_bucket("data")
    _write_split_output("s3://data/split_part/addressable_ids", range(3))
    s3 = boto3.client("s3")
    first = s3_fingerprint("s3://data/split_part/addressable_ids")
    assert first is not None
    listing = s3_listing("s3://data/split_part/addressable_ids/")
    assert len(listing.objects) == 4 and all(o.etag for o in listing.objects)  # 3 parts and the manifest
    s3.put_object(Bucket="data", Key="split_part/addressable_ids/_SUCCESS", Body=b"")  # hidden: ignored
    s3.put_object(Bucket="data", Key="split_part/addressable_ids/.staging-1/x.parquet", Body=b"zz")
    assert s3_fingerprint("s3://data/split_part/addressable_ids") == first
    s3.put_object(Bucket="data", Key="split_part/addressable_ids/id_part=1/part-0.parquet", Body=b"rewritten")
    assert s3_fingerprint("s3://data/split_part/addressable_ids") != first
    assert s3_fingerprint("s3://data/split_part/nothing") is None
    single = s3_output_fingerprint("s3://data/split_part/addressable_ids/_manifest.json")
    assert single is not None and single["objects"] == 1
    assert s3_output_fingerprint("s3://data/reports/none") is None


# --------------------------------------------------------------------------- end to end


class StandInGlue:
    """Plays Glue for moto: runs each held run's job through the Glue entry point, then ends the run."""

    def __init__(self, server: MotoServer, scratch: Path) -> None:
        self.server = server
        self.scratch = scratch
        self.handled: list[tuple[str, str]] = []  # (job name, key) in the order runs were started
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> StandInGlue:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        seen: set[str] = set()
        while not self._stop.is_set():
            for run in self.server.glue_runs():
                if run["Id"] in seen or run["JobRunState"] != "RUNNING":
                    continue
                seen.add(run["Id"])
                state = "FAILED"
                try:
                    body = self._work(run)
                    if body["ok"]:
                        state = "SUCCEEDED"
                    else:
                        self.errors.append(AssertionError(f"{run['JobName']}: {body['error_message']}"))
                except BaseException as exc:  # surfaced by the test
                    self.errors.append(exc)
                self.server.release_glue(run_id=run["Id"], state=state)
            time.sleep(0.05)

    def _work(self, run: dict[str, Any]) -> dict[str, Any]:
        invocation = StepInvocation.from_json(run["Arguments"]["--flywheel_invocation"])
        self.handled.append((run["JobName"], invocation.key))
        local = {"engine": "duckdb", "memory_limit": "1GB", "threads": 1, "temp_directory": str(self.scratch)}
        changed = StepInvocation(**{**invocation.__dict__, "params": {**invocation.params, **local}})
        arguments = {**run["Arguments"], "--flywheel_invocation": changed.to_json()}
        argv = ["entry.py", *(item for pair in arguments.items() for item in pair), "--JOB_RUN_ID", run["Id"]]
        return glue_entry.run(argv)


DEV_ROWS = 400
"""Enough rows that each of the pipeline's 16 parts holds some, few enough to stay quick."""


@pytest.fixture
def dev_session(aws: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[api.Session]:
    monkeypatch.setenv("FLYWHEEL_GLUE_POLL_SECONDS", "0.05")
    session = api.open_session("db-refresh", "dev", tmp_path / "home")
    names = create_glue_jobs(session.spec, "dev")
    for name in names.values():
        aws.glue_outcome(name, "SUCCEEDED", hold=True, times=None)
    create_bucket("omc-flywheel-dev-data")
    raw = tmp_path / "raw"
    sample_data.generate(raw, DEV_ROWS, seed=2, files=1)
    for path in sorted(p for p in raw.rglob("*") if p.is_file()):
        key = f"raw/{path.relative_to(raw).as_posix()}"
        boto3.client("s3").upload_file(str(path), "omc-flywheel-dev-data", key)
    boto3.client("glue").create_database(DatabaseInput={"Name": "omc_flywheel_dev"})
    boto3.client("dynamodb").create_table(  # the cross-machine run lock, as the Terraform stack makes it
        TableName="omc-flywheel-dev-locks",
        KeySchema=[{"AttributeName": "lock_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "lock_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield session


@pytest.mark.e2e
def test_db_refresh_in_dev_runs_every_step_as_glue_job_runs(aws: MotoServer, dev_session: api.Session) -> None:
    session = dev_session
    with StandInGlue(aws, session.home / "scratch") as glue_side:
        result = api.execute(session, PlanRequest())  # the executor comes from project.yaml: glue
    assert not glue_side.errors, glue_side.errors
    assert result.outcome is not None and result.outcome.value == "succeeded", result.state

    # started in dependency order, each key once, with the attempt labels and the step's capacity
    order = [key for _, key in glue_side.handled]
    assert sorted(order[:2]) == ["addressable-split-and-part", "infobase-split-and-part"]
    assert sorted(order[2:4]) == ["register-part-tables[addressable_ids]", "register-part-tables[infobase_attributes]"]
    assert order[4:] == [
        "prepare-part-tables",
        "create-part-addressable-ids-er-table",
        "generate-data-monitor-report",
        "generate-cleanrooms-report",
    ]
    glue = boto3.client("glue")
    split = glue.get_job_runs(JobName="omc-flywheel-dev-addressable-split-and-part")["JobRuns"]
    assert len(split) == 1
    assert (split[0]["WorkerType"], split[0]["NumberOfWorkers"], split[0]["Timeout"]) == ("G.2X", 20, 120)
    assert split[0]["Arguments"]["--flywheel_attempt_id"] == f"{result.run_id}:addressable-split-and-part:1"
    register = glue.get_job_runs(JobName="omc-flywheel-dev-register-part-tables")["JobRuns"]
    assert sorted(r["Arguments"]["--flywheel_context"] for r in register) == ["addressable_ids", "infobase_attributes"]

    # the catalog code registered both part tables with all 16 partitions, in moto's Glue catalog
    for name in ("part_addressable_ids", "part_infobase_attributes"):
        table = glue.get_table(DatabaseName="omc_flywheel_dev", Name=name)["Table"]
        assert table["StorageDescriptor"]["Location"].startswith("s3://omc-flywheel-dev-data/split_part/")
        partitions = glue.get_partitions(DatabaseName="omc_flywheel_dev", TableName=name)["Partitions"]
        assert sorted(int(p["Values"][0]) for p in partitions) == list(range(16))

    # the journal has every JobRunId, journaled before the step ended, and the jobs' reported outputs
    with session.journal() as journal:
        events = journal.events(result.run_id)
    attached = {(e.step, e.context): e.external_id for e in events if isinstance(e, StepAttached)}
    assert len(attached) == len(session.spec.keys) and all(v.startswith("jr_") for v in attached.values())
    for event in events:
        if isinstance(event, StepSucceeded) and event.step == "register-part-tables":
            reported = [o.get("details", {}) for o in event.outputs]
            assert any(d.get("table") == f"omc_flywheel_dev.part_{event.context}" for d in reported), event.outputs
    assert all(result.state.step(k).external_id for k in session.spec.keys)

    # the jobs committed their data to S3: every part of both splits and of the ER table, the reports
    data = "s3://omc-flywheel-dev-data"
    for output in ("split_part/addressable_ids", "split_part/infobase_attributes", "er/part_addressable_ids_er"):
        committed = engine.read_manifest(f"{data}/{output}")
        assert committed is not None and sorted(committed.partitions) == list(range(16)), output
        assert all(p.rows > 0 and p.etags for p in committed.partitions.values()), output
    reports = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="omc-flywheel-dev-data")["Contents"]}
    assert {"reports/data_monitor/metrics.json", "reports/cleanrooms/segments.json"} <= reports
    assert "er/schema_mapping.json" in reports
    # and the runner fingerprinted the declared S3 outputs through the pipeline's `s3` verifier
    split = next(e for e in events if isinstance(e, StepSucceeded) and e.step == "addressable-split-and-part")
    recorded = next(o for o in split.outputs if o.get("uri") == f"{data}/split_part/addressable_ids")
    assert recorded["kind"] == "remote" and recorded["fingerprint"]["objects"] == 17, recorded  # 16 parts, manifest
