"""The db-refresh jobs 1-7 with every data root on `s3://` in moto, on the DuckDB engine.

DuckDB has no S3 extension here, so this is the local-staging mode (`flywheel.pipelines.db_refresh
.storage`): inputs downloaded to scratch, outputs committed to S3 by the manifest-last protocol. The S3
run must commit what the same jobs commit on local paths (same parts, rows, columns, reports), a commit
that fails half-way must leave the previous output readable, and the delivery faults must fail with the
same errors. Faults are injected by the moto launcher (an S3 error reply for a chosen object), never by
patching flywheel.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest

from flywheel.aws.s3 import s3_listing, s3_output_fingerprint
from flywheel.invocation import JobError, JobResult
from flywheel.pipelines.db_refresh import engine, sample_data
from flywheel.pipelines.db_refresh.jobs import (
    addressable_split,
    cleanrooms_report,
    create_er_table,
    data_monitor_report,
    infobase_split,
    prepare_part_tables,
    register_part_tables,
)
from flywheel.pipelines.db_refresh.storage import Commit, S3Storage, StoredFile
from tests.aws.resources import Job, create_bucket, run_job
from tests.support.moto_server import MotoServer

pytestmark = pytest.mark.e2e

BUCKET = "omc-flywheel-dev-data"
DATABASE = "omc_flywheel_dev"
N_PARTS = 4
ROWS = 600
SPLITS = ("addressable_ids", "infobase_attributes")
MAPPING = "fields:\n  ip: {matchKey: null}\nexclude: [marital_status]\n"
"""An ER schema-mapping override, so step 5 reads its configuration from `config_root` too."""
LOSER = "commit-20260101T000000Z-0000aaaa"
WINNER = "commit-20260101T000000Z-0000bbbb"


def _params(root: str, scratch: Path, *, catalog: str) -> dict[str, Any]:
    return {
        "pipeline": "db-refresh",
        "engine": "duckdb",
        "data_root": root,
        "raw_root": f"{root}/raw",
        "split_root": f"{root}/split_part",
        "er_root": f"{root}/er",
        "reports_root": f"{root}/reports",
        "config_root": f"{root}/config",
        "catalog": catalog,
        "database": DATABASE,
        "table_prefix": "part_",
        "n_parts": N_PARTS,
        "cleanrooms_min_k": 5,
        "memory_limit": "1GB",
        "threads": 1,
        "temp_directory": str(scratch),
    }


def _refresh(params: dict[str, Any]) -> JobResult:
    """Steps 1-7 in order, as the pipeline runs them (step 3 once per table); step 5's result."""
    run_job(addressable_split.run, params, "addressable-split-and-part")
    run_job(infobase_split.run, params, "infobase-split-and-part")
    for table in SPLITS:
        run_job(
            register_part_tables.run, params, "register-part-tables", table=table, storage_root=_split(params, table)
        )
    run_job(prepare_part_tables.run, params, "prepare-part-tables")
    er_table = run_job(create_er_table.run, params, "create-part-addressable-ids-er-table")
    run_job(data_monitor_report.run, params, "generate-data-monitor-report")
    run_job(cleanrooms_report.run, params, "generate-cleanrooms-report")
    return er_table


def _split(params: dict[str, Any], table: str) -> str:
    return f"{params['split_root']}/{table}"


def _upload(directory: Path, uri: str) -> None:
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    s3 = boto3.client("s3")
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(directory).as_posix()}")


def _keys(prefix: str) -> list[str]:
    bucket, _, key = prefix[len("s3://") :].partition("/")
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
    return sorted(str(o["Key"])[len(key) :].lstrip("/") for page in pages for o in page.get("Contents", ()))


def _text(uri: str) -> str:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return str(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode())


def _shape(output: engine.PartitionedOutput | None) -> tuple[Any, ...]:
    """What must be equal between engines and stores: columns, parts, rows and files per part."""
    assert output is not None
    return output.columns, {v: (p.rows, len(p.files)) for v, p in output.partitions.items()}


def _rows(params: dict[str, Any], root: str) -> int:
    with engine.session_scope(params) as session:
        manifest = engine.read_manifest(root)
        assert manifest is not None
        return int(engine.read_partitions(session, root, "id_part", sorted(manifest.partitions)).count())


