"""The simulated bank's books and its daily settlement files (their format:
services/payout_rail/settlement_file.py).

The books. Each report the rail sends on `payouts.updated` is also appended to the bank's journal,
one file per value date: `<directory>/journal/YYYY-MM-DD.csv`, in the settlement file's format.
Reports are sent at least once, so the journal may hold a line twice; a settlement file holds it
once. The value date is the UTC day of the report's `occurred_at` (the request's time plus the
report's delay, as the bank says it happened).

The files. `<directory>/settlement-YYYY-MM-DD.csv` holds the journal's lines of that day, once
each, ordered by cash-out and status, with the configured breaks. While `giftledger run
--payout-rail` runs, each day's file is written `DELIVERY_DELAY` after the day ends (later
reports are a bank's late items: they are in the journal and in no file); `giftledger
settlement-file --date D OUT` writes one day's file on demand, from the same journal.

Breaks (`PAYOUT_RAIL_SETTLEMENT_BREAKS`), each at most once in a day's file, all a pure function
of the day, the journal and the seed:
- `unknown_payout`: a paid line for a payout the ledger never sent (`bank-only-<day>`);
- `amount_off`: the first paid line says one minor unit more than was paid;
- `paid_but_failed`: the first failed payout is written as paid (the ledger has it failed);
- `missing_day`: one day in MISSING_DAY_EVERY_DAYS has no file at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

from schemas.events import PayoutRequested, PayoutUpdated
from services.payout_rail.settlement_file import (
    STATUSES,
    SettlementLine,
    day_in_name,
    file_name,
    parse,
    render,
)
from services.runtime.settings import SettlementBreak

__all__ = ["SettlementBreak"]  # where the rail and the tests name the breaks

logger = logging.getLogger(__name__)

JOURNAL_DIRECTORY: Final = "journal"
MISSING_DAY_EVERY_DAYS: Final = 7
UNKNOWN_PAYOUT_PREFIX: Final = "bank-only-"
UNKNOWN_PAYOUT_AMOUNT_MINOR: Final = 1_234
UNKNOWN_PAYOUT_CURRENCY: Final = "USD"
REFERENCE_PREFIX: Final = "sim-"
REFERENCE_HEX_DIGITS: Final = 24
# A day's file is written this long after the day ends: a report comes at most 10 minutes
# (paid) plus an hour (returned) after its request, so a request of the day's last moment is
# reported by then when the rail keeps up.
DELIVERY_DELAY: Final = timedelta(hours=2)
# Days before today whose missing file the running rail still writes.
DELIVERY_DAYS_BACK_MAX: Final = 62


def provider_reference(seed: int, cashout_id: str, status: str) -> str:
    """The bank's own reference of one payout event: the same in every run under a seed."""
    digest = hashlib.sha256(f"{seed}:{cashout_id}:{status}".encode()).hexdigest()
    return REFERENCE_PREFIX + digest[:REFERENCE_HEX_DIGITS]


def journal_line(seed: int, request: PayoutRequested, report: PayoutUpdated) -> SettlementLine:
    """The bank's line for a report it sent about a payout it was asked to make."""
    return SettlementLine(
        provider_reference=provider_reference(seed, request.cashout_id, report.status),
        cashout_id=request.cashout_id,
        amount_minor=request.amount,
        currency=request.currency,
        status=report.status,
        value_date=report.occurred_at.astimezone(UTC).date(),
        failure_code=report.failure_code,
    )


def is_missing_day(day: date, seed: int) -> bool:
    """Whether the bank skips `day`'s file under the `missing_day` break."""
    return (day.toordinal() + seed) % MISSING_DAY_EVERY_DAYS == 0


def _order(line: SettlementLine) -> tuple[str, int]:
    return (line.cashout_id, STATUSES.index(line.status))


