"""Step 5: the entity-resolution input table and the schema mapping AWS Entity Resolution reads it with.

`part_addressable_ids_er` holds one row per unique addressable record: the id, its match keys in one
canonical form (lower-case hex hashes and MAIDs, trimmed IPs, five-digit zips with their leading zeros)
and the id's infobase attributes, joined by id *within its part* (both part tables are bucketed by the
same `bucket(id, n_parts)`, so the join never crosses parts and runs part-parallel on Spark).

"Unique record" means a distinct (id, hashed_email, hashed_phone, maid, ip, zip) after normalisation: the
raw feed repeats the same record with different capitalisation, padding or `last_seen`, and AWS Entity
Resolution needs a column that is unique within the table (the UNIQUE_ID). `record_id` is a SHA-256 of
the normalised record, so it is stable across runs and engines and a record keeps its id when it is
re-delivered. Of repeated records the most recent (`last_seen`) wins. Records with no id or no match
key at all cannot be resolved and are dropped (step 6 shows the ER table's ids beside the addressable
table's, so a jump in dropped records is visible there).

The schema mapping is configuration, not code: the defaults below can be overridden per field by
`{config_root}/er-schema-mapping.yaml` (or `.json`). It is validated against the real ER table columns
and AWS's published limits *before* any data is written, so a typo such as `EMAIL` for
`EMAIL_ADDRESS` fails here in seconds with the field, the bad value and the valid values, instead of
failing later inside CreateSchemaMapping or, worse, producing a workflow that silently matches nothing.

An override file; fields it does not name keep their defaults (`DEFAULT_FIELDS`, else STRING):

    schemaName: omc-flywheel-part-addressable-ids-er
    fields:
      hashed_email: {type: EMAIL_ADDRESS, matchKey: email, hashed: true}
      zip: ADDRESS_POSTALCODE        # a bare type: the field's other defaults (matchKey) stay
      ip: {matchKey: null}           # null removes a default attribute: no matching on ip
    exclude: [marital_status]        # columns left out of the mapping

A `.json` file may instead hold the AWS shape, `{"mappedInputFields": [{"fieldName": ..., "type": ...}]}`.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flywheel.invocation import JobError, JobResult, StepInvocation
from flywheel.pipelines.db_refresh import catalog, engine, storage
from flywheel.pipelines.db_refresh.canonical import LOWER, TRIMMED, canonical, trimmed
from flywheel.pipelines.db_refresh.glue_partitions import commit_options

log = logging.getLogger(__name__)

SCHEMA_MAPPING_ERROR = "SchemaMappingError"
CONFIG_NAMES = ("er-schema-mapping.yaml", "er-schema-mapping.yml", "er-schema-mapping.json")

# The `type` enum of SchemaInputAttribute in the AWS Entity Resolution API reference
# (docs.aws.amazon.com/entityresolution/latest/apireference/API_SchemaInputAttribute.html).
VALID_TYPES: tuple[str, ...] = (
    "NAME",
    "NAME_FIRST",
    "NAME_MIDDLE",
    "NAME_LAST",
    "ADDRESS",
    "ADDRESS_STREET1",
    "ADDRESS_STREET2",
    "ADDRESS_STREET3",
    "ADDRESS_CITY",
    "ADDRESS_STATE",
    "ADDRESS_COUNTRY",
    "ADDRESS_POSTALCODE",
    "PHONE",
    "PHONE_NUMBER",
    "PHONE_COUNTRYCODE",
    "EMAIL_ADDRESS",
    "UNIQUE_ID",
    "DATE",
    "STRING",
    "PROVIDER_ID",
    "IPV4",
    "IPV6",
    "MAID",
)
# CreateSchemaMapping limits: 2..35 mapped fields; names and keys match [a-zA-Z_0-9- ]{0,255}.
MIN_FIELDS, MAX_FIELDS = 2, 35
_NAME = re.compile(r"^[a-zA-Z_0-9\- ]{0,255}$")
_SCHEMA_NAME = re.compile(r"^[a-zA-Z_0-9-]{1,255}$")
_FIELD_KEYS = ("type", "matchKey", "groupName", "hashed", "subType")
_FILE_KEYS = ("schemaName", "description", "fields", "mappedInputFields", "exclude")
_TYPE_PROBLEM = "is not a valid AWS Entity Resolution type"

DEFAULT_SCHEMA_NAME = "omc-flywheel-part-addressable-ids-er"
PARTITION_COLUMN = "id_part"
ER_TABLE = "part_addressable_ids_er"


@dataclass(frozen=True)
class MappedField:
    """One SchemaInputAttribute: how Entity Resolution reads a column and whether it matches on it."""

    field_name: str
    type: str
    match_key: str | None = None
    group_name: str | None = None
    hashed: bool | None = None
    sub_type: str | None = None

    def to_aws(self) -> dict[str, Any]:
        body: dict[str, Any] = {"fieldName": self.field_name, "type": self.type}
        for key, value in (
            ("matchKey", self.match_key),
            ("groupName", self.group_name),
            ("hashed", self.hashed),
            ("subType", self.sub_type),
        ):
            if value is not None:
                body[key] = value
        return body


@dataclass(frozen=True)
class SchemaMapping:
    """The body of a CreateSchemaMapping request (without tags)."""

    schema_name: str
    description: str
    fields: tuple[MappedField, ...] = field(default_factory=tuple)
    source: str = "defaults"

    def to_aws(self) -> dict[str, Any]:
        return {
            "schemaName": self.schema_name,
            "description": self.description,
            "mappedInputFields": [f.to_aws() for f in self.fields],
        }

    @property
    def match_keys(self) -> dict[str, list[str]]:
        keys: dict[str, list[str]] = {}
        for f in self.fields:
            if f.match_key:
                keys.setdefault(f.match_key, []).append(f.field_name)
        return keys


# Defaults for the columns this step produces. Infobase attributes not listed here are mapped as
# STRING without a match key: Entity Resolution carries them to its output but does not match on them.
DEFAULT_FIELDS: Mapping[str, Mapping[str, Any]] = {
    "record_id": {"type": "UNIQUE_ID"},
    "id": {"type": "PROVIDER_ID"},
    "hashed_email": {"type": "EMAIL_ADDRESS", "matchKey": "email", "hashed": True},
    "hashed_phone": {"type": "PHONE_NUMBER", "matchKey": "phone", "hashed": True},
    "maid": {"type": "MAID", "matchKey": "maid"},
    "ip": {"type": "IPV4", "matchKey": "ip"},
    "zip": {"type": "ADDRESS_POSTALCODE", "matchKey": "zip"},
    "last_seen": {"type": "DATE"},
    "updated_at": {"type": "DATE"},
    "state": {"type": "ADDRESS_STATE"},
}


def _schema_error(problems: Sequence[str], source: str) -> JobError:
    """One line, so that a console headline or an alert subject carries the whole cause."""
    listed = problems[0] if len(problems) == 1 else "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
    count = "" if len(problems) == 1 else f"{len(problems)} problems: "
    types = f". Valid types: {', '.join(VALID_TYPES)}" if any(_TYPE_PROBLEM in p for p in problems) else ""
    return JobError(
        f"invalid ER schema mapping in {source}: {count}{listed}{types}. Fix: correct {source} and resume the run",
        error_type=SCHEMA_MAPPING_ERROR,
    )


def find_config(config_root: str | Path | None) -> str | None:
    """The override file in `config_root` (a directory or an `s3://` prefix), if any. Two of them is
    ambiguous and refused."""
    if not config_root:
        return None
    root = str(config_root)
    present = set(storage.storage_for(root).list_files(root, CONFIG_NAMES))
    found = [storage.join(root, name) for name in CONFIG_NAMES if storage.join(root, name) in present]
    if len(found) > 1:
        raise JobError(
            f"more than one ER schema mapping file in {root}: {', '.join(storage.name_of(p) for p in found)}; "
            "fix: keep exactly one of them",
            error_type=SCHEMA_MAPPING_ERROR,
        )
    return found[0] if found else None


def read_config(path: str | Path) -> Mapping[str, Any]:
    """Parse an override file; YAML is a superset of JSON, but a .json file must be real JSON."""
    text = storage.storage_for(path).read_text(str(path))
    if text is None:
        raise JobError(f"{path} is gone; fix: put it back and resume the run", error_type=SCHEMA_MAPPING_ERROR)
    try:
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise JobError(
            f"{path} cannot be parsed: {' '.join(str(exc).split())}. Fix: correct its syntax and resume the run",
            error_type=SCHEMA_MAPPING_ERROR,
        ) from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise JobError(
            f"{path} must hold a mapping with `fields:` (or `mappedInputFields:`), "
            f"not a {type(data).__name__}; fix: see the example in the create_er_table module docs",
            error_type=SCHEMA_MAPPING_ERROR,
        )
    return data


def _overrides(config: Mapping[str, Any], problems: list[str]) -> dict[str, dict[str, Any]]:
    """Per-field overrides from either accepted shape: `fields: {name: TYPE | {type: ...}}` or the
    AWS-native `mappedInputFields: [{fieldName: ..., type: ...}]` (so a mapping exported from the
    console can be pasted as is)."""
    out: dict[str, dict[str, Any]] = {}
    fields = config.get("fields")
    if fields is not None:
        if not isinstance(fields, Mapping):
            problems.append("`fields` must be a mapping of column name to type or attributes")
        else:
            for name, value in fields.items():
                if isinstance(value, str):
                    out[str(name)] = {"type": value}
                elif isinstance(value, Mapping):
                    out[str(name)] = dict(value)
                else:
                    problems.append(f"field {name!r}: expected a type or a mapping, got {value!r}")
    listed = config.get("mappedInputFields")
    if listed is not None:
        if not isinstance(listed, list):
            problems.append("`mappedInputFields` must be a list of {fieldName, type, ...}")
        else:
            for i, item in enumerate(listed):
                if not isinstance(item, Mapping) or "fieldName" not in item:
                    problems.append(f"mappedInputFields[{i}]: expected a mapping with fieldName")
                    continue
                body = {k: v for k, v in item.items() if k != "fieldName"}
                name = str(item["fieldName"])
                if name in out:
                    problems.append(f"field {name!r} is configured twice")
                out[name] = body
    return out


def _valid_type_hint(value: object) -> str:
    """`EMAIL` -> EMAIL_ADDRESS: prefer a valid type the bad one is a prefix or part of."""
    text = str(value).strip().upper().replace(" ", "_").replace("-", "_")
    close = [t for t in VALID_TYPES if t.startswith(text)] or [t for t in VALID_TYPES if text and text in t]
    close = close or difflib.get_close_matches(text, VALID_TYPES, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close and text else ""


def _build_field(name: str, body: Mapping[str, Any], problems: list[str]) -> MappedField | None:
    unknown = sorted(set(body) - set(_FIELD_KEYS))
    if unknown:
        problems.append(f"field {name!r}: unknown key(s) {unknown}; allowed: {', '.join(_FIELD_KEYS)}")
    kind = body.get("type")
    if kind not in VALID_TYPES:
        problems.append(f"field {name!r}: type {kind!r} {_TYPE_PROBLEM}{_valid_type_hint(kind)}")
    for key in ("matchKey", "groupName", "subType"):
        value = body.get(key)
        if value is not None and (not isinstance(value, str) or not _NAME.match(value)):
            problems.append(f"field {name!r}: {key} {value!r} must match [a-zA-Z_0-9- ], at most 255 chars")
    hashed = body.get("hashed")
    if hashed is not None and not isinstance(hashed, bool):
        problems.append(f"field {name!r}: hashed must be true or false, not {hashed!r}")
    if kind not in VALID_TYPES:
        return None
    return MappedField(
        field_name=name,
        type=str(kind),
        match_key=body.get("matchKey"),
        group_name=body.get("groupName"),
        hashed=hashed if isinstance(hashed, bool) else None,
        sub_type=body.get("subType"),
    )


def resolve_schema_mapping(
    columns: Sequence[str],
    config: Mapping[str, Any] | None = None,
    *,
    source: str = "defaults",
) -> SchemaMapping:
    """The schema mapping for an ER table with `columns`: defaults, then the override file.

    Every problem is collected and raised at once as a JobError(SchemaMappingError), so an operator
    fixes the file in one pass. The partition column is never mapped (Glue exposes it, but it carries
    no identity).
    """
    config = config or {}
    problems: list[str] = []
    unknown_top = sorted(set(config) - set(_FILE_KEYS))
    if unknown_top:
        problems.append(f"unknown top-level key(s) {unknown_top}; allowed: {', '.join(_FILE_KEYS)}")
    schema_name = config.get("schemaName", DEFAULT_SCHEMA_NAME)
    if not isinstance(schema_name, str) or not _SCHEMA_NAME.match(schema_name):
        problems.append(f"schemaName {schema_name!r} must match [a-zA-Z_0-9-], 1 to 255 chars")
    description = config.get("description", "omc-flywheel addressable records for entity resolution")
    if not isinstance(description, str) or len(description) > 255:
        problems.append("description must be a string of at most 255 characters")

    mappable = [c for c in columns if c != PARTITION_COLUMN]
    exclude = config.get("exclude") or []
    if not isinstance(exclude, list) or not all(isinstance(e, str) for e in exclude):
        problems.append("`exclude` must be a list of column names")
        exclude = []
    overrides = _overrides(config, problems)
    for name in [*overrides, *exclude]:
        if name not in mappable:
            problems.append(f"field {name!r} is not a column of the ER table; columns: {', '.join(mappable)}")
    for name in set(overrides) & set(exclude):
        problems.append(f"field {name!r} is both configured and excluded")

    fields: list[MappedField] = []
    for name in mappable:
        if name in exclude:
            continue
        body = dict(DEFAULT_FIELDS.get(name, {"type": "STRING"}))
        body.update(overrides.get(name, {}))
        body = {k: v for k, v in body.items() if v is not None or k == "type"}
        if not _NAME.match(name):
            problems.append(f"column {name!r} cannot be mapped: names must match [a-zA-Z_0-9- ]")
        built = _build_field(name, body, problems)
        if built is not None:
            fields.append(built)

    unique_ids = [f.field_name for f in fields if f.type == "UNIQUE_ID"]
    if len(unique_ids) != 1 and not any("UNIQUE_ID" in p for p in problems):
        problems.append(
            f"exactly one field must have type UNIQUE_ID (record_id is the one built for it), "
            f"found {unique_ids or 'none'}"
        )
    if not any(f.match_key for f in fields):
        problems.append("no field has a matchKey, so Entity Resolution would match nothing")
    if not MIN_FIELDS <= len(fields) <= MAX_FIELDS:
        problems.append(
            f"{len(fields)} fields are mapped; CreateSchemaMapping takes {MIN_FIELDS} to {MAX_FIELDS} "
            "(list columns to leave out under `exclude:`)"
        )
    if problems:
        raise _schema_error(problems, source)
    return SchemaMapping(
        schema_name=str(schema_name), description=str(description), fields=tuple(fields), source=source
    )


def read_er_table(session: Any, er_root: str | Path) -> Any:
    """The committed ER table: only the partitions its manifest (written last) lists.

    For the report steps, which run after this one and must not read a half-written table.
    """
    path = storage.join(er_root, ER_TABLE)
    manifest = engine.read_manifest(path)
    if manifest is None or not manifest.partitions:
        raise JobError(
            f"{path} has no committed ER table (no {engine.MANIFEST}); "
            "fix: run step 5 (create-part-addressable-ids-er-table) first",
            error_type=str(engine.JobErrorType.MISSING_SOURCE),
        )
    return engine.read_partitions(session, path, PARTITION_COLUMN, sorted(manifest.partitions))


# ---------------------------------------------------------------------------------------------
# the table (PySpark DataFrame API: SQLFrame on DuckDB locally, Spark on Glue)

MATCH_KEYS: tuple[str, ...] = ("hashed_email", "hashed_phone", "maid", "ip", "zip")
RECORD_COLUMNS: tuple[str, ...] = ("household_id", "last_seen")
_SEPARATOR = "\x1f"  # the ASCII unit separator: cannot occur in a normalised key
_ZIP = r"^([0-9]{3,5})(-?[0-9]{4})?$"


KEY_FORMS: Mapping[str, str] = {"hashed_email": LOWER, "hashed_phone": LOWER, "maid": LOWER, "ip": TRIMMED}
"""The form of each match key but zip (see `canonical`)."""


def keys_in_form(manifest: engine.PartitionedOutput | None) -> frozenset[str]:
    """The match keys an addressable table's intact manifest declares already in their `KEY_FORMS`."""
    written_in = manifest.canonical if manifest else {}
    return frozenset(name for name, form in KEY_FORMS.items() if written_in.get(name) == form)


