"""The settlement files of one reconciliation: read, checked, and named by their content.

The days reconciled run from the first file's day to the last one's (or from `first_day` to
`last_day` when given); a day in that range without a file is a missing day. Two files of one
day are refused, as is a range longer than DAY_COUNT_MAX days.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Final

from services.payout_rail.settlement_file import (
    FILE_BYTES_MAX,
    LINE_COUNT_MAX,
    SettlementFileError,
    SettlementLine,
    parse,
    settlement_day,
)

FILE_COUNT_MAX: Final = 400
DAY_COUNT_MAX: Final = 366
NAME_LENGTH_MAX: Final = 255


class ReconciliationInputError(ValueError):
    """The files (or days) cannot be reconciled as given; the message says which and why."""


@dataclass(frozen=True, slots=True)
class SettlementFile:
    name: str
    day: date
    sha256: bytes
    lines: tuple[SettlementLine, ...]


@dataclass(frozen=True, slots=True)
class SettlementSet:
    """The files of one reconciliation, in day order, and the days they are to cover."""

    files: tuple[SettlementFile, ...]
    first_day: date
    last_day: date

    @property
    def days(self) -> list[date]:
        count = (self.last_day - self.first_day).days + 1
        return [self.first_day + timedelta(days=offset) for offset in range(count)]

    @property
    def missing_days(self) -> list[date]:
        present = {settlement.day for settlement in self.files}
        return [day for day in self.days if day not in present]

    @property
    def lines(self) -> list[SettlementLine]:
        return [line for settlement in self.files for line in settlement.lines]

    @property
    def content_sha256(self) -> bytes:
        """What identifies the reconciliation: the days it covers and each file's day and
        content (not the files' names, nor the order they were given in)."""
        text = f"{self.first_day.isoformat()}..{self.last_day.isoformat()}\n" + "".join(
            f"{settlement.day.isoformat()} {settlement.sha256.hex()}\n" for settlement in self.files
        )
        return hashlib.sha256(text.encode()).digest()


def read_file(path: Path) -> SettlementFile:
    name = path.name[-NAME_LENGTH_MAX:]
    try:
        if path.stat().st_size > FILE_BYTES_MAX:
            raise ReconciliationInputError(f"{path}: larger than {FILE_BYTES_MAX} bytes")
        content = path.read_bytes()
    except OSError as error:
        raise ReconciliationInputError(f"{path}: {error.strerror or error}") from None
    try:
        lines = parse(content)
        day = settlement_day(path.name, lines)
    except SettlementFileError as error:
        raise ReconciliationInputError(f"{path}: {error}") from None
    return SettlementFile(name, day, hashlib.sha256(content).digest(), tuple(lines))


def settlement_set(
    files: Sequence[SettlementFile], first_day: date | None = None, last_day: date | None = None
) -> SettlementSet:
    if not files:
        raise ReconciliationInputError("no settlement file given")
    if len(files) > FILE_COUNT_MAX:
        raise ReconciliationInputError(f"more than {FILE_COUNT_MAX} files at once")
    if sum(len(settlement.lines) for settlement in files) > LINE_COUNT_MAX:
        raise ReconciliationInputError(f"more than {LINE_COUNT_MAX} lines at once")
    by_day: dict[date, SettlementFile] = {}
    for settlement in files:
        other = by_day.setdefault(settlement.day, settlement)
        if other is not settlement:
            raise ReconciliationInputError(
                f"{other.name} and {settlement.name} are both for {settlement.day}"
            )
    first = min(by_day) if first_day is None else first_day
    last = max(by_day) if last_day is None else last_day
    if not first <= min(by_day) or not max(by_day) <= last:
        raise ReconciliationInputError(
            f"the files cover {min(by_day)} to {max(by_day)}, outside {first} to {last}"
        )
    if (last - first).days >= DAY_COUNT_MAX:
        raise ReconciliationInputError(f"more than {DAY_COUNT_MAX} days at once")
    ordered = tuple(by_day[day] for day in sorted(by_day))
    return SettlementSet(ordered, first, last)


def read_settlement_set(
    paths: Sequence[Path], first_day: date | None = None, last_day: date | None = None
) -> SettlementSet:
    if len(paths) > FILE_COUNT_MAX:
        raise ReconciliationInputError(f"more than {FILE_COUNT_MAX} files at once")
    return settlement_set([read_file(path) for path in paths], first_day, last_day)
