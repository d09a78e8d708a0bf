"""Percentiles, targets, and the printed figures.

A measurement returns `Metric`s; each is printed as soon as it is known (a long run
shows progress) and again in one table at the end, one column per dialect, so the two
upstreams read side by side. A metric with a target says PASS or MISS next to its
value; nothing here ever turns a MISS into a failing exit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct`-th percentile with linear interpolation between ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclasses.dataclass(frozen=True)
class Target:
    """What a figure should be: at most (`<=`) or at least (`>=`) `bound`."""

    op: str
    bound: float

    def met(self, value: float) -> bool:
        """Whether `value` meets the target (a missing value never does)."""
        if math.isnan(value):
            return False
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def describe(self, unit: str) -> str:
        """E.g. `≤ 15 ms`."""
        sign = "≤" if self.op == "<=" else "≥"
        return f"{sign} {self.bound:g}{' ' + unit if unit else ''}"


@dataclasses.dataclass(frozen=True)
class Metric:
    """One measured figure; `key` matches the same figure across dialects."""

    key: str
    label: str
    value: float
    unit: str = ""
    target: Target | None = None
    digits: int = 1

    def shown(self) -> str:
        """The value with its unit and, if it has a target, PASS or MISS."""
        if math.isnan(self.value):
            text = "n/a"
        else:
            text = f"{self.value:.{self.digits}f}{' ' + self.unit if self.unit else ''}"
        if self.target is not None:
            text += " PASS" if self.target.met(self.value) else " MISS"
        return text

    def target_text(self) -> str:
        """The target, or an empty string."""
        return self.target.describe(self.unit) if self.target else ""


def announce(dialect: str, metrics: Sequence[Metric]) -> None:
    """Print metrics the moment a measurement produced them."""
    for metric in metrics:
        target = f"  (target {metric.target_text()})" if metric.target else ""
        print(f"[{dialect}] {metric.label:<38} {metric.shown()}{target}", flush=True)


def table(results: Mapping[str, Sequence[Metric]], failures: Mapping[str, str] | None = None) -> str:
    """One row per figure, one column per dialect, targets alongside; failures noted below."""
    dialects = list(results)
    rows: dict[str, tuple[str, str]] = {}
    for metrics in results.values():
        for metric in metrics:
            rows.setdefault(metric.key, (metric.label, metric.target_text()))
    cells = {d: {m.key: m.shown() for m in results[d]} for d in dialects}
    header = ["figure", "target", *dialects]
    lines = [
        [label, target, *(cells[d].get(key, "—") for d in dialects)] for key, (label, target) in rows.items()
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def render(row: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()

    out = [render(header), render(["-" * w for w in widths]), *(render(row) for row in lines)]
    for dialect, reason in (failures or {}).items():
        out.append(f"{dialect}: not measured — {reason}")
    return "\n".join(out)