def normalised_keys(F: Any, in_form: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The canonical form of each match key, as column expressions over the raw addressable row.

    Hashes and MAIDs are case-insensitive hex, so lower-cased; a zip keeps its five digits and
    leading zeros (`2134` lost its zero in a spreadsheet: `02134`; ZIP+4 is cut to five); anything
    that is not a zip becomes null rather than a key that matches nothing. A key in `in_form` (see
    `keys_in_form`) is taken as it is: normalising the four again was a sixth of this step's work at
    10M rows.
    """
    zip_digits = F.regexp_extract(trimmed(F, F.col("zip").cast("string")), _ZIP, 1)
    keys = {name: F.col(name) if name in in_form else canonical(F, name, form) for name, form in KEY_FORMS.items()}
    keys["zip"] = F.when(zip_digits != F.lit(""), F.lpad(zip_digits, 5, "0"))
    return keys


def _check_columns(df: Any, table: str, required: Sequence[str]) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise JobError(
            f"{table} lacks column(s) {missing} that the ER table needs (it has {list(df.columns)}); "
            "fix: re-run steps 1-4 so the part tables have the current layout",
            error_type=str(engine.JobErrorType.SCHEMA_MISMATCH),
        )


def build_er_table(
    addressable: Any,
    infobase: Any,
    *,
    as_committed: tuple[engine.PartitionedOutput | None, engine.PartitionedOutput | None] = (None, None),
) -> Any:
    """One row per unique normalised record, with its id's infobase attributes.

    The join is on (id_part, id): both sides are bucketed by id into the same parts, so the join key
    includes the part and the engines can join part by part. The id itself is taken as steps 1-2 wrote
    it (only blank ids are dropped): rewriting it here, even just its case, could move it to another
    bucket than the one its part says, and the same id would then live in two parts.

    `as_committed` holds each table's manifest when its parts are still the files committed (see
    `as_committed`): what the writer declared there (one row per id, keys already in their canonical
    form) is then not computed again.
    """
    session = _session_of(addressable)
    F = engine.functions(session)
    Window = engine.window(session)
    _check_columns(addressable, "part_addressable_ids", ("id", PARTITION_COLUMN, *MATCH_KEYS, *RECORD_COLUMNS))
    _check_columns(infobase, "part_infobase_attributes", ("id", PARTITION_COLUMN))

    # Each side is a short chain (normalise, rank repeats, keep the first): SQLFrame re-plans the
    # whole chain on every operation, so a short chain keeps planning cheap as well.
    keys = normalised_keys(F, keys_in_form(as_committed[0]))
    present_id = F.when(trimmed(F, F.col("id")) != F.lit(""), F.col("id"))
    record_id = F.sha2(F.concat_ws(_SEPARATOR, F.col("id"), *[F.coalesce(k, F.lit("")) for k in keys.values()]), 256)
    # A record is its id and normalised keys, which `record_id` hashes: one narrow key to partition
    # by instead of seven strings (the window sorts by it; a third of the cost at 2M rows).
    newest_first = Window.partitionBy(PARTITION_COLUMN, "record_id").orderBy(
        F.col("last_seen").desc_nulls_last(), F.col("household_id").asc_nulls_last()
    )
    records = addressable.select(
        record_id.alias("record_id"),
        present_id.alias("id"),
        *[expr.alias(name) for name, expr in keys.items()],
        *[F.col(c) for c in RECORD_COLUMNS],
        F.col(PARTITION_COLUMN),
    ).where(F.col("id").isNotNull() & F.coalesce(*[F.col(k) for k in MATCH_KEYS]).isNotNull())
    ranked = not one_row_per_id(as_committed[0]) and repeats(addressable, [PARTITION_COLUMN, "id"])
    unique = first_per_key(records, newest_first) if ranked else records

    types = dict(engine.schema_of(infobase))
    renamed = attribute_names(list(types))
    attributes = list(renamed)
    # Infobase should hold one row per id; if a feed repeats an id, keep the newest profile (then any,
    # deterministically) rather than multiply that id's records (step 6 reports the duplicates).
    newest = [F.col(renamed["updated_at"]).desc_nulls_last()] if "updated_at" in renamed else []
    one_per_id = Window.partitionBy(PARTITION_COLUMN, "id").orderBy(
        *newest, *[F.col(renamed[c]).asc_nulls_last() for c in attributes]
    )
    profiles = infobase.select(
        present_id.alias("id"),
        F.col(PARTITION_COLUMN),
        *[_flat(F, c, types[c]).alias(renamed[c]) for c in attributes],
    ).where(F.col("id").isNotNull())
    ranked = not one_row_per_id(as_committed[1]) and repeats(infobase, [PARTITION_COLUMN, "id"])
    profile = first_per_key(profiles, one_per_id) if ranked else profiles
    joined = unique.join(profile, on=[PARTITION_COLUMN, "id"], how="left")
    return joined.select(*er_columns(list(types)))


def as_committed(params: Mapping[str, Any], table: str) -> engine.PartitionedOutput | None:
    """A part table's manifest, when its registered parts still hold exactly the files its writer
    (steps 1-2) committed; None when there is none or the parts changed since."""
    info = catalog.get_table(params, table)
    return engine.intact_manifest(info.storage_root, info.partition_col, info.partition_values)


def one_row_per_id(manifest: engine.PartitionedOutput | None) -> bool:
    """Declared by the writer: counting the ids of each 10M-row table took 3 s."""
    return manifest is not None and manifest.unique_key == ("id",)


def repeats(df: Any, key: Sequence[str]) -> bool:
    """Whether a `key` occurs twice in `df` (a row with a null key part counts as a repeat).

    Steps 1-2 already keep one row per id, so the windows below almost never change anything, and
    they are what the ER step spends most on after writing: counting the keys first costs a fifth.
    """
    F = engine.functions(_session_of(df))
    row = df.agg(F.count(F.lit(1)).alias("rows"), F.countDistinct(*key).alias("keys")).collect()[0]
    return int(row["rows"] or 0) != int(row["keys"] or 0)


def first_per_key(df: Any, ranking: Any) -> Any:
    """The first row of each window partition of `ranking`."""
    F = engine.functions(_session_of(df))
    ranked = df.withColumn("_rank", F.row_number().over(ranking))
    return ranked.where(F.col("_rank") == F.lit(1)).drop("_rank")


def _session_of(df: Any) -> Any:
    return df.sparkSession if hasattr(df, "sparkSession") else df.session


def attribute_names(infobase_columns: Sequence[str]) -> dict[str, str]:
    """Infobase column -> its name in the ER table (`ib_` in front if an addressable column has it)."""
    taken = {"record_id", "id", *MATCH_KEYS, *RECORD_COLUMNS}
    return {c: (f"ib_{c}" if c in taken else c) for c in infobase_columns if c not in ("id", PARTITION_COLUMN)}


def er_columns(infobase_columns: Sequence[str]) -> list[str]:
    """The ER table's columns, known before anything is computed: the mapping is checked against them."""
    attributes = attribute_names(infobase_columns).values()
    return ["record_id", "id", *MATCH_KEYS, *RECORD_COLUMNS, *attributes, PARTITION_COLUMN]