@pytest.fixture(scope="module")
def delivery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny delivery (raw files and the schema-mapping config), shared by the tests here."""
    root = tmp_path_factory.mktemp("delivery")
    sample_data.generate(root / "raw", ROWS, seed=11, files=2)
    (root / "config").mkdir()
    (root / "config" / "er-schema-mapping.yaml").write_text(MAPPING)
    return root


@pytest.fixture(scope="module")
def local_refresh(delivery: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same refresh on local paths and the local catalog: what the S3 run must match."""
    root = tmp_path_factory.mktemp("local")
    for name in ("raw", "config"):
        (root / name).symlink_to(delivery / name)
    params = _params(str(root), root / "tmp", catalog=str(root / "catalog.duckdb"))
    _refresh(params)
    return params


@pytest.fixture
def s3_params(aws: MotoServer, delivery: Path, tmp_path: Path) -> dict[str, Any]:
    create_bucket(BUCKET)
    boto3.client("glue").create_database(DatabaseInput={"Name": DATABASE})
    params = _params(f"s3://{BUCKET}", tmp_path / "scratch", catalog="glue")
    _upload(delivery / "raw", params["raw_root"])
    _upload(delivery / "config", params["config_root"])
    return params


def test_jobs_on_s3_commit_what_they_commit_locally(
    s3_params: dict[str, Any], local_refresh: dict[str, Any], tmp_path: Path
) -> None:
    params = s3_params
    er_table = _refresh(params)
    local = local_refresh
    # what steps 1-2 declared in their S3 manifests held, as the listing of the parts showed
    assert er_table.metrics["taken_as_committed"] == {
        "one_row_per_id": {"addressable": True, "infobase": True},
        "canonical_keys": ["hashed_email", "hashed_phone", "ip", "maid"],
    }

    for table in SPLITS:
        here, there = _split(local, table), _split(params, table)
        committed = engine.read_manifest(there)
        assert _shape(committed) == _shape(engine.read_manifest(here)), table
        assert committed is not None and committed.path == there
        # exactly the manifest and the files it lists, each with the ETag S3 reports
        listed = {f"id_part={v}/{f}" for v, p in committed.partitions.items() for f in p.files}
        assert _keys(there) == sorted({*listed, "_manifest.json"})
        prefix = there.removeprefix(f"s3://{BUCKET}/") + "/"
        etags = {o.key.removeprefix(prefix): o.etag for o in s3_listing(there).objects}
        del etags["_manifest.json"]
        pairs = [
            (f"id_part={v}/{f}", e)
            for v, p in committed.partitions.items()
            for f, e in zip(p.files, p.etags, strict=True)
        ]
        assert dict(pairs) == etags
        fingerprint = s3_output_fingerprint(there)
        assert fingerprint is not None and fingerprint["objects"] == len(listed) + 1

    er, local_er = (f"{p['er_root']}/part_addressable_ids_er" for p in (params, local))
    assert _shape(engine.read_manifest(er)) == _shape(engine.read_manifest(local_er))
    mapping = json.loads(_text(f"{params['er_root']}/schema_mapping.json"))
    assert mapping == json.loads(Path(local["er_root"], "schema_mapping.json").read_text())
    assert "marital_status" not in {f["fieldName"] for f in mapping["mappedInputFields"]}, "the S3 config was read"

    # steps 3 and 5 registered their tables in the Glue catalog, over the S3 roots
    glue = boto3.client("glue")
    for name in ("part_addressable_ids", "part_infobase_attributes", "part_addressable_ids_er"):
        partitions = glue.get_partitions(DatabaseName=DATABASE, TableName=name)["Partitions"]
        assert sorted(int(p["Values"][0]) for p in partitions) == list(range(N_PARTS)), name
        # each partition's location is the prefix of the one commit its manifest names
        root = glue.get_table(DatabaseName=DATABASE, Name=name)["Table"]["StorageDescriptor"]["Location"]
        committed = engine.read_manifest(root)
        assert committed is not None and committed.commit is not None
        for p in partitions:
            assert p["StorageDescriptor"]["Location"] == f"{root}/id_part={p['Values'][0]}/{committed.commit['id']}"

    monitor = json.loads(_text(f"{params['reports_root']}/data_monitor/metrics.json"))
    expected = json.loads(Path(local["reports_root"], "data_monitor", "metrics.json").read_text())
    assert (monitor["status"], monitor["metrics"], monitor["checks"]) == (
        expected["status"],
        expected["metrics"],
        expected["checks"],
    )
    assert len(_keys(f"{params['reports_root']}/data_monitor/history")) == 1
    for name in ("segments.csv", "report.html", "segments.json"):
        assert _keys(f"{params['reports_root']}/cleanrooms").count(name) == 1
    local_csv = Path(local["reports_root"], "cleanrooms", "segments.csv").read_text()
    assert _text(f"{params['reports_root']}/cleanrooms/segments.csv") == local_csv
    assert local_csv.count("\n") > 1, "some segment is published"

    # nothing staged is left behind, in the bucket or in local scratch
    assert not [k for k in _keys(f"s3://{BUCKET}") if "/." in f"/{k}" or "staging" in k]
    assert not list((tmp_path / "scratch").glob("flywheel-s3-*"))

    # a second run of step 6 finds the first one's history in S3 and judges drift against it
    second = run_job(data_monitor_report.run, {**params}, "generate-data-monitor-report")
    assert len(_keys(f"{params['reports_root']}/data_monitor/history")) == 2
    assert second.metrics["baseline_run_id"] is None, "an entry of the same run is never its own baseline"


def test_a_failed_commit_leaves_the_previous_output_readable(aws: MotoServer, s3_params: dict[str, Any]) -> None:
    params = s3_params
    target = _split(params, "addressable_ids")
    run_job(addressable_split.run, params, "addressable-split-and-part")
    manifest, keys = _text(f"{target}/_manifest.json"), _keys(target)
    fingerprint, rows = s3_output_fingerprint(target), _rows(params, target)

    def unchanged() -> None:
        assert _text(f"{target}/_manifest.json") == manifest
        assert s3_output_fingerprint(target) == fingerprint
        assert _rows(params, target) == rows

    # the commit marker cannot be written: the new files are taken back, the old output stands
    aws.s3_fault(r"split_part/addressable_ids/_manifest\.json$")
    with pytest.raises(JobError) as denied:
        run_job(addressable_split.run, params, "addressable-split-and-part")
    assert denied.value.error_type == "access-denied" and "_manifest.json" in str(denied.value)
    assert _keys(target) == keys
    unchanged()

    # the third new file cannot be put (parts go up in order), and the two already put cannot be taken
    # back either (DeleteObjects is refused): they stay, unlisted, and neither readers nor the verifier
    # see them
    aws.s3_fault(r"split_part/addressable_ids/id_part=2/commit-[^/]+/part")
    aws.s3_fault(rf"^{BUCKET}$", method="POST", times=None)  # DeleteObjects: POST /bucket?delete
    with pytest.raises(JobError) as refused:
        run_job(addressable_split.run, params, "addressable-split-and-part")
    assert refused.value.error_type == "access-denied" and "id_part=2" in str(refused.value)
    assert len(_keys(target)) == len(keys) + 2
    unchanged()
    aws.clear_s3_faults()

    # the next good commit replaces the output; the previous commit and the failed one's leftovers stay
    # for the grace period (readers may still be on them), and a commit after it sweeps them
    run_job(addressable_split.run, params, "addressable-split-and-part")
    committed = engine.read_manifest(target)
    assert committed is not None and _text(f"{target}/_manifest.json") != manifest
    listed = {f"id_part={v}/{f}" for v, p in committed.partitions.items() for f in p.files}
    assert {*keys, *listed} <= set(_keys(target))
    assert len(_keys(target)) == len(keys) + 2 + len(listed)
    assert _rows(params, target) == rows
    run_job(addressable_split.run, {**params, "commit_grace": "0"}, "addressable-split-and-part")
    last = engine.read_manifest(target)
    assert last is not None
    assert _keys(target) == sorted(
        {"_manifest.json", *(f"id_part={v}/{f}" for v, p in last.partitions.items() for f in p.files)}
    )