def day_file_lines(
    day: date, journal: Iterable[SettlementLine], seed: int, breaks: frozenset[SettlementBreak]
) -> list[SettlementLine] | None:
    """The lines of `day`'s settlement file, breaks included; None when the day has no file."""
    if SettlementBreak.MISSING_DAY in breaks and is_missing_day(day, seed):
        return None
    unique: dict[tuple[str, str], SettlementLine] = {}
    for line in journal:
        if line.value_date == day:
            unique.setdefault((line.cashout_id, line.status), line)
    lines = sorted(unique.values(), key=_order)
    if SettlementBreak.AMOUNT_OFF in breaks:
        _change_first(lines, "paid", _one_minor_unit_more)
    if SettlementBreak.PAID_BUT_FAILED in breaks:
        _change_first(lines, "failed", _written_as_paid)
    if SettlementBreak.UNKNOWN_PAYOUT in breaks:
        cashout_id = f"{UNKNOWN_PAYOUT_PREFIX}{day.isoformat()}"
        lines.append(
            SettlementLine(
                provider_reference=provider_reference(seed, cashout_id, "paid"),
                cashout_id=cashout_id,
                amount_minor=UNKNOWN_PAYOUT_AMOUNT_MINOR,
                currency=UNKNOWN_PAYOUT_CURRENCY,
                status="paid",
                value_date=day,
                failure_code=None,
            )
        )
    return lines


def _one_minor_unit_more(line: SettlementLine) -> SettlementLine:
    return dataclasses.replace(line, amount_minor=line.amount_minor + 1)


def _written_as_paid(line: SettlementLine) -> SettlementLine:
    return dataclasses.replace(line, status="paid", failure_code=None)


def _change_first(
    lines: list[SettlementLine],
    status: str,
    change: Callable[[SettlementLine], SettlementLine],
) -> None:
    for index, line in enumerate(lines):
        if line.status == status:
            lines[index] = change(line)
            return


def _write_atomically(path: Path, content: str) -> None:
    """Write `content` to a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(content, encoding="utf-8")
    os.replace(temporary, path)


class SettlementBooks:
    """The bank's journal and daily files under one directory (one running rail per directory)."""

    def __init__(
        self,
        directory: Path,
        *,
        seed: int = 0,
        breaks: Iterable[SettlementBreak] = (),
        started_on: date | None = None,
    ) -> None:
        self.directory = directory
        self.seed = seed
        self.breaks = frozenset(breaks)
        self.started_on = started_on or datetime.now(UTC).date()

    def journal_path(self, day: date) -> Path:
        return self.directory / JOURNAL_DIRECTORY / f"{day.isoformat()}.csv"

    def file_path(self, day: date) -> Path:
        return self.directory / file_name(day)

    def record(self, request: PayoutRequested, report: PayoutUpdated) -> None:
        """Append the line of a report the bank sent to the journal of its value date."""
        line = journal_line(self.seed, request, report)
        path = self.journal_path(line.value_date)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8", newline="") as journal:
            journal.write(render([line], header=journal.tell() == 0))

    def journal(self, day: date) -> list[SettlementLine]:
        path = self.journal_path(day)
        if not path.exists():
            return []
        return parse(path.read_bytes(), allow_repeated_references=True)  # reports sent twice

    def journal_days(self) -> list[date]:
        directory = self.directory / JOURNAL_DIRECTORY
        if not directory.is_dir():
            return []
        days = {day_in_name(path.name) for path in directory.glob("*.csv")}
        return sorted(day for day in days if day is not None)

    def write_day(self, day: date, path: Path) -> bool:
        """Write `day`'s settlement file to `path`; False (nothing written) for a missing day."""
        lines = day_file_lines(day, self.journal(day), self.seed, self.breaks)
        if lines is None:
            return False
        _write_atomically(path, render(lines))
        return True

    def due_days(self, now: datetime) -> list[date]:
        """The days whose file is due by `now` and not written yet, oldest first."""
        today = now.astimezone(UTC).date()
        oldest = today - timedelta(days=DELIVERY_DAYS_BACK_MAX)
        since = max(self.started_on, oldest)
        candidates = set(self.journal_days())
        candidates.update(since + timedelta(days=n) for n in range((today - since).days + 1))
        due = []
        for day in sorted(candidates):
            day_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
            if day < oldest or now < day_end + DELIVERY_DELAY or self.skips(day):
                continue
            if not self.file_path(day).exists():
                due.append(day)
        return due

    def skips(self, day: date) -> bool:
        """Whether the `missing_day` break leaves `day` without a file."""
        return SettlementBreak.MISSING_DAY in self.breaks and is_missing_day(day, self.seed)

    def deliver_due(self, now: datetime) -> list[Path]:
        """Write every file due by `now`; the paths written (a missing day writes none)."""
        written = []
        for day in self.due_days(now):
            path = self.file_path(day)
            if self.write_day(day, path):
                logger.info("payout rail: settlement file %s written", path)
                written.append(path)
        return written
