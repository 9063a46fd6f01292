"""Percentiles, the rows of the results table, and how the table prints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linearly interpolated."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    p50: float
    p95: float | None = None
    p99: float | None = None
    n: int = 1
    p999: float | None = None

    @classmethod
    def of(cls, values: Sequence[float], scale: float = 1.0) -> Summary:
        scaled = [v * scale for v in values]
        return cls(
            percentile(scaled, 50),
            percentile(scaled, 95),
            percentile(scaled, 99),
            len(scaled),
            percentile(scaled, 99.9),
        )

    @classmethod
    def single(cls, value: float) -> Summary:
        return cls(value)


@dataclass(frozen=True)
class Target:
    """``value <= limit`` (lower is better) or ``value >= limit`` (higher is better).

    The value is the ratio to the baseline, or with ``absolute`` jobsup's own figure.
    """

    op: str
    limit: float
    absolute: bool = False

    def met(self, value: float) -> bool:
        return value <= self.limit if self.op == "<=" else value >= self.limit

    def __str__(self) -> str:
        return f"{self.op} {self.limit:g}" + ("" if self.absolute else "x")


@dataclass
class Row:
    figure: str
    unit: str
    jobsup: Summary | None
    baseline_name: str
    baseline: Summary | None = None
    target: Target | None = None
    note: str = ""
    metric: str = "p50"  # which percentile the ratio compares
    passed: bool | None = None  # a yes/no figure (ordering), instead of a target
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.target is not None and self.target.absolute:
            return None
        ours = getattr(self.jobsup, self.metric, None)
        theirs = getattr(self.baseline, self.metric, None)
        if ours is None or not theirs:
            return None
        return float(ours / theirs)

    @property
    def verdict(self) -> str:
        if self.passed is not None:
            return "PASS" if self.passed else "FAIL"
        if self.target is None:
            return "info"
        value = getattr(self.jobsup, self.metric, None) if self.target.absolute else self.ratio
        if value is None or math.isnan(value):
            return "n/a"
        return "PASS" if self.target.met(value) else "FAIL"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ratio=self.ratio, verdict=self.verdict, target=str(self.target or ""))
        return data


HEADERS = (
    "figure",
    "unit",
    "p50",
    "p95",
    "p99",
    "p99.9",
    "baseline",
    "base",
    "ratio",
    "target",
    "",
)


def _num(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _cells(row: Row) -> tuple[str, ...]:
    j, b = row.jobsup, row.baseline
    ratio = row.ratio
    return (
        row.figure,
        row.unit,
        _num(j.p50 if j else None),
        _num(j.p95 if j else None),
        _num(j.p99 if j else None),
        _num(j.p999 if j else None),
        row.baseline_name + (f" ({_short(row.note)})" if row.note else ""),
        _num(getattr(b, row.metric) if b else None),
        "-" if ratio is None else f"{ratio:.2f}x",
        _target(row),
        row.verdict,
    )


def _short(text: str, width: int = 50) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _target(row: Row) -> str:
    if row.target is None:
        return "-"
    return f"{row.metric} {row.target}" if row.metric != "p50" else str(row.target)


def format_table(rows: Sequence[Row]) -> str:
    lines = [HEADERS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADERS))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
