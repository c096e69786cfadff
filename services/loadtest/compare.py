"""`giftledger loadtest compare A.json B.json [--threshold-pct 10]`: two load tests side by side.

Reads two `loadtest.json` reports (`services.loadtest.report`) and prints, for each measure, A,
B and the change from A to B in percent. B is worse than A when a gated measure moved the wrong
way by more than the threshold: throughput (`events_per_s`) down, or the latency percentiles
p50, p95, p99 or the lag (`lag_max`) up. A measure that is zero in A has no percentage and is not
gated. A report without latency samples (`latency_ms` empty: no sampled event was applied during
its run) has no percentiles: its latency is shown as n/a and said to be missing, and the rest is
compared. Exit codes, for a nightly job: 0 B is not worse, 1 B is worse, 2 a report is unreadable
(not JSON, or a measure missing or not a number, but the latency percentiles of a report without
samples).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from services.cli_text import table

THRESHOLD_PCT_DEFAULT = 10.0
THRESHOLD_PCT_MAX = 1_000.0
EXIT_NOT_WORSE = 0
EXIT_WORSE = 1
EXIT_UNREADABLE = 2
LATENCY_KEY = "latency_ms"


@dataclass(frozen=True, slots=True)
class Measure:
    name: str  # as printed
    path: tuple[str, ...]  # where it is in loadtest.json
    higher_is_better: bool
    gated: bool

    @property
    def latency(self) -> bool:
        """A latency percentile: absent from a report without latency samples."""
        return self.path[0] == LATENCY_KEY


MEASURES: tuple[Measure, ...] = (
    Measure("events/s", ("events_per_s",), higher_is_better=True, gated=True),
    Measure("peak events/s", ("peak_events_per_s",), higher_is_better=True, gated=False),
    Measure("publish/s", ("publish_per_s",), higher_is_better=True, gated=False),
    Measure("latency p50 ms", ("latency_ms", "p50"), higher_is_better=False, gated=True),
    Measure("latency p90 ms", ("latency_ms", "p90"), higher_is_better=False, gated=False),
    Measure("latency p95 ms", ("latency_ms", "p95"), higher_is_better=False, gated=True),
    Measure("latency p99 ms", ("latency_ms", "p99"), higher_is_better=False, gated=True),
    Measure("latency max ms", ("latency_ms", "max"), higher_is_better=False, gated=False),
    Measure("lag max records", ("lag_max",), higher_is_better=False, gated=True),
)


class UnreadableReportError(ValueError):
    """A report file is missing, not JSON, or lacks a measure."""


@dataclass(frozen=True, slots=True)
class Row:
    measure: Measure
    before: float | None  # None: not in the report (latency without samples)
    after: float | None
    change_pct: float | None  # None when `before` is zero, or either is missing
    worse: bool


def load_report(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnreadableReportError(f"{path}: {error}") from error
    if not isinstance(document, dict):
        raise UnreadableReportError(f"{path}: not a JSON object")
    return document


def _value(document: dict[str, Any], measure: Measure, path: Path) -> float | None:
    """The measure's value; None for a latency percentile of a report without latency samples
    (an empty `latency_ms`)."""
    if measure.latency and document.get(LATENCY_KEY) == {}:
        return None
    value: Any = document
    for step in measure.path:
        if not isinstance(value, dict) or step not in value:
            raise UnreadableReportError(f"{path}: no {'.'.join(measure.path)}")
        value = value[step]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnreadableReportError(f"{path}: {'.'.join(measure.path)} is not a number")
    return float(value)


def compare_reports(
    before: dict[str, Any],
    after: dict[str, Any],
    threshold_pct: float,
    paths: tuple[Path, Path] = (Path("A"), Path("B")),
) -> list[Row]:
    """One row per measure, with whether B is worse than A beyond `threshold_pct`."""
    rows = []
    for measure in MEASURES:
        a = _value(before, measure, paths[0])
        b = _value(after, measure, paths[1])
        change_pct = None if a is None or b is None or a == 0 else (b - a) / abs(a) * 100.0
        worse = False
        if measure.gated and change_pct is not None:
            loss_pct = -change_pct if measure.higher_is_better else change_pct
            worse = loss_pct > threshold_pct
        rows.append(Row(measure, a, b, change_pct, worse))
    return rows


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}"


def render(rows: list[Row], paths: tuple[Path, Path], threshold_pct: float) -> str:
    lines = [f"A {paths[0]}", f"B {paths[1]}"]
    cells = [["measure", "A", "B", "change", ""]]
    for row in rows:
        change = "n/a" if row.change_pct is None else f"{row.change_pct:+.1f} %"
        verdict = "WORSE" if row.worse else ("" if row.measure.gated else "(not gated)")
        cells.append([row.measure.name, _cell(row.before), _cell(row.after), change, verdict])
    lines += table(cells, right_aligned={1, 2, 3})
    for label, path, side in (("A", paths[0], 0), ("B", paths[1], 1)):
        if any(row.measure.latency and (row.before, row.after)[side] is None for row in rows):
            lines.append(f"latency is not available for {label} ({path}): no latency samples")
    worse = [row.measure.name for row in rows if row.worse]
    if worse:
        lines.append(f"B is worse than A beyond {threshold_pct:g} %: {', '.join(worse)}")
    else:
        lines.append(f"B is not worse than A beyond {threshold_pct:g} %")
    return "\n".join(lines) + "\n"


def compare_files(
    before_path: Path, after_path: Path, threshold_pct: float, out: TextIO | None = None
) -> int:
    """Print the comparison; the exit code (0 not worse, 1 worse, 2 unreadable)."""
    paths = (before_path, after_path)
    try:
        rows = compare_reports(
            load_report(before_path), load_report(after_path), threshold_pct, paths
        )
    except UnreadableReportError as error:
        sys.stderr.write(f"giftledger: error: {error}\n")
        return EXIT_UNREADABLE
    (out or sys.stdout).write(render(rows, paths, threshold_pct))
    return EXIT_WORSE if any(row.worse for row in rows) else EXIT_NOT_WORSE


def threshold_pct(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 <= number <= THRESHOLD_PCT_MAX:
        raise argparse.ArgumentTypeError(f"must be between 0 and {THRESHOLD_PCT_MAX:g}")
    return number
