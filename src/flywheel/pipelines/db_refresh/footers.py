"""What a partitioned table's Parquet footers say about it, so that step 6 counts without reading values.

A Parquet writer records, for every row group and column, the row group's rows, the column's nulls and
its smallest value. Null counts are exact. A value is blank (step 6's "missing": empty, or only
spaces) only if it is empty or starts with a space, and both sort below any value whose first
character comes after the space; so a text column whose smallest value starts with such a character
holds no blank value in that row group. From the footers alone, then, come each part's rows and the
missing values of every column but:
- lists (an empty list is missing, but it is not a null);
- text whose smallest value could be blank, or that has no smallest value in a footer;
- any column a footer gives no null count for.
Those are still counted from the data. Reading the footers of the 10M-row ER table takes ~0.1 s;
counting the missing values of its 28 columns from the data took 5.9 s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flywheel.pipelines.db_refresh import engine


@dataclass(frozen=True)
class PartFooters:
    """One part's rows, and the missing values of the columns its footers settle."""

    rows: int
    missing: Mapping[str, int]


def read_part_footers(
    session: engine.Session, root: str, partition_col: str, values: Sequence[int], text_columns: Sequence[str]
) -> dict[int, PartFooters] | None:
    """The footers' account of each listed partition that has rows; None when the engine cannot read
    footers. `text_columns`: the string columns, whose smallest value must rule out blanks."""
    found = engine.parquet_footers(session, root, partition_col, values)
    return None if found is None else settle(found, frozenset(text_columns))


def settle(footers: Sequence[engine.FooterRow], text_columns: frozenset[str]) -> dict[int, PartFooters]:
    """Each part's rows, and the missing values of every column that no row group leaves in doubt."""
    group_rows: dict[tuple[int, str, int], int] = {}
    nulls: dict[tuple[int, str], int] = {}
    in_doubt: set[tuple[int, str]] = set()
    for part, file, group, rows, column, null_count, smallest in footers:
        group_rows[(part, file, group)] = rows
        key = (part, column)
        if "," in column or null_count is None:  # a list's elements, or no null count
            in_doubt.add(key)
            continue
        all_null = null_count == rows
        if column in text_columns and not all_null and (smallest is None or smallest[:1] <= " "):
            in_doubt.add(key)
        nulls[key] = nulls.get(key, 0) + null_count
    rows_of: dict[int, int] = {}
    for (part, _, _), rows in group_rows.items():
        rows_of[part] = rows_of.get(part, 0) + rows
    return {
        part: PartFooters(rows, {c: n for (p, c), n in nulls.items() if p == part and (p, c) not in in_doubt})
        for part, rows in sorted(rows_of.items())
        if rows
    }
