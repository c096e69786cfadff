"""Text helpers shared by the command line and the load-test tools: timestamps and positive whole
numbers given on a command line, and rows printed as aligned columns."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime


def aware_timestamp(value: str) -> datetime:
    """An ISO 8601 timestamp with a time zone; naive ones are refused, never guessed as UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 timestamp: {value!r}") from None
    if moment.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"timestamp {value!r} has no time zone: add one, e.g. 2026-11-01T00:00:00Z"
        )
    return moment


def positive_int(value: str) -> int:
    """A whole number of 1 or more."""
    try:
        number = int(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from error
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return number


def table(rows: Sequence[Sequence[str]], right_aligned: set[int]) -> list[str]:
    """Rows padded into columns two spaces apart; columns in `right_aligned` align right."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if column in right_aligned else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines
