"""The payout provider's settlement file: CSV, UTF-8, a header and one line a payout event.

    provider_reference,cashout_id,amount,currency,status,value_date,failure_code

`amount` is in the currency's minor unit; `status` is `paid`, `failed` or `returned`;
`value_date` is the UTC day (YYYY-MM-DD) the bank booked it; `failure_code` is empty on a `paid`
line. A returned payout has two lines, usually in two files: `paid`, then `returned`.

A file covers one UTC day, named by a `YYYY-MM-DD` in its name (`settlement-2026-11-03.csv`, as
the simulated bank writes them) or, for a name without one, by the value date its lines share.
Every line's value date is the file's day. Each line is one payout event with the bank's own
reference, so no two lines of a file share a `provider_reference`. Reading is strict: a file that
breaks a rule is refused whole, with the line that broke it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final, Literal, get_args

from schemas.events import FAILURE_CODE_LENGTH_MAX, ID_LENGTH_MAX

SettlementStatus = Literal["paid", "failed", "returned"]
STATUSES: Final[tuple[str, ...]] = get_args(SettlementStatus)
COLUMNS: Final = (
    "provider_reference",
    "cashout_id",
    "amount",
    "currency",
    "status",
    "value_date",
    "failure_code",
)
FILE_NAME_PREFIX: Final = "settlement-"
FILE_NAME_SUFFIX: Final = ".csv"
LINE_COUNT_MAX: Final = 1_000_000
FILE_BYTES_MAX: Final = 256 * 1024 * 1024
REFERENCE_LENGTH_MAX: Final = 128
AMOUNT_MINOR_MAX: Final = 10**15
_DAY_IN_NAME = re.compile(r"(?<![0-9])([0-9]{4}-[0-9]{2}-[0-9]{2})(?![0-9])")
_CURRENCY = re.compile(r"[A-Z]{3}")
_DIGITS = re.compile(r"[0-9]{1,16}")
_VISIBLE = re.compile(r"[!-~]+")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class SettlementFileError(ValueError):
    """The file is not a settlement file this format allows; the message says where."""


@dataclass(frozen=True, slots=True)
class SettlementLine:
    provider_reference: str
    cashout_id: str
    amount_minor: int
    currency: str
    status: SettlementStatus
    value_date: date
    failure_code: str | None

    def row(self) -> list[str]:
        return [
            self.provider_reference,
            self.cashout_id,
            str(self.amount_minor),
            self.currency,
            self.status,
            self.value_date.isoformat(),
            self.failure_code or "",
        ]


def file_name(day: date) -> str:
    return f"{FILE_NAME_PREFIX}{day.isoformat()}{FILE_NAME_SUFFIX}"


def day_in_name(name: str) -> date | None:
    """The last `YYYY-MM-DD` in a file name that is a real day, or None."""
    for found in reversed(_DAY_IN_NAME.findall(name)):
        try:
            return date.fromisoformat(found)
        except ValueError:
            continue
    return None


def render(lines: Iterable[SettlementLine], *, header: bool = True) -> str:
    """The file's text: the header (unless `header` is False), then a row per line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(COLUMNS)
    for line in lines:
        writer.writerow(line.row())
    return buffer.getvalue()


def parse(content: bytes, *, allow_repeated_references: bool = False) -> list[SettlementLine]:
    """The lines of a settlement file's bytes; `SettlementFileError` names the first problem.
    `allow_repeated_references` reads a line whose `provider_reference` an earlier line has (the
    simulated bank's journal, which may hold a report sent twice); a settlement file is refused."""
    if len(content) > FILE_BYTES_MAX:
        raise SettlementFileError(f"larger than {FILE_BYTES_MAX} bytes")
    try:
        decoded = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SettlementFileError(f"not UTF-8 (byte {error.start})") from None
    if "\x00" in decoded:
        raise SettlementFileError("holds a NUL character")
    reader = csv.reader(io.StringIO(decoded, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise SettlementFileError("empty: not even a header")
        if tuple(header) != COLUMNS:
            raise SettlementFileError(f"line 1: the header must be {','.join(COLUMNS)}")
        lines = []
        line_numbers_by_reference: dict[str, int] = {}
        for values in reader:
            if reader.line_num - 1 > LINE_COUNT_MAX:
                raise SettlementFileError(f"more than {LINE_COUNT_MAX} lines")
            if not values:
                continue  # a blank line
            line = _line(values, reader.line_num)
            if not allow_repeated_references:
                first_line_number = line_numbers_by_reference.setdefault(
                    line.provider_reference, reader.line_num
                )
                if first_line_number != reader.line_num:
                    raise SettlementFileError(
                        f"line {reader.line_num}: provider_reference {line.provider_reference!r}"
                        f" is on line {first_line_number} already"
                    )
            lines.append(line)
    except csv.Error as error:
        raise SettlementFileError(f"line {reader.line_num}: not CSV ({error})") from None
    return lines


def _line(values: Sequence[str], line_number: int) -> SettlementLine:
    def refuse(what: str) -> SettlementFileError:
        return SettlementFileError(f"line {line_number}: {what}")

    if len(values) != len(COLUMNS):
        raise refuse(f"{len(values)} fields, not {len(COLUMNS)}")
    reference, cashout_id, amount, currency, status, value_date, failure_code = values
    if not 1 <= len(reference) <= REFERENCE_LENGTH_MAX or not _VISIBLE.fullmatch(reference):
        raise refuse(f"provider_reference must be 1-{REFERENCE_LENGTH_MAX} visible characters")
    if not 1 <= len(cashout_id) <= ID_LENGTH_MAX:
        raise refuse(f"cashout_id must be 1-{ID_LENGTH_MAX} characters")
    if not _DIGITS.fullmatch(amount) or not 1 <= int(amount) <= AMOUNT_MINOR_MAX:
        raise refuse(f"amount must be a whole number of minor units, 1 to {AMOUNT_MINOR_MAX}")
    if not _CURRENCY.fullmatch(currency):
        raise refuse("currency must be three capital letters (ISO 4217)")
    if status not in STATUSES:
        raise refuse(f"status must be one of {', '.join(STATUSES)}")
    day = _day(value_date)
    if day is None:
        raise refuse("value_date must be a day, YYYY-MM-DD")
    if failure_code and (
        len(failure_code) > FAILURE_CODE_LENGTH_MAX or not _VISIBLE.fullmatch(failure_code)
    ):
        raise refuse(f"failure_code must be 1-{FAILURE_CODE_LENGTH_MAX} visible characters")
    if status == "paid" and failure_code:
        raise refuse("a paid line has no failure_code")
    return SettlementLine(
        provider_reference=reference,
        cashout_id=cashout_id,
        amount_minor=int(amount),
        currency=currency,
        status=status,  # type: ignore[arg-type]
        value_date=day,
        failure_code=failure_code or None,
    )


def _day(value: str) -> date | None:
    if not _DAY.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def settlement_day(name: str, lines: Sequence[SettlementLine]) -> date:
    """The UTC day a file covers: the day in its name, else the value date all its lines share.
    Every line's value date must be that day."""
    day = day_in_name(name)
    if day is None:
        days = {line.value_date for line in lines}
        if len(days) != 1:
            raise SettlementFileError(
                "the name holds no day (YYYY-MM-DD) and the lines do not share one value date"
            )
        day = days.pop()
    for line in lines:
        if line.value_date != day:
            raise SettlementFileError(
                f"value date {line.value_date} of cash-out {line.cashout_id!r} is not the "
                f"file's day {day}"
            )
    return day
