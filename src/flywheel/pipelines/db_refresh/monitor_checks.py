"""The data monitor's numbers and verdicts, apart from the engine that measures them.

Metrics are plain dataclasses, written to the report's history as JSON and read back from it as the
baseline of a later run; `evaluate` grades each of them on its level and on its change since that
baseline, by the thresholds in `MonitorSettings`. Step 6 (`jobs/data_monitor_report.py`) measures the
tables, calls `evaluate` and writes the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        return {"ok": 0, "warn": 1, "fail": 2}[self.value]


def worst(statuses: Sequence[Status]) -> Status:
    return max(statuses, key=lambda s: s.rank, default=Status.OK)


# Levels: a rate above `*_warn` warns, above `*_fail` fails (for match_rate: below). Changes are
# relative for counts (0.10 = 10 % more or fewer rows than the baseline) and absolute for rates
# (0.05 = five percentage points).
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "rows_change_warn": 0.10,
    "rows_change_fail": 0.50,
    "duplicate_rate_warn": 0.01,
    "duplicate_rate_fail": 0.10,
    "null_rate_warn": 0.60,
    "null_rate_fail": 0.99,
    "null_rate_change_warn": 0.05,
    "null_rate_change_fail": 0.25,
    "part_skew_warn": 1.5,
    "part_skew_fail": 3.0,
    "match_rate_warn": 0.75,
    "match_rate_fail": 0.50,
    "match_rate_change_warn": 0.05,
    "match_rate_change_fail": 0.20,
}
LOWER_IS_WORSE = ("match_rate",)
"""Metrics that breach below their levels; the others breach above."""


@dataclass(frozen=True)
class MonitorSettings:
    thresholds: Mapping[str, float]
    fail_on_breach: bool = True
    n_parts: int = 16

    def pair(self, name: str) -> tuple[float, float]:
        return self.thresholds[f"{name}_warn"], self.thresholds[f"{name}_fail"]


# ---------------------------------------------------------------------------------------------
# metrics: plain numbers, stored as JSON in history and read back as baselines


@dataclass(frozen=True)
class PartMetrics:
    rows: int
    distinct_ids: int
    missing: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TableMetrics:
    """Counts of one table. `key` is the column that must be unique (`id`, or `record_id` for ER)."""

    table: str
    key: str
    rows: int
    distinct_ids: int
    distinct_keys: int
    parts: Mapping[int, PartMetrics]
    missing: Mapping[str, int]

    @property
    def duplicate_keys(self) -> int:
        """Rows whose key repeats an earlier row's: rows minus distinct keys."""
        return self.rows - self.distinct_keys

    @property
    def duplicate_rate(self) -> float:
        return self.duplicate_keys / self.rows if self.rows else 0.0

    @property
    def ids_in_several_parts(self) -> int:
        """Zero when every id lives in exactly one part (part distinct counts add up)."""
        return sum(p.distinct_ids for p in self.parts.values()) - self.distinct_ids

    def null_rate(self, column: str) -> float:
        return self.missing.get(column, 0) / self.rows if self.rows else 0.0

    def part_skew(self, n_parts: int) -> float:
        """Largest part over the mean part size, counting the expected parts that are missing."""
        if not self.rows:
            return 0.0
        mean = self.rows / max(n_parts, len(self.parts))
        return max(p.rows for p in self.parts.values()) / mean

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "rows": self.rows,
            "distinct_ids": self.distinct_ids,
            "distinct_keys": self.distinct_keys,
            "missing": dict(self.missing),
            "parts": {
                str(n): {"rows": p.rows, "distinct_ids": p.distinct_ids, "missing": dict(p.missing)}
                for n, p in sorted(self.parts.items())
            },
        }

    @classmethod
    def from_json(cls, table: str, body: Mapping[str, Any]) -> TableMetrics:
        return cls(
            table=table,
            key=str(body["key"]),
            rows=int(body["rows"]),
            distinct_ids=int(body["distinct_ids"]),
            distinct_keys=int(body["distinct_keys"]),
            missing={str(k): int(v) for k, v in body.get("missing", {}).items()},
            parts={
                int(n): PartMetrics(
                    rows=int(p["rows"]),
                    distinct_ids=int(p["distinct_ids"]),
                    missing={str(k): int(v) for k, v in p.get("missing", {}).items()},
                )
                for n, p in body.get("parts", {}).items()
            },
        )


@dataclass(frozen=True)
class MatchMetrics:
    """How many distinct addressable ids have an infobase row (joined by id within the part)."""

    addressable_ids: int
    matched_ids: int

    @property
    def rate(self) -> float:
        return self.matched_ids / self.addressable_ids if self.addressable_ids else 0.0


@dataclass(frozen=True)
class Snapshot:
    tables: Mapping[str, TableMetrics]
    match: MatchMetrics

    def to_json(self) -> dict[str, Any]:
        return {
            "tables": {name: t.to_json() for name, t in self.tables.items()},
            "match": {"addressable_ids": self.match.addressable_ids, "matched_ids": self.match.matched_ids},
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Snapshot:
        match = body["match"]
        return cls(
            tables={name: TableMetrics.from_json(name, t) for name, t in body["tables"].items()},
            match=MatchMetrics(int(match["addressable_ids"]), int(match["matched_ids"])),
        )


# ---------------------------------------------------------------------------------------------
# checks


@dataclass(frozen=True)
class Check:
    """One graded metric: where, what, its value, the baseline's value and why it has its status."""

    table: str
    part: int | None
    metric: str
    value: float
    previous: float | None
    status: Status
    reason: str

    @property
    def change(self) -> float | None:
        return None if self.previous is None else self.value - self.previous

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "part": self.part,
            "metric": self.metric,
            "value": self.value,
            "previous": self.previous,
            "change": self.change,
            "status": self.status.value,
            "reason": self.reason,
        }


def grade(value: float, warn: float, fail: float, *, lower_is_worse: bool = False) -> Status:
    if lower_is_worse:
        return Status.FAIL if value < fail else Status.WARN if value < warn else Status.OK
    return Status.FAIL if value > fail else Status.WARN if value > warn else Status.OK


def relative_change(value: float, previous: float) -> float:
    """|value - previous| / previous; growth from zero is infinite (always a breach)."""
    if previous == 0:
        return 0.0 if value == 0 else math.inf
    return abs(value - previous) / previous


def format_value(value: float) -> str:
    """A metric as people read it: whole counts with thousands separators, rates to four digits."""
    if math.isinf(value):
        return "inf"
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.4g}"


class _Grader:
    """Collects checks; keeps the threshold arithmetic and the reason texts in one place."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.checks: list[Check] = []

    def add(
        self, table: str, metric: str, value: float, status: Status, reason: str, *, previous: float | None
    ) -> None:
        self.checks.append(Check(table, None, metric, value, previous, status, reason))

    def invariant(self, table: str, metric: str, value: float, message: str) -> None:
        status = Status.FAIL if value else Status.OK
        self.add(table, metric, value, status, message if value else "ok", previous=None)

    def level(self, table: str, metric: str, name: str, value: float, previous: float | None = None) -> None:
        warn, fail = self.settings.pair(name)
        lower = name in LOWER_IS_WORSE
        status = grade(value, warn, fail, lower_is_worse=lower)
        word = "below" if lower else "above"
        limit = fail if status is Status.FAIL else warn
        reason = (
            "ok" if status is Status.OK else f"{format_value(value)} is {word} the {status} level {format_value(limit)}"
        )
        self.add(table, metric, value, status, reason, previous=previous)

    def drift(
        self, table: str, metric: str, name: str, value: float, previous: float | None, *, relative: bool
    ) -> None:
        if previous is None:
            return
        change = relative_change(value, previous) if relative else abs(value - previous)
        warn, fail = self.settings.pair(name)
        status = grade(change, warn, fail)
        unit = "relative change" if relative else "change"
        limit = fail if status is Status.FAIL else warn
        reason = (
            "ok"
            if status is Status.OK
            else f"{unit} {format_value(change)} since baseline ({format_value(previous)} -> {format_value(value)}) "
            f"is above the {status} level {format_value(limit)}"
        )
        self.add(table, f"{metric}_change", change, status, reason, previous=None)


def evaluate(current: Snapshot, baseline: Snapshot | None, settings: MonitorSettings) -> list[Check]:
    """Grade every metric of `current`, on its level and against `baseline` when there is one."""
    g = _Grader(settings)
    n_parts = settings.n_parts
    for name, t in current.tables.items():
        before = baseline.tables.get(name) if baseline else None
        g.invariant(name, "empty_table", float(t.rows == 0), "the table has no rows")
        g.add(name, "rows", t.rows, Status.OK, "ok", previous=before.rows if before else None)
        g.drift(name, "rows", "rows_change", t.rows, before.rows if before else None, relative=True)
        g.add(
            name,
            "distinct_ids",
            t.distinct_ids,
            Status.OK,
            "ok",
            previous=before.distinct_ids if before else None,
        )
        g.drift(
            name,
            "distinct_ids",
            "rows_change",
            t.distinct_ids,
            before.distinct_ids if before else None,
            relative=True,
        )
        if t.key == "id":
            g.level(
                name, "duplicate_rate", "duplicate_rate", t.duplicate_rate, before.duplicate_rate if before else None
            )
        else:
            g.invariant(name, f"duplicate_{t.key}", t.duplicate_keys, f"{t.duplicate_keys} rows repeat a {t.key}")
        g.invariant(
            name,
            "ids_in_several_parts",
            t.ids_in_several_parts,
            f"{t.ids_in_several_parts} ids appear in more than one part: the part bucketing is broken",
        )
        outside = sorted(p for p in t.parts if not 0 <= p < n_parts)
        g.invariant(name, "parts_out_of_range", len(outside), f"parts {outside} are outside 0..{n_parts - 1}")
        missing_parts = n_parts - len([p for p in t.parts if 0 <= p < n_parts])
        g.add(
            name,
            "missing_parts",
            missing_parts,
            Status.WARN if missing_parts and t.rows else Status.OK,
            f"{missing_parts} of {n_parts} parts have no rows" if missing_parts and t.rows else "ok",
            previous=None,
        )
        before_skew = before.part_skew(n_parts) if before else None
        g.level(name, "part_skew", "part_skew", t.part_skew(n_parts), before_skew)
        for column in sorted(t.missing):
            rate = t.null_rate(column)
            prev_rate = before.null_rate(column) if before and column in before.missing else None
            if column in ("id", t.key):
                g.invariant(name, f"null_rate:{column}", rate, f"{t.missing[column]} rows have no {column}")
                continue
            g.level(name, f"null_rate:{column}", "null_rate", rate, prev_rate)
            g.drift(name, f"null_rate:{column}", "null_rate_change", rate, prev_rate, relative=False)
    before_match = baseline.match.rate if baseline else None
    g.level("*", "match_rate", "match_rate", current.match.rate, before_match)
    g.drift("*", "match_rate", "match_rate_change", current.match.rate, before_match, relative=False)
    return g.checks
