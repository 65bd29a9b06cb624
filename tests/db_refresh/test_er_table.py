"""Step 5: the ER table holds each unique record once, with its match keys normalised and its id's
infobase attributes; the schema mapping it ships with is what CreateSchemaMapping takes, and a bad
type in the operator's override file stops the step with a message that says how to fix it."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flywheel.invocation import JobError, StepInvocation
from flywheel.pipelines.db_refresh import catalog, engine
from flywheel.pipelines.db_refresh.jobs import addressable_split, create_er_table
from flywheel.pipelines.db_refresh.jobs.create_er_table import MATCH_KEYS, VALID_TYPES

N_PARTS = 4


def pid(n: int) -> str:
    """A 64-hex addressable id, as steps 1-2 write them."""
    return hashlib.sha256(f"person-{n}".encode()).hexdigest()


T1, T2, T3 = datetime(2024, 1, 1), datetime(2024, 3, 1), datetime(2024, 2, 1)
ADDRESSABLE_COLUMNS = ("id", "hashed_email", "hashed_phone", "maid", "ip", "zip", "household_id", "last_seen")
# Raw rows as a feed delivers them: the same record in several spellings, empty keys, odd zips.
ADDRESSABLE: list[tuple[Any, ...]] = [
    (pid(1), "AB01", "PH01", "MAID-1", "10.0.0.1", "2134", "h1", T1),
    (pid(1), " ab01 ", "ph01", "maid-1", " 10.0.0.1 ", "02134", "h2", T2),  # same record, newer
    (pid(1), "ab01", "ph01", "maid-1", "10.0.0.1", "02134-5678", "h0", None),  # same again, no date
    (pid(1), "cd02", None, None, None, None, "h1", T1),  # another record of the same id
    (pid(2), None, None, "MAID-2", "", "n/a", None, T3),
    (pid(2), "", "  ", "maid-2", None, None, "h9", T1),  # same as above once blanks are nulls
    (pid(3), None, None, None, "", None, "h3", T2),  # no match key at all: dropped
    ("   ", "ef03", None, None, None, None, None, T2),  # no id: dropped
    (pid(4), "ef04", "ph04", None, "192.168.0.4", "501", "h4", T3),
    (pid(6), None, " ", None, None, " 7030 ", "h6", T1),  # a zip is its only key: kept, as 07030
    (pid(7), "", None, "  ", None, "ABCDE", "h7", T2),  # no key but a zip that is none: dropped
]
INFOBASE_COLUMNS = ("id", "age_range", "income_range", "state", "homeowner", "interests")
INFOBASE: list[tuple[Any, ...]] = [
    (pid(1), "25-34", "50-75k", "OH", True, ["golf", "wine"]),
    (pid(2), "35-44", "75-100k", "CA", False, []),
    (pid(2), "18-24", "75-100k", "CA", False, None),  # a repeated id: one row is kept
    (pid(5), "45-54", "100k+", "NY", None, ["travel"]),  # no addressable records
]


@dataclass
class Lake:
    """One test's storage: split part tables registered in a local catalog, and the step's params."""

    root: Path
    params: dict[str, Any]

    def invocation(self, run_id: int = 1, **params: Any) -> StepInvocation:
        return StepInvocation(
            pipeline="db-refresh",
            step="create-part-addressable-ids-er-table",
            context=None,
            run_id=run_id,
            attempt=1,
            env="local",
            job="flywheel.pipelines.db_refresh.jobs.create_er_table:run",
            params={**self.params, **params},
        )

    @property
    def er_path(self) -> Path:
        return Path(self.params["er_root"]) / "part_addressable_ids_er"

    def er_rows(self) -> list[dict[str, Any]]:
        glob = f"{self.er_path}/*/*.parquet"
        cursor = duckdb.connect().execute(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def write_config(self, name: str, text: str) -> Path:
        path = Path(self.params["config_root"]) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


def _sql_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, list):
        return "[" + ", ".join(_sql_value(v) for v in value) + "]::VARCHAR[]"
    return "'" + str(value).replace("'", "''") + "'"


def write_part_table(
    params: Mapping[str, Any],
    name: str,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    unique_key: Sequence[str] = (),
    canonical: Mapping[str, str] | None = None,
) -> None:
    """Bucket rows by id exactly as steps 1-2 do, write them as parts and register them (steps 3-4).
    With `unique_key` and `canonical`, the commit declares one row per key and the columns' forms,
    as step 1 does."""
    with engine.session_scope(params) as session:
        values = ", ".join("(" + ", ".join(_sql_value(v) for v in row) + ")" for row in rows)
        session._conn.execute(f"CREATE TABLE raw_{name} AS SELECT * FROM (VALUES {values}) v({', '.join(columns)})")
        df = session.table(f"raw_{name}").withColumn("id_part", engine.bucket(session, "id", N_PARTS))
        path = Path(params["split_root"]) / name
        engine.write_partitioned(df, path, "id_part", unique_key=unique_key, canonical=canonical)
    catalog.register_table(params, f"{params['table_prefix']}{name}", path)


def make_lake(
    root: Path,
    addressable: Sequence[tuple[Any, ...]],
    infobase: Sequence[tuple[Any, ...]],
    unique_key: Sequence[str] = (),
    canonical: Mapping[str, str] | None = None,
) -> Lake:
    params: dict[str, Any] = {
        "engine": "duckdb",
        "data_root": str(root),
        "split_root": str(root / "split_part"),
        "er_root": str(root / "er"),
        "reports_root": str(root / "reports"),
        "config_root": str(root / "config"),
        "catalog": str(root / "catalog.duckdb"),
        "database": "omc_flywheel_test",
        "table_prefix": "part_",
        "n_parts": N_PARTS,
        "memory_limit": "1GB",
        "threads": 1,
        "temp_directory": str(root / "tmp"),
    }
    write_part_table(params, "addressable_ids", ADDRESSABLE_COLUMNS, addressable, unique_key, canonical)
    write_part_table(params, "infobase_attributes", INFOBASE_COLUMNS, infobase, unique_key)
    return Lake(root, params)


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    yield make_lake(tmp_path, ADDRESSABLE, INFOBASE)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """Part tables and one successful step 5 with the default mapping, shared by read-only tests."""
    lake = make_lake(tmp_path_factory.mktemp("built"), ADDRESSABLE, INFOBASE)
    create_er_table.run(lake.invocation())
    return lake


@pytest.fixture
def shared(built: Lake, tmp_path: Path) -> Lake:
    """The shared part tables with this test's own ER and config folders (for runs that fail)."""
    return Lake(built.root, {**built.params, "er_root": str(tmp_path / "er"), "config_root": str(tmp_path / "config")})


