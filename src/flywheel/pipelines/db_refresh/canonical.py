"""The canonical text forms of db-refresh's columns, defined once for every step.

Step 1 writes the addressable match keys in these forms and says so in its manifest; step 5 needs
the same forms and takes a column as written when the manifest of the parts it reads says so (and
the parts are still those files), instead of trimming and lower-casing ten million values again.
A form is idempotent, so applying it to a column already in it changes nothing.
"""

from __future__ import annotations

from typing import Any

TRIMMED = "trimmed"
"""Surrounding spaces removed; blank is null."""
LOWER = "trimmed-lower"
"""TRIMMED, in lower case: hex hashes, MAIDs and ids."""
UPPER = "trimmed-upper"
"""TRIMMED, in upper case: codes such as gender and state."""
FORMS = (TRIMMED, LOWER, UPPER)


def canonical(F: Any, column: Any, form: str) -> Any:
    """`column` (a name or a column expression) in `form`, as a column expression of the engine's
    functions module `F`."""
    value = trimmed(F, (F.col(column) if isinstance(column, str) else column).cast("string"))
    if form == LOWER:
        value = F.lower(value)
    elif form == UPPER:
        value = F.upper(value)
    elif form != TRIMMED:
        raise ValueError(f"unknown canonical form {form!r}; forms: {', '.join(FORMS)}")
    return F.when(value != F.lit(""), value)


def trimmed(F: Any, value: Any) -> Any:
    """`value` without the spaces around it: trimmed only when it starts or ends with a space.

    DuckDB's `trim` copies every value it is given: on step 1's ten million rows, trimming seven
    columns cost more than reading them, while a first-and-last-character test costs a tenth of
    that. The test is for a space (' '), which is what Spark's `trim` removes, so both engines
    leave other characters alone unless a space comes first or last.
    """
    return F.when(value.startswith(" ") | value.endswith(" "), F.trim(value)).otherwise(value)