def test_two_commits_at_once_one_wins_and_the_other_fails_clearly(
    aws: MotoServer, s3_params: dict[str, Any], tmp_path: Path
) -> None:
    """The manifest PUT is conditional (If-Match the manifest the commit started from, If-None-Match: *
    for a first commit; "Add preconditions to S3 operations with conditional requests", S3 user guide):
    a commit that another one overtook between its uploads and its manifest fails with
    `concurrent-commit`, takes its files back, and the winner's output stands whole."""
    params = s3_params
    target = _split(params, "addressable_ids")
    run_job(addressable_split.run, params, "addressable-split-and-part")
    first = _text(f"{target}/_manifest.json")
    loser_file = tmp_path / "part-0.parquet"
    loser_file.write_bytes(b"not a winner")

    def overtaken(stored: Mapping[str, StoredFile], commit: Commit) -> str:
        # a second writer (the real step-1 job) commits the same output while this commit is half-way
        run_job(addressable_split.run, params, "addressable-split-and-part")
        return json.dumps({"files": sorted(stored)})

    with pytest.raises(JobError) as lost:
        S3Storage().commit(target, LOSER, {f"id_part=0/{LOSER}/part-0.parquet": loser_file}, overtaken)
    assert lost.value.error_type == "concurrent-commit"
    assert "replaced by another commit" in str(lost.value) and "rerun the step" in str(lost.value)
    winner = engine.read_manifest(target)
    assert winner is not None and _text(f"{target}/_manifest.json") != first
    assert not [k for k in _keys(target) if LOSER in k]  # the loser's file is gone

    # two first commits of a new output: If-None-Match: * lets only one create the manifest
    fresh = f"s3://{BUCKET}/race/fresh"

    def first_overtaken(stored: Mapping[str, StoredFile], commit: Commit) -> str:
        S3Storage().commit(fresh, WINNER, {f"id_part=0/{WINNER}/part-0.parquet": loser_file}, lambda s, c: "{}")
        return '{"winner": false}'

    with pytest.raises(JobError) as lost_first:
        S3Storage().commit(fresh, LOSER, {f"id_part=0/{LOSER}/part-0.parquet": loser_file}, first_overtaken)
    assert lost_first.value.error_type == "concurrent-commit"
    assert json.loads(_text(f"{fresh}/_manifest.json")) == {}
    assert _keys(fresh) == ["_manifest.json", f"id_part=0/{WINNER}/part-0.parquet"]


def test_s3_roots_with_the_local_catalog_are_refused_clearly(s3_params: dict[str, Any], tmp_path: Path) -> None:
    params = {**s3_params, "catalog": str(tmp_path / "catalog.duckdb")}
    run_job(addressable_split.run, params, "addressable-split-and-part")
    root = _split(params, "addressable_ids")
    with pytest.raises(JobError) as refused:
        run_job(register_part_tables.run, params, "register-part-tables", table="addressable_ids", storage_root=root)
    assert refused.value.error_type == "unsupported" and "set `catalog: glue`" in str(refused.value)


FAULTS = (
    ("missing-source", addressable_split.run, "missing-source"),
    ("corrupt-file", addressable_split.run, "corrupt-file"),
    ("empty-file", addressable_split.run, "empty-source"),
    ("renamed-column", addressable_split.run, "schema-mismatch"),
    ("infobase-corrupt", infobase_split.run, "corrupt-file"),
    ("infobase-renamed-column", infobase_split.run, "schema-mismatch"),
)


@pytest.mark.parametrize(("fault", "job", "error_type"), FAULTS, ids=[f[0] for f in FAULTS])
def test_delivery_faults_fail_the_same_way_on_s3(
    aws: MotoServer, tmp_path: Path, fault: str, job: Job, error_type: str
) -> None:
    create_bucket(BUCKET)
    sample_data.generate(tmp_path / "raw", 120, seed=3, files=2, fault=fault)
    local = _params(str(tmp_path), tmp_path / "tmp", catalog=str(tmp_path / "catalog.duckdb"))
    remote = _params(f"s3://{BUCKET}", tmp_path / "tmp", catalog="glue")
    _upload(tmp_path / "raw", remote["raw_root"])
    errors = []
    for params in (local, remote):
        with pytest.raises(JobError) as failed:
            run_job(job, params, "split")
        errors.append(failed.value)
    here, there = errors
    assert here.error_type == there.error_type == error_type
    # the same message, naming the S3 location where the local run names the directory (an S3 prefix
    # without objects does not exist: S3 has no empty directories)
    same = str(there).replace(remote["raw_root"], local["raw_root"]).replace("does not exist", "is empty")
    assert same == str(here).replace("does not exist", "is empty")
    assert remote["raw_root"] in str(there) and str(tmp_path / "tmp") not in str(there)
    assert _keys(f"s3://{BUCKET}/split_part") == [], "nothing is committed"
