"""The sample data looks like the real deliveries, comes out the same for the same seed, and breaks in
exactly the way each fault asks for."""

from __future__ import annotations

import csv
import gzip
import io
import re
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from flywheel.pipelines.db_refresh.data_cli import app
from flywheel.pipelines.db_refresh.sample_data import (
    ADDRESSABLE_COLUMNS,
    INFOBASE_COLUMNS,
    Fault,
    generate,
)

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def read_csv_gz(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as handle:
        return list(csv.DictReader(handle))


def read_parquet(path: Path | str) -> list[dict[str, object]]:
    cursor = duckdb.connect().execute(f"SELECT * FROM read_parquet('{path}')")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@pytest.fixture(scope="module")
def delivery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("delivery") / "raw"
    generate(root, rows=2000, seed=1, files=3)
    return root


def test_addressable_ids_arrive_as_gzip_csv_files_with_a_header_and_realistic_values(delivery: Path) -> None:
    files = sorted((delivery / "addressable_ids").glob("*.csv.gz"))
    assert len(files) == 3
    rows = [row for f in files for row in read_csv_gz(f)]
    assert len(rows) == 2000
    assert list(rows[0]) == list(ADDRESSABLE_COLUMNS)

    ids = [r["id"].strip().lower() for r in rows]
    assert all(HEX64.match(i) for i in ids)
    assert any(r["id"] != r["id"].strip() for r in rows), "some ids are padded with spaces"
    assert any(r["id"] != r["id"].lower() for r in rows), "some ids are in upper case"

    zips = [r["zip"] for r in rows if r["zip"]]
    assert all(len(z) == 5 and z.isdigit() for z in zips)
    assert any(z.startswith("0") for z in zips), "leading zeros are kept"
    for column in ("hashed_email", "hashed_phone", "maid", "ip", "zip", "household_id"):
        blanks = sum(1 for r in rows if r[column] == "")
        assert 0 < blanks < len(rows) / 2, f"{column} has realistic nulls"

    # a small share of ids repeats, mostly with another last_seen
    seen: dict[str, set[str]] = {}
    for r, i in zip(rows, ids, strict=True):
        seen.setdefault(i, set()).add(r["last_seen"])
    repeated = len(rows) - len(seen)
    assert 0.005 * len(rows) < repeated < 0.05 * len(rows)
    assert any(len(stamps) > 1 for stamps in seen.values())


def test_infobase_attributes_arrive_as_parquet_keyed_by_mostly_the_same_ids(delivery: Path) -> None:
    files = sorted((delivery / "infobase_attributes").glob("*.parquet"))
    assert len(files) == 3
    rows = [row for f in files for row in read_parquet(f)]
    assert list(rows[0]) == list(INFOBASE_COLUMNS)
    assert len(INFOBASE_COLUMNS) - 2 >= 15, "15+ consumer attributes besides id and updated_at"

    addressable = {
        r["id"].strip().lower() for f in (delivery / "addressable_ids").glob("*.csv.gz") for r in read_csv_gz(f)
    }
    infobase_ids = {str(r["id"]) for r in rows}
    matching = len(infobase_ids & addressable) / len(infobase_ids)
    assert 0.7 < matching < 0.95, "most ids match, some do not"
    assert all(isinstance(r["interests"], list) for r in rows if r["interests"] is not None)
    for column in INFOBASE_COLUMNS[2:]:
        nulls = sum(1 for r in rows if r[column] is None)
        assert 0 < nulls < len(rows) / 2, f"{column} has realistic nulls"


def test_the_same_rows_and_seed_give_the_same_files_and_another_seed_does_not(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", rows=500, seed=9, files=2)
    again = generate(tmp_path / "b", rows=500, seed=9, files=2)
    other = generate(tmp_path / "c", rows=500, seed=10, files=2)
    for a, b, c in zip(
        first.addressable_files + first.infobase_files,
        again.addressable_files + again.infobase_files,
        other.addressable_files + other.infobase_files,
        strict=True,
    ):
        assert Path(a).read_bytes() == Path(b).read_bytes()
        assert Path(a).read_bytes() != Path(c).read_bytes()


@pytest.mark.parametrize("fault", list(Fault))
def test_each_fault_breaks_the_delivery_in_its_own_way(tmp_path: Path, fault: Fault) -> None:
    result = generate(tmp_path / "raw", rows=120, seed=2, files=3, fault=fault)
    addressable = [Path(p) for p in result.addressable_files]
    infobase = [Path(p) for p in result.infobase_files]

    if fault is Fault.MISSING_SOURCE:
        assert addressable == [] and not list((tmp_path / "raw" / "addressable_ids").iterdir())
    elif fault is Fault.INFOBASE_MISSING:
        assert infobase == [] and not list((tmp_path / "raw" / "infobase_attributes").iterdir())
    elif fault is Fault.CORRUPT_FILE:
        with pytest.raises((EOFError, OSError)):
            gzip.decompress(addressable[1].read_bytes())
    elif fault is Fault.INFOBASE_CORRUPT:
        with pytest.raises(duckdb.Error):
            read_parquet(infobase[1])
    elif fault is Fault.RENAMED_COLUMN:
        header = gzip.decompress(addressable[-1].read_bytes()).decode().splitlines()[0].split(",")
        assert "email_sha256" in header and "hashed_email" not in header
        assert read_csv_gz(addressable[0])[0].keys() == set(ADDRESSABLE_COLUMNS)
    elif fault is Fault.INFOBASE_RENAMED_COLUMN:
        columns = list(read_parquet(infobase[-1])[0])
        assert "income_band" in columns and "income_range" not in columns


def test_flywheel_data_generate_writes_under_the_flywheel_home_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    outcome = CliRunner().invoke(app, ["generate", "--rows", "120", "--seed", "3", "--fault", "renamed-column"])
    assert outcome.exit_code == 0, outcome.output
    raw = tmp_path / "home" / "data" / "raw"
    assert "fault renamed-column" in outcome.output and str(raw) in outcome.output
    text = io.StringIO(gzip.decompress(sorted((raw / "addressable_ids").glob("*.csv.gz"))[-1].read_bytes()).decode())
    assert next(csv.reader(text))[1] == "email_sha256"

    elsewhere = tmp_path / "elsewhere"
    outcome = CliRunner().invoke(app, ["generate", "--rows", "50", "--seed", "3", "--root", str(elsewhere)])
    assert outcome.exit_code == 0, outcome.output
    assert len(list((elsewhere / "infobase_attributes").glob("*.parquet"))) == 4