# ---------------------------------------------------------------------------------------------
# the oracle: the same table computed in plain Python


def _blank_to_none(value: Any) -> str | None:
    text = None if value is None else str(value).strip(" ")
    return text or None


def normalise(row: Mapping[str, Any]) -> tuple[str | None, ...]:
    zip_match = re.fullmatch(r"([0-9]{3,5})(-?[0-9]{4})?", (row["zip"] or "").strip(" "))

    def lower(value: str | None) -> str | None:
        return value.lower() if value else None

    return (
        lower(_blank_to_none(row["hashed_email"])),
        lower(_blank_to_none(row["hashed_phone"])),
        lower(_blank_to_none(row["maid"])),
        _blank_to_none(row["ip"]),
        zip_match.group(1).zfill(5) if zip_match else None,
    )


def expected_er_rows(
    addressable: Sequence[tuple[Any, ...]], infobase: Sequence[tuple[Any, ...]]
) -> dict[str, dict[str, Any]]:
    """record_id -> row: newest of each unique (id, keys), with the id's first infobase profile."""
    chosen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for raw in addressable:
        row = dict(zip(ADDRESSABLE_COLUMNS, raw, strict=True))
        keys = normalise(row)
        if not str(row["id"]).strip(" ") or all(k is None for k in keys):
            continue
        candidate = {"id": row["id"], **dict(zip(MATCH_KEYS, keys, strict=True))}
        candidate.update(household_id=row["household_id"], last_seen=row["last_seen"])
        seen = candidate["last_seen"]
        household = candidate["household_id"]
        rank = (seen is None, -seen.timestamp() if seen else 0.0, household is None, household or "")
        best = chosen.get((row["id"], *keys))
        if best is None or rank < best["_rank"]:
            chosen[(row["id"], *keys)] = {**candidate, "_rank": rank}
    profiles: dict[str, dict[str, Any]] = {}
    for raw in sorted(infobase, key=lambda r: tuple((v is None, str(v)) for v in r)):
        profile = dict(zip(INFOBASE_COLUMNS, raw, strict=True))
        interests = profile["interests"]
        profile["interests"] = "|".join(interests) if interests else None
        profiles.setdefault(profile["id"], profile)
    out: dict[str, dict[str, Any]] = {}
    for record_key, row in chosen.items():
        record_id = hashlib.sha256("\x1f".join(k or "" for k in record_key).encode()).hexdigest()
        attributes = {c: profiles.get(row["id"], {}).get(c) for c in INFOBASE_COLUMNS[1:]}
        body = {k: v for k, v in row.items() if k != "_rank"}
        out[record_id] = {"record_id": record_id, **body, **attributes, "id_part": engine.bucket_of(row["id"], N_PARTS)}
    return out