def _flat(F: Any, column: str, dtype: str) -> Any:
    """List attributes (interests) become one `|`-joined string: ER input columns are scalar."""
    kind = dtype.lower()
    if kind.startswith("array") or kind.endswith("[]") or kind.startswith("list"):
        return canonical(F, F.array_join(F.col(column), "|"), TRIMMED)
    return F.col(column)


# ---------------------------------------------------------------------------------------------
# the job


def run(invocation: StepInvocation) -> JobResult:
    params = invocation.params
    er_root = str(params["er_root"])
    prefix = str(params.get("table_prefix") or "")
    config_file = find_config(params.get("config_root"))
    config = read_config(config_file) if config_file else {}
    with engine.session_scope(params) as session:
        addressable = catalog.read_part_table(session, params, f"{prefix}addressable_ids")
        infobase = catalog.read_part_table(session, params, f"{prefix}infobase_attributes")
        # The mapping is checked against the columns the table will have before it is computed.
        columns = er_columns(list(infobase.columns))
        mapping = resolve_schema_mapping(columns, config, source=str(config_file or "defaults"))
        declared = (
            as_committed(params, f"{prefix}addressable_ids"),
            as_committed(params, f"{prefix}infobase_attributes"),
        )
        table = build_er_table(addressable, infobase, as_committed=declared)
        # Every record's part is one of the addressable table's registered parts: written part by part.
        parts = catalog.get_table(params, f"{prefix}addressable_ids").partition_values
        er_path = storage.join(er_root, ER_TABLE)
        er_name = f"{prefix}addressable_ids_er"
        output = engine.write_partitioned(
            table, er_path, PARTITION_COLUMN, parts=parts, **commit_options(params, er_name, er_path)
        )
    if output.rows == 0:
        raise JobError(
            f"the ER table {output.path} is empty: no addressable record has both an id and a match key "
            "(hashed_email, hashed_phone, maid, ip or zip). Check the split output of step 1, then resume",
            error_type=str(engine.JobErrorType.EMPTY_SOURCE),
        )
    mapping_file = storage.join(er_root, "schema_mapping.json")
    storage.storage_for(mapping_file).write_text(mapping_file, json.dumps(mapping.to_aws(), indent=2) + "\n")
    registered = _register(params, storage.join(er_root, ER_TABLE))
    log.info(
        "ER table: %d records in %d parts; schema mapping from %s", output.rows, len(output.partitions), mapping.source
    )
    return JobResult(
        outputs=(
            {"path": output.path, "rows": output.rows, "partitions": len(output.partitions)},
            {"path": mapping_file, "source": mapping.source},
        ),
        metrics={
            "er_rows": output.rows,
            "partitions": len(output.partitions),
            "match_keys": sorted(mapping.match_keys),
            "schema_mapping_source": mapping.source,
            "registered_as": registered,
            "taken_as_committed": {
                "one_row_per_id": {"addressable": one_row_per_id(declared[0]), "infobase": one_row_per_id(declared[1])},
                "canonical_keys": sorted(keys_in_form(declared[0])),
            },
        },
    )


def _register(params: Mapping[str, Any], path: str) -> str | None:
    """Register the ER table in the environment's catalog (the local file, or Glue with `catalog: glue`),
    so it can be queried beside the part tables and Entity Resolution can name it as its input. The
    engine does not matter: either engine's output registers the same way. Nothing happens when no
    catalog is configured.
    """
    if not params.get("catalog") or not params.get("database"):
        return None
    name = f"{params.get('table_prefix') or ''}addressable_ids_er"
    info = catalog.register_table(params, name, path, partition_col=PARTITION_COLUMN)
    return info.qualified_name
