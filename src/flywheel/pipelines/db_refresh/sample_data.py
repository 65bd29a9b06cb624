"""Deterministic raw inputs for db-refresh, shaped like the real deliveries, with faults on demand.

Addressable ids arrive as gzip CSV files with a header; infobase attributes as Parquet files keyed by
the same id space. Everything is generated inside DuckDB from `range()` and hash functions (no Python
row loops), so ten million rows take well under a minute. The same `rows` and `seed` give the same
files on the same DuckDB version.

The data carries what the split jobs must cope with: ids in upper case or padded with spaces, zip codes
with leading zeros, realistic nulls, about 2% of addressable rows repeating an earlier id with another
`last_seen` (a quarter of those with the same `last_seen`, to exercise the tie rule), and about 1% of
infobase rows repeating an id with another `updated_at`. About 85% of infobase ids are addressable ids.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from flywheel.pipelines.db_refresh.engine import sql_text

ADDRESSABLE_DIR = "addressable_ids"
INFOBASE_DIR = "infobase_attributes"

ADDRESSABLE_COLUMNS = (
    "id",
    "hashed_email",
    "hashed_phone",
    "maid",
    "ip",
    "zip",
    "household_id",
    "last_seen",
)
INFOBASE_COLUMNS = (
    "id",
    "updated_at",
    "age_range",
    "income_range",
    "gender",
    "homeowner",
    "children_present",
    "state",
    "interests",
    "marital_status",
    "education",
    "occupation",
    "net_worth",
    "home_value",
    "vehicle_owner",
    "pet_owner",
    "length_of_residence",
    "credit_card_holder",
    "language",
)

RENAMED_ADDRESSABLE = ("hashed_email", "email_sha256")
RENAMED_INFOBASE = ("income_range", "income_band")


class Fault(StrEnum):
    """A broken delivery, to see each failure mode of steps 1 and 2 for real."""

    MISSING_SOURCE = "missing-source"
    CORRUPT_FILE = "corrupt-file"
    EMPTY_FILE = "empty-file"
    RENAMED_COLUMN = "renamed-column"
    INFOBASE_MISSING = "infobase-missing"
    INFOBASE_CORRUPT = "infobase-corrupt"
    INFOBASE_RENAMED_COLUMN = "infobase-renamed-column"


@dataclass(frozen=True)
class GeneratedData:
    raw_root: str
    rows: int
    seed: int
    fault: str | None
    addressable_files: tuple[str, ...]
    infobase_files: tuple[str, ...]
    seconds: float


_STATES = (
    "AL",
    "AK",
    "AZ",
    "AR",
    "CA",
    "CO",
    "CT",
    "DE",
    "FL",
    "GA",
    "HI",
    "ID",
    "IL",
    "IN",
    "IA",
    "KS",
    "KY",
    "LA",
    "ME",
    "MD",
    "MA",
    "MI",
    "MN",
    "MS",
    "MO",
    "MT",
    "NE",
    "NV",
    "NH",
    "NJ",
    "NM",
    "NY",
    "NC",
    "ND",
    "OH",
    "OK",
    "OR",
    "PA",
    "RI",
    "SC",
    "SD",
    "TN",
    "TX",
    "UT",
    "VT",
    "VA",
    "WA",
    "WV",
    "WI",
    "WY",
)
_CHOICES: dict[str, tuple[str, ...]] = {
    "age_range": ("18-24", "25-34", "35-44", "45-54", "55-64", "65+"),
    "income_range": ("<25k", "25-50k", "50-75k", "75-100k", "100-150k", "150-250k", "250k+"),
    "gender": ("F", "M", "U"),
    "state": _STATES,
    "marital_status": ("single", "married", "divorced", "widowed"),
    "education": ("high_school", "some_college", "bachelor", "graduate", "vocational"),
    "occupation": ("professional", "management", "sales", "clerical", "trades", "retired", "student", "other"),
    "net_worth": ("<50k", "50-100k", "100-250k", "250-500k", "500k-1m", "1m+"),
    "home_value": ("<100k", "100-200k", "200-350k", "350-500k", "500k-1m", "1m+"),
    "language": ("en", "es", "zh", "vi", "fr", "de", "ko"),
}
_INTERESTS = (
    "travel",
    "cooking",
    "fitness",
    "gaming",
    "gardening",
    "music",
    "outdoors",
    "pets",
    "reading",
    "sports",
    "technology",
    "fashion",
)
# share of nulls, in percent, per attribute
_NULLS = {
    "hashed_email": 15,
    "hashed_phone": 30,
    "maid": 40,
    "ip": 10,
    "zip": 5,
    "household_id": 20,
    "age_range": 8,
    "income_range": 12,
    "gender": 3,
    "homeowner": 10,
    "children_present": 15,
    "state": 2,
    "interests": 20,
    "marital_status": 18,
    "education": 25,
    "occupation": 30,
    "net_worth": 35,
    "home_value": 40,
    "vehicle_owner": 20,
    "pet_owner": 25,
    "length_of_residence": 22,
    "credit_card_holder": 15,
    "language": 5,
}


def generate(raw_root: Path, rows: int, seed: int, *, files: int = 4, fault: str | None = None) -> GeneratedData:
    """Write `rows` addressable rows and as many infobase rows under `raw_root`, replacing old ones."""
    import duckdb

    if rows < 1 or files < 1:
        raise ValueError("rows and files must be at least 1")
    chosen = Fault(fault) if fault is not None else None
    started = time.perf_counter()
    root = Path(raw_root).absolute()
    addressable_dir, infobase_dir = root / ADDRESSABLE_DIR, root / INFOBASE_DIR
    for directory in (addressable_dir, infobase_dir):
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
    files = min(files, rows)
    conn = duckdb.connect()
    try:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET preserve_insertion_order = true")
        addressable: list[Path] = []
        if chosen is not Fault.MISSING_SOURCE:
            # DuckDB's own gzip writer is single-threaded and slow; write plain CSV and compress it
            # at level 1 in threads (zlib releases the GIL) while DuckDB writes the next file.
            with ThreadPoolExecutor(max_workers=max(os.cpu_count() or 1, 1)) as pool:
                pending = []
                for number, (lo, hi) in enumerate(_chunks(rows, files)):
                    path = addressable_dir / f"addressable_ids_{number:04d}.csv.gz"
                    plain = addressable_dir / f".addressable_ids_{number:04d}.csv"
                    rename = chosen is Fault.RENAMED_COLUMN and number == files - 1
                    sql = _addressable_sql(seed, rows, lo, hi, rename=rename)
                    conn.execute(f"COPY ({sql}) TO '{sql_text(str(plain))}' (FORMAT csv, HEADER)")
                    pending.append(pool.submit(_gzip, plain, path))
                    addressable.append(path)
                for future in pending:
                    future.result()
        infobase: list[Path] = []
        if chosen is not Fault.INFOBASE_MISSING:
            for number, (lo, hi) in enumerate(_chunks(rows, files)):
                path = infobase_dir / f"infobase_attributes_{number:04d}.parquet"
                rename = chosen is Fault.INFOBASE_RENAMED_COLUMN and number == files - 1
                sql = _infobase_sql(seed, lo, hi, rename=rename)
                conn.execute(f"COPY ({sql}) TO '{sql_text(str(path))}' (FORMAT parquet, COMPRESSION snappy)")
                infobase.append(path)
    finally:
        conn.close()
    if chosen is Fault.CORRUPT_FILE:
        _truncate(addressable[len(addressable) // 2])
    if chosen is Fault.INFOBASE_CORRUPT:
        _truncate(infobase[len(infobase) // 2])
    if chosen is Fault.EMPTY_FILE:  # an upload that stopped before its first byte
        addressable[len(addressable) // 2].write_bytes(b"")
    result = GeneratedData(
        raw_root=str(root),
        rows=rows,
        seed=seed,
        fault=str(chosen) if chosen else None,
        addressable_files=tuple(str(p) for p in addressable),
        infobase_files=tuple(str(p) for p in infobase),
        seconds=round(time.perf_counter() - started, 3),
    )
    (root / "_generated.json").write_text(json.dumps(asdict(result), indent=2))
    return result


def _chunks(rows: int, files: int) -> list[tuple[int, int]]:
    size = -(-rows // files)
    return [(lo, min(lo + size, rows)) for lo in range(0, rows, size)]


def _gzip(plain: Path, target: Path) -> None:
    """Level 1: the data is mostly hex digits, which higher levels barely shrink further."""
    # mtime 0 and no file name in the header, so the same rows and seed give the same bytes
    with (
        plain.open("rb") as source,
        target.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) as sink,
    ):
        shutil.copyfileobj(source, sink, 1 << 22)
    plain.unlink()


def _truncate(path: Path) -> None:
    """Cut a file short, the way an interrupted upload leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: max(len(data) * 3 // 5, 16)])


def _r(key: str, salt: int, seed: int) -> str:
    """A deterministic 64-bit draw for a row key; different salts give independent draws."""
    return f"hash({key}, {seed}, {salt})"


def _pct(key: str, salt: int, seed: int) -> str:
    return f"({_r(key, salt, seed)} % 100)"


def _nullable(column: str, expression: str, key: str, salt: int, seed: int) -> str:
    return f"CASE WHEN {_pct(key, salt, seed)} < {_NULLS[column]} THEN NULL ELSE {expression} END"


def _pick(name: str, key: str, salt: int, seed: int) -> str:
    """One of a few values: `split_part` on a constant is far cheaper per row than a list literal."""
    values = _CHOICES[name]
    return f"split_part('{'|'.join(values)}', '|', ({_r(key, salt, seed)} % {len(values)})::BIGINT + 1)"


def _addressable_sql(seed: int, rows: int, lo: int, hi: int, *, rename: bool) -> str:
    email_name = RENAMED_ADDRESSABLE[1] if rename else "hashed_email"
    # `src` is the person a row describes: itself, or (for ~2% of rows) an earlier row whose id it repeats
    base = f"""
        SELECT i,
               CASE WHEN i > 0 AND {_r("i", 1, seed)} % 1000 < 20 THEN ({_r("i", 2, seed)} % i)::BIGINT
                    ELSE i END AS src
        FROM range({lo}, {hi}) AS t(i)
    """
    drawn = f"""
        SELECT i, src,
               CASE WHEN src <> i AND {_r("i", 3, seed)} % 4 = 0 THEN src ELSE i END AS seen_key,
               sha256('{seed}:' || src) AS raw_id,
               md5('maid:{seed}:' || i) AS maid_hex
        FROM ({base})
    """
    maid_hex = "maid_hex"
    maid = " || '-' || ".join(
        f"substr({maid_hex}, {start}, {length})" for start, length in ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
    )
    maid_cased = f"CASE WHEN {_pct('i', 7, seed)} < 50 THEN upper({maid}) ELSE {maid} END"
    ip = " || '.' || ".join(
        f"({_r('i', salt, seed)} % {modulo} + {offset})::VARCHAR"
        for salt, modulo, offset in ((9, 223, 1), (10, 256, 0), (11, 256, 0), (12, 254, 1))
    )
    zip_code = f"lpad(({_r('src', 14, seed)} % 99450 + 501)::VARCHAR, 5, '0')"
    household = f"'HH' || lpad(({_r('src', 16, seed)} % {max(rows * 2 // 5, 1)})::VARCHAR, 10, '0')"
    last_seen = f"TIMESTAMP '2023-01-01 00:00:00' + to_seconds(({_r('seen_key', 18, seed)} % {900 * 86400})::BIGINT)"
    return f"""
        SELECT
            CASE {_pct("i", 4, seed)} WHEN 0 THEN upper(raw_id) WHEN 1 THEN upper(raw_id)
                 WHEN 2 THEN ' ' || raw_id || ' ' ELSE raw_id END AS id,
            {_nullable("hashed_email", f"sha256('email:{seed}:' || src)", "i", 5, seed)} AS {email_name},
            {_nullable("hashed_phone", f"sha256('phone:{seed}:' || src)", "i", 6, seed)} AS hashed_phone,
            {_nullable("maid", maid_cased, "i", 8, seed)} AS maid,
            {_nullable("ip", ip, "i", 13, seed)} AS ip,
            {_nullable("zip", zip_code, "i", 15, seed)} AS zip,
            {_nullable("household_id", household, "i", 17, seed)} AS household_id,
            {last_seen} AS last_seen
        FROM ({drawn})
    """


def _infobase_sql(seed: int, lo: int, hi: int, *, rename: bool) -> str:
    income_name = RENAMED_INFOBASE[1] if rename else "income_range"
    base = f"""
        SELECT j,
               CASE WHEN j > 0 AND {_r("j", 31, seed)} % 1000 < 10 THEN ({_r("j", 32, seed)} % j)::BIGINT
                    ELSE j END AS src
        FROM range({lo}, {hi}) AS t(j)
    """
    vocab = "[" + ", ".join(f"'{v}'" for v in _INTERESTS) + "]"
    interests = f"list_filter({vocab}, lambda x, n: (({_r('src', 33, seed)} >> (2 * n)) & 3) = 0)"
    seconds = 700 * 86400

    def flag(column: str, salt: int, share: int) -> str:
        return _nullable(column, f"{_pct('src', salt, seed)} < {share}", "j", salt + 100, seed)

    return f"""
        SELECT
            CASE WHEN {_pct("src", 34, seed)} < 85 THEN sha256('{seed}:' || src)
                 ELSE sha256('ib:{seed}:' || src) END AS id,
            TIMESTAMP '2024-01-01 00:00:00' + to_seconds(({_r("j", 35, seed)} % {seconds})::BIGINT) AS updated_at,
            {_nullable("age_range", _pick("age_range", "src", 40, seed), "j", 41, seed)} AS age_range,
            {_nullable("income_range", _pick("income_range", "src", 42, seed), "j", 43, seed)} AS {income_name},
            {_nullable("gender", _pick("gender", "src", 44, seed), "j", 45, seed)} AS gender,
            {flag("homeowner", 46, 64)} AS homeowner,
            {flag("children_present", 47, 38)} AS children_present,
            {_nullable("state", _pick("state", "src", 48, seed), "j", 49, seed)} AS state,
            {_nullable("interests", interests, "j", 50, seed)} AS interests,
            {_nullable("marital_status", _pick("marital_status", "src", 51, seed), "j", 52, seed)} AS marital_status,
            {_nullable("education", _pick("education", "src", 53, seed), "j", 54, seed)} AS education,
            {_nullable("occupation", _pick("occupation", "src", 55, seed), "j", 56, seed)} AS occupation,
            {_nullable("net_worth", _pick("net_worth", "src", 57, seed), "j", 58, seed)} AS net_worth,
            {_nullable("home_value", _pick("home_value", "src", 59, seed), "j", 60, seed)} AS home_value,
            {flag("vehicle_owner", 61, 82)} AS vehicle_owner,
            {flag("pet_owner", 62, 57)} AS pet_owner,
            {_nullable("length_of_residence", f"({_r('src', 63, seed)} % 40)::INTEGER", "j", 64, seed)}
                AS length_of_residence,
            {flag("credit_card_holder", 65, 71)} AS credit_card_holder,
            {_nullable("language", _pick("language", "src", 66, seed), "j", 67, seed)} AS language
        FROM ({base})
    """