# ---------------------------------------------------------------------------------------------
# the story


def test_each_unique_record_appears_once_with_normalised_keys_and_its_ids_attributes(built: Lake) -> None:
    rows = built.er_rows()

    expected = expected_er_rows(ADDRESSABLE, INFOBASE)
    assert len(rows) == len({r["record_id"] for r in rows}), "record_id must be unique"
    assert {r["record_id"]: r for r in rows} == expected
    assert len(expected) == 5
    assert [r["zip"] for r in rows if r["id"] == pid(6)] == ["07030"]
    assert not [r for r in rows if r["id"] in (pid(3), pid(7))], "rows without a match key are dropped"


def test_tables_with_one_row_per_id_as_steps_1_and_2_write_them_give_the_same_records(tmp_path: Path) -> None:
    """The step ranks rows only when a part table repeats an id; without repeats nothing is dropped."""
    one_per_id = list({row[0]: row for row in ADDRESSABLE}.values())
    profiles = list({row[0]: row for row in INFOBASE}.values())
    lake = make_lake(tmp_path, one_per_id, profiles)

    create_er_table.run(lake.invocation())

    rows = lake.er_rows()
    assert {r["record_id"]: r for r in rows} == expected_er_rows(one_per_id, profiles)
    assert len(rows) == 4, "one record for each id that has an id and a match key"


