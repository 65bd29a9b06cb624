"""What a reader through the Glue catalog sees of an S3 commit: before, during, after, killed, raced.

A catalog reader (Athena, Spark reading a table by name, as steps 5 and 6 do on Glue) reads every object
under each partition's `StorageDescriptor.Location` and knows nothing of our manifest ("Partitioning data
in Athena", Athena user guide: a partition is the data under its LOCATION). So here a catalog reader is
exactly that: GetPartitions, then ListObjectsV2 under each location. The writers are the real step-1 job,
run in their own processes against moto in server mode; a commit is stopped between its uploads and its
manifest PUT by a hold fault of the moto launcher (never by patching flywheel), then let go, or its
process is killed there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from flywheel.pipelines.db_refresh import engine, sample_data, storage
from flywheel.pipelines.db_refresh.jobs import addressable_split, register_part_tables
from flywheel.pipelines.db_refresh.storage import Commit, S3Storage
from tests.aws.resources import create_bucket, run_job
from tests.support.moto_server import MotoServer

pytestmark = pytest.mark.e2e

BUCKET = "omc-flywheel-dev-data"
DATABASE = "omc_flywheel_dev"
TABLE = "part_addressable_ids"
N_PARTS = 3
MANIFEST_PUT = r"split_part/addressable_ids/_manifest\.json$"

WRITER = """
import json, sys
from flywheel.invocation import JobError, StepInvocation
from flywheel.pipelines.db_refresh.jobs import addressable_split
params = json.loads(sys.argv[1])
invocation = StepInvocation(pipeline="db-refresh", step="addressable-split-and-part", context=None, run_id=1,
    attempt=1, env="dev", job="flywheel.pipelines.db_refresh.jobs.addressable_split:run", params=params)
try:
    addressable_split.run(invocation)
except JobError as exc:
    print(json.dumps({"error_type": exc.error_type, "message": str(exc)}))
    sys.exit(1)
print(json.dumps({"ok": True}))
"""
"""Step 1 in a process of its own, as a Glue job run is: what a kill or a second writer needs."""


@pytest.fixture(scope="module")
def delivery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("delivery")
    sample_data.generate(root / "raw", 300, seed=5, files=1)
    return root


@pytest.fixture
def params(aws: MotoServer, delivery: Path, tmp_path: Path) -> dict[str, Any]:
    create_bucket(BUCKET)
    boto3.client("glue").create_database(DatabaseInput={"Name": DATABASE})
    s3 = boto3.client("s3")
    for path in sorted((delivery / "raw").rglob("*.csv*")):
        s3.upload_file(str(path), BUCKET, f"raw/{path.relative_to(delivery / 'raw').as_posix()}")
    root = f"s3://{BUCKET}"
    return {
        "pipeline": "db-refresh",
        "engine": "duckdb",
        "raw_root": f"{root}/raw",
        "split_root": f"{root}/split_part",
        "catalog": "glue",
        "database": DATABASE,
        "table_prefix": "part_",
        "n_parts": N_PARTS,
        "memory_limit": "1GB",
        "threads": 1,
        "temp_directory": str(tmp_path / "scratch"),
    }


def _target(params: dict[str, Any]) -> str:
    return f"{params['split_root']}/addressable_ids"


def _commit_and_register(params: dict[str, Any]) -> str:
    """Step 1 then step 3 for its table, in this process; the commit id the manifest names."""
    run_job(addressable_split.run, params, "addressable-split-and-part")
    run_job(
        register_part_tables.run, params, "register-part-tables", table="addressable_ids", storage_root=_target(params)
    )
    return _current(params)


def _current(params: dict[str, Any]) -> str:
    manifest = engine.read_manifest(_target(params))
    assert manifest is not None and manifest.commit is not None
    return str(manifest.commit["id"])


def _writer(params: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, json.dumps(params)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )


def _keys(uri: str) -> list[str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key.rstrip("/") + "/")
    return sorted(str(o["Key"])[len(key.rstrip("/")) + 1 :] for page in pages for o in page.get("Contents", ()))


def _catalog_reader() -> dict[str, tuple[str, list[str]]]:
    """What Athena reads of the table: each partition's location and every object under it."""
    glue = boto3.client("glue")
    seen = {}
    for partition in glue.get_partitions(DatabaseName=DATABASE, TableName=TABLE)["Partitions"]:
        location = str(partition["StorageDescriptor"]["Location"])
        seen[partition["Values"][0]] = (location, _keys(location))
    return seen


def _commits_in_s3(params: dict[str, Any]) -> set[str]:
    return {folder for key in _keys(_target(params)) if (folder := storage.commit_folder(key))}


def _expected_view(params: dict[str, Any], commit: str) -> dict[str, tuple[str, list[str]]]:
    """What a catalog reader must see when the catalog follows the manifest of `commit` (from the
    manifest, not from the catalog code)."""
    manifest = engine.read_manifest(_target(params))
    assert manifest is not None and manifest.commit is not None and manifest.commit["id"] == commit
    return {
        str(v): (f"{_target(params)}/id_part={v}/{commit}", sorted(f.removeprefix(f"{commit}/") for f in p.files))
        for v, p in manifest.partitions.items()
    }


