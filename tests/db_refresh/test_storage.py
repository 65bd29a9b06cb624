"""The storage layer's pure parts: locations, the manifest's S3 fields, errors told in S3 terms."""

from __future__ import annotations

import json
from pathlib import Path

from flywheel.aws.s3 import manifest_files
from flywheel.pipelines.db_refresh import engine, storage


def test_locations_join_the_same_way_on_both_backends(tmp_path: Path) -> None:
    assert storage.join("s3://b/data/", "raw", "addressable_ids") == "s3://b/data/raw/addressable_ids"
    assert storage.join(str(tmp_path), "raw") == str(tmp_path / "raw")
    assert storage.name_of("s3://b/raw/x.csv.gz") == storage.name_of(tmp_path / "x.csv.gz") == "x.csv.gz"
    assert isinstance(storage.storage_for("s3://b/k"), storage.S3Storage)
    assert isinstance(storage.storage_for(tmp_path), storage.LocalStorage)


def test_local_storage_lists_partitions_and_skips_hidden_names(tmp_path: Path) -> None:
    for relative in ("id_part=1/a.parquet", "id_part=1/.a.crc", "id_part=0/b.parquet", "_tmp/c.parquet", "x=2/d"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"1234")
    local = storage.LocalStorage()
    found = local.partitions(str(tmp_path), "id_part")
    assert found == {0: (storage.StoredFile("b.parquet", 4),), 1: (storage.StoredFile("a.parquet", 4),)}
    local.write_text(str(tmp_path / "r" / "one.json"), "{}")
    assert local.list_files(str(tmp_path / "r"), (".json",)) == [str(tmp_path / "r" / "one.json")]
    assert local.read_text(str(tmp_path / "r" / "none.json")) is None


def test_manifests_carry_etags_only_on_s3_and_name_their_files() -> None:
    stats = engine.PartitionStats(rows=3, files=("c1-part-0.parquet",), bytes=10, etags=("abc",))
    output = engine.PartitionedOutput("s3://b/t", "id_part", (("id", "string"),), {2: stats})
    assert engine.PartitionedOutput.from_json(output.to_json()) == output
    local = engine.PartitionedOutput("/t", "id_part", (), {2: engine.PartitionStats(3, ("part-0.parquet",), 10)})
    assert "etags" not in local.to_json()
    assert manifest_files(json.loads(output.to_json())) == ["id_part=2/c1-part-0.parquet"]
    assert manifest_files({"uri": "x"}) is None


def test_engine_errors_name_s3_objects_not_their_local_copies(tmp_path: Path) -> None:
    scratch = storage.scratch_dir(tmp_path)
    try:
        copy = scratch / "bucket" / "raw" / "x.parquet"
        error = ValueError(f"No magic bytes found at end of file '{copy}'\nmore")
        assert engine.first_line(error) == "No magic bytes found at end of file 's3://bucket/raw/x.parquet'"
    finally:
        storage.remove_scratch(scratch)