def in_canonical_form(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """An addressable row as step 1 writes it: keys trimmed, blanks null, hex and MAIDs lower-cased."""
    values = dict(zip(ADDRESSABLE_COLUMNS, row, strict=True))
    for key in ("hashed_email", "hashed_phone", "maid", "ip"):
        text = _blank_to_none(values[key])
        values[key] = text.lower() if text and key != "ip" else text
    return tuple(values[c] for c in ADDRESSABLE_COLUMNS)


def test_tables_committed_as_steps_1_and_2_declare_them_are_taken_at_their_word(tmp_path: Path) -> None:
    """Steps 1-2 declare one row per id, and step 1 its keys' canonical forms, in their manifests:
    the step neither counts, ranks nor normalises those keys again, and the records are the same."""
    one_per_id = [in_canonical_form(row) for row in {row[0]: row for row in ADDRESSABLE}.values()]
    profiles = list({row[0]: row for row in INFOBASE}.values())
    lake = make_lake(tmp_path, one_per_id, profiles, unique_key=("id",), canonical=addressable_split.CANONICAL)

    result = create_er_table.run(lake.invocation())

    taken = result.metrics["taken_as_committed"]
    assert taken["one_row_per_id"] == {"addressable": True, "infobase": True}
    assert taken["canonical_keys"] == ["hashed_email", "hashed_phone", "ip", "maid"]
    assert {r["record_id"]: r for r in lake.er_rows()} == expected_er_rows(one_per_id, profiles)


def test_keys_declared_canonical_are_not_normalised_again(tmp_path: Path) -> None:
    """The declaration is what saves the work, so it is what decides: a writer that declared a form
    its values are not in gets them back as written (step 1 writes them through the same forms)."""
    declared_but_raw = [
        (pid(8), " AB08 ", None, None, None, None, "h8", T1),
        (pid(9), "ab09", "PH09", "maid-9", "10.0.0.9", "02134", "h9", T2),
    ]
    lake = make_lake(
        tmp_path, declared_but_raw, INFOBASE[:1], unique_key=("id",), canonical=addressable_split.CANONICAL
    )

    create_er_table.run(lake.invocation())

    rows = {r["id"]: r for r in lake.er_rows()}
    assert (rows[pid(8)]["hashed_email"], rows[pid(9)]["hashed_phone"]) == (" AB08 ", "PH09")


def test_a_file_added_to_a_committed_part_is_not_covered_by_its_writers_word(tmp_path: Path) -> None:
    """A repeat of an id copied into a part after the commit: the step sees the part changed, counts,
    finds the repeat and keeps the newest record, as if nothing had been declared."""
    one_per_id = list({row[0]: row for row in ADDRESSABLE}.values())
    profiles = list({row[0]: row for row in INFOBASE}.values())
    lake = make_lake(tmp_path, one_per_id, profiles, unique_key=("id",), canonical=addressable_split.CANONICAL)
    repeat = (pid(4), "EF04", "ph04", None, "192.168.0.4", "501", "h5", datetime(2025, 1, 1))  # same record, newer
    part = Path(lake.params["split_root"]) / "addressable_ids" / f"id_part={engine.bucket_of(pid(4), N_PARTS)}"
    typed = [
        f"CAST({_sql_value(v)} AS {'TIMESTAMP' if c == 'last_seen' else 'VARCHAR'}) AS {c}"
        for c, v in zip(ADDRESSABLE_COLUMNS, repeat, strict=True)
    ]
    duckdb.connect().execute(f"COPY (SELECT {', '.join(typed)}) TO '{part / 'copied-later.parquet'}' (FORMAT parquet)")

    result = create_er_table.run(lake.invocation())

    taken = result.metrics["taken_as_committed"]
    assert taken["one_row_per_id"] == {"addressable": False, "infobase": True}
    assert taken["canonical_keys"] == [], "the copied file's EF04 is lower-cased like any other"
    rows = lake.er_rows()
    assert {r["record_id"]: r for r in rows} == expected_er_rows([*one_per_id, repeat], profiles)
    assert [r["household_id"] for r in rows if r["id"] == pid(4)] == ["h5"], "the newer record is kept, once"


def test_the_join_stays_within_the_part_of_the_id(built: Lake) -> None:
    for row in built.er_rows():
        assert row["id_part"] == engine.bucket_of(row["id"], N_PARTS)
    manifest = engine.read_manifest(built.er_path)
    assert manifest is not None, "the manifest is the commit marker"
    assert sorted(manifest.partitions) == sorted({r["id_part"] for r in built.er_rows()})


def test_the_er_table_is_registered_in_the_local_catalog(built: Lake) -> None:
    info = catalog.get_table(built.params, "part_addressable_ids_er")

    assert sum(p.rows for p in info.partitions) == len(built.er_rows())


def test_the_default_schema_mapping_is_a_create_schema_mapping_body(built: Lake) -> None:
    body = json.loads((Path(built.params["er_root"]) / "schema_mapping.json").read_text())

    fields = body["mappedInputFields"]
    columns = set(built.er_rows()[0]) - {"id_part"}
    assert set(body) == {"schemaName", "description", "mappedInputFields"}
    assert re.fullmatch(r"[a-zA-Z_0-9-]{1,255}", body["schemaName"])
    assert 2 <= len(fields) <= 35
    assert {f["fieldName"] for f in fields} == columns, "every column mapped once, the partition not"
    assert all(set(f) <= {"fieldName", "type", "matchKey", "groupName", "hashed", "subType"} for f in fields)
    assert all(f["type"] in VALID_TYPES for f in fields)
    by_name = {f["fieldName"]: f for f in fields}
    assert [f["fieldName"] for f in fields if f["type"] == "UNIQUE_ID"] == ["record_id"]
    assert by_name["hashed_email"] == {
        "fieldName": "hashed_email",
        "type": "EMAIL_ADDRESS",
        "matchKey": "email",
        "hashed": True,
    }
    assert {by_name[k]["matchKey"] for k in MATCH_KEYS} == {"email", "phone", "maid", "ip", "zip"}
    assert "matchKey" not in by_name["age_range"]


def test_a_bad_type_in_the_config_fails_step_5_until_the_file_is_fixed(lake: Lake) -> None:
    create_er_table.run(lake.invocation(run_id=1))
    committed = (lake.er_path / engine.MANIFEST).read_text()
    config = lake.write_config("er-schema-mapping.yaml", "fields:\n  hashed_email: EMAIL\n")

    with pytest.raises(JobError) as failure:
        create_er_table.run(lake.invocation(run_id=2))

    error = failure.value
    assert error.error_type == "SchemaMappingError"
    message = str(error)
    assert "hashed_email" in message and "'EMAIL'" in message and str(config) in message
    assert "did you mean EMAIL_ADDRESS?" in message
    assert all(t in message for t in VALID_TYPES), "the valid types are listed"
    assert (lake.er_path / engine.MANIFEST).read_text() == committed, "the last good table is untouched"

    config.write_text("fields:\n  hashed_email: EMAIL_ADDRESS\n")
    result = create_er_table.run(lake.invocation(run_id=2))

    assert result is not None and result.metrics["schema_mapping_source"] == str(config)
    body = json.loads((Path(lake.params["er_root"]) / "schema_mapping.json").read_text())
    email = next(f for f in body["mappedInputFields"] if f["fieldName"] == "hashed_email")
    assert email == {"fieldName": "hashed_email", "type": "EMAIL_ADDRESS", "matchKey": "email", "hashed": True}


def test_a_json_override_in_the_aws_shape_changes_and_excludes_fields(lake: Lake) -> None:
    lake.write_config(
        "er-schema-mapping.json",
        json.dumps(
            {
                "schemaName": "my-schema",
                "mappedInputFields": [{"fieldName": "zip", "type": "STRING"}],
                "exclude": ["household_id"],
            }
        ),
    )

    create_er_table.run(lake.invocation())

    body = json.loads((Path(lake.params["er_root"]) / "schema_mapping.json").read_text())
    by_name = {f["fieldName"]: f for f in body["mappedInputFields"]}
    assert body["schemaName"] == "my-schema"
    assert by_name["zip"] == {"fieldName": "zip", "type": "STRING", "matchKey": "zip"}
    assert "household_id" not in by_name


def test_every_problem_in_the_config_is_reported_at_once(shared: Lake) -> None:
    lake = shared
    lake.write_config(
        "er-schema-mapping.yml",
        "fields:\n  hashed_phone: {type: PHONE_NUMBER, matchKey: 'no/slash'}\n"
        "  id: UNIQUE_ID\n  shoe_size: STRING\n  maid: {type: MAID, hashed: maybe}\n",
    )

    with pytest.raises(JobError) as failure:
        create_er_table.run(lake.invocation())

    message = str(failure.value)
    assert failure.value.error_type == "SchemaMappingError"
    assert "4 problems: (1)" in message and "\n" not in message
    for fragment in ("'shoe_size' is not a column", "matchKey 'no/slash'", "hashed must be", "UNIQUE_ID"):
        assert fragment in message
    assert not lake.er_path.exists(), "nothing is written when the mapping is invalid"


def test_two_config_files_are_ambiguous(shared: Lake) -> None:
    lake = shared
    lake.write_config("er-schema-mapping.yaml", "fields: {}\n")
    lake.write_config("er-schema-mapping.json", "{}")

    with pytest.raises(JobError, match="more than one ER schema mapping file") as failure:
        create_er_table.run(lake.invocation())
    assert failure.value.error_type == "SchemaMappingError"


def test_part_tables_that_were_never_registered_stop_the_step(shared: Lake) -> None:
    with pytest.raises(JobError) as failure:
        create_er_table.run(shared.invocation(table_prefix="other_"))
    assert failure.value.error_type == str(engine.JobErrorType.TABLE_NOT_REGISTERED)