def test_catalog_readers_see_one_whole_commit_before_during_and_after(aws: MotoServer, params: dict[str, Any]) -> None:
    first = _commit_and_register(params)
    before = _catalog_reader()
    assert before == _expected_view(params, first)
    assert sorted(before) == [str(v) for v in range(N_PARTS)]

    # a second commit stopped between its uploads and its manifest PUT
    aws.s3_hold(MANIFEST_PUT, serve=True)
    writer = _writer(params)
    try:
        aws.wait_s3_held(1)
        new = _commits_in_s3(params) - {first}
        assert len(new) == 1, "the new commit's files are uploaded, under a prefix of their own"
        assert _current(params) == first
        assert _catalog_reader() == before, "catalog readers see the previous commit only, whole"
    finally:
        aws.s3_release()
        _, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    second = _current(params)
    assert {second} == new

    # after: the catalog names the new commit, and the replaced one is still in S3 for its readers
    assert _catalog_reader() == _expected_view(params, second)
    assert "glue:BatchUpdatePartition" in aws.calls(), "partitions are moved in place, not dropped and re-made"
    assert first in _commits_in_s3(params)
    # what step 1 declared of its commit (one row per id) still stands beside the retired prefix
    assert engine.intact_manifest(_target(params), "id_part", list(range(N_PARTS))) is not None
    manifest = json.loads(S3Storage().read_text(f"{_target(params)}/_manifest.json") or "{}")
    retired = Commit.from_manifest(json.dumps(manifest))
    assert retired is not None and first in retired.retired

    # the grace period over, the replaced commit goes; the current one and what the catalog reads stay
    assert S3Storage().sweep(_target(params), now=datetime.now(UTC) + timedelta(hours=7)) == (first,)
    assert _commits_in_s3(params) == {second}
    assert _catalog_reader() == _expected_view(params, second)


def test_a_commit_killed_before_its_manifest_leaves_catalog_readers_on_the_previous_one(
    aws: MotoServer, params: dict[str, Any]
) -> None:
    first = _commit_and_register(params)
    before = _catalog_reader()
    manifest = S3Storage().read_text(f"{_target(params)}/_manifest.json")

    aws.s3_hold(MANIFEST_PUT, serve=False)
    writer = _writer(params)
    try:
        aws.wait_s3_held(1)
        writer.kill()  # SIGKILL: no clean-up of any kind runs
        writer.wait(30)
    finally:
        aws.s3_release()
    assert writer.returncode < 0
    orphans = _commits_in_s3(params) - {first}
    assert len(orphans) == 1, "the killed commit's uploads are left behind"
    assert S3Storage().read_text(f"{_target(params)}/_manifest.json") == manifest
    assert _catalog_reader() == before, "catalog readers see only the previous commit"

    # the next commit leaves the orphan alone within the grace period (it could be a commit in progress)
    run_job(addressable_split.run, params, "addressable-split-and-part")
    third = _current(params)
    assert _commits_in_s3(params) == {first, third, *orphans}
    assert _catalog_reader() == _expected_view(params, third)

    # after the grace: the orphan goes, and a retired commit the caller says is still named (the catalog
    # not yet switched) stays
    later = datetime.now(UTC) + timedelta(hours=7)
    assert S3Storage().sweep(_target(params), now=later, keep={first}) == tuple(orphans)
    assert _commits_in_s3(params) == {first, third}
    assert S3Storage().sweep(_target(params), now=later) == (first,)
    assert _commits_in_s3(params) == {third}


def test_two_writers_at_once_one_wins_and_the_other_fails_clearly(aws: MotoServer, params: dict[str, Any]) -> None:
    """Both commits start from the same manifest; the manifest PUT is conditional (If-Match its ETag,
    "Add preconditions to S3 operations with conditional requests", S3 user guide), so the second PUT
    gets 412 Precondition Failed and that writer fails with `concurrent-commit`, naming the fix."""
    first = _commit_and_register(params)
    aws.s3_hold(MANIFEST_PUT, serve=True, times=2)
    writers = [_writer(params), _writer(params)]
    try:
        aws.wait_s3_held(2)
        assert _catalog_reader() == _expected_view(params, first)
        aws.s3_release(1)  # the first manifest PUT goes through: that writer wins
        deadline = time.monotonic() + 120
        while all(w.poll() is None for w in writers) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        aws.s3_release()
        results = [w.communicate(timeout=120) for w in writers]
    codes = sorted(w.returncode for w in writers)
    assert codes == [0, 1], results
    loser_out = next(out for (out, _), w in zip(results, writers, strict=True) if w.returncode == 1)
    lost = json.loads(loser_out.strip().splitlines()[-1])
    assert lost["error_type"] == "concurrent-commit"
    assert "replaced by another commit" in lost["message"] and "rerun the step" in lost["message"]

    winner = _current(params)
    assert winner != first
    assert _catalog_reader() == _expected_view(params, winner), "the catalog names the winner's commit"
    assert _commits_in_s3(params) == {first, winner}, "the loser took its files back"


def test_commit_grace_setting_and_commit_record() -> None:
    assert storage.commit_grace(None) == timedelta(hours=6)
    assert storage.commit_grace("30m") == timedelta(minutes=30)
    assert storage.commit_grace(3600) == timedelta(hours=1)
    assert storage.commit_grace("0") == timedelta(0)
    with pytest.raises(Exception, match="commit_grace 'soon' is not a duration"):
        storage.commit_grace("soon")
    stamp = datetime(2026, 12, 3, 16, 21, 3, tzinfo=UTC)
    made = storage.new_commit_id(stamp)
    assert made.startswith("commit-20261203T162103Z-") and storage.is_commit_id(made)
    record = Commit(made, stamp, {"": stamp - timedelta(hours=1)})
    assert Commit.from_manifest(json.dumps({"commit": record.record()})) == record
    assert Commit.from_manifest('{"partitions": {}}') is None
    assert storage.commit_folder(f"id_part=3/{made}/part-0.parquet") == made
    assert storage.commit_folder("id_part=3/part-0.parquet") == ""
    assert storage.commit_folder("_manifest.json") is None
    assert storage.commit_folder("id_part=3/.staging/part-0.parquet") is None
