"""Classify every cash-out a reconciliation is about: the bank's lines against the ledger's
bookings. Values in, items out; no I/O.

A cash-out is in the reconciliation when a file has a line for it, or when the ledger booked a
bank result for it (`paid`, `failed` or `returned`, from a `payouts.updated` report) on one of the
days the files cover. Each gets one class, the first that applies:

- `missing_in_ledger`: the files name a payout the ledger never sent to the bank (no such cash-out,
  or one that was rejected);
- `missing_in_bank`: the ledger booked a bank result on a covered day and no file names the
  cash-out (a missing day's payouts land here);
- `amount_or_currency_differs`: a line's amount or currency is not the cash-out's payout;
- `status_differs`: a line says a status the ledger never booked for the cash-out, the lines
  say one status more than once (the bank paid it twice, or a line comes again, in one file or
  in two files reconciled together: the ledger books each status of a cash-out once), or the
  ledger booked a status on a covered day that no line says (paid at the bank, failed in the
  ledger);
- `matched`: every line agrees with the ledger, and every booking on a covered day has its line.

Lines are compared with what the ledger booked at any time, so a payout paid in one file and
returned in a later one matches in each. A booking is expected on the day the ledger made it
(UTC); the bank dates a line when the payout happened, a moment earlier, so a payout near
midnight can be a day apart on the two sides: reconcile consecutive days together to see them
meet.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Final

from services.payout_rail.settlement_file import STATUSES, SettlementLine

DETAIL_LENGTH_MAX: Final = 1_000
# Cash-out states in which its payout was never asked of the bank.
NEVER_SENT: Final = frozenset({"requested", "rejected"})


class ItemKind(enum.StrEnum):
    MISSING_IN_LEDGER = "missing_in_ledger"
    MISSING_IN_BANK = "missing_in_bank"
    AMOUNT_OR_CURRENCY_DIFFERS = "amount_or_currency_differs"
    STATUS_DIFFERS = "status_differs"
    MATCHED = "matched"


KIND_ORDER: Final = tuple(ItemKind)
BREAK_KINDS: Final = frozenset(kind for kind in ItemKind if kind is not ItemKind.MATCHED)


@dataclass(frozen=True, slots=True)
class LedgerCashout:
    """A cash-out as the ledger has it now."""

    cashout_id: str
    status: str
    payout_amount_minor: int | None
    payout_currency: str

    @property
    def sent_to_bank(self) -> bool:
        return self.status not in NEVER_SENT


@dataclass(frozen=True, slots=True)
class Booking:
    """A bank result the ledger booked: the cash-out, the status, the UTC day it was booked.
    `by_operator`: an operator's cancellation (`failed`), which answers the bank's `failed`
    line about the payout it stopped but never asks for one."""

    cashout_id: str
    status: str
    day: date
    by_operator: bool = False


@dataclass(frozen=True, slots=True)
class Item:
    cashout_id: str
    kind: ItemKind
    provider_reference: str | None
    bank_statuses: tuple[str, ...]
    bank_amount_minor: int | None
    bank_currency: str | None
    bank_value_date: date | None
    ledger_status: str | None
    ledger_statuses: tuple[str, ...]
    ledger_amount_minor: int | None
    ledger_currency: str | None
    ledger_value_date: date | None
    detail: str

    @property
    def is_break(self) -> bool:
        return self.kind in BREAK_KINDS


@dataclass
class _Sides:
    lines: list[SettlementLine] = field(default_factory=list)
    expected: list[Booking] = field(default_factory=list)


def _status_order(status: str) -> int:
    return STATUSES.index(status) if status in STATUSES else len(STATUSES)


def classify(
    lines: Iterable[SettlementLine],
    cashouts: Mapping[str, LedgerCashout],
    bookings: Iterable[Booking],
    covered_days: frozenset[date],
) -> list[Item]:
    """One item per cash-out, breaks first (in `ItemKind` order), then by cash-out id.

    `cashouts` holds the ledger's cash-outs the lines or bookings name; `bookings` every bank
    result the ledger booked for them (at any time); `covered_days` the days the files cover.
    """
    sides: dict[str, _Sides] = {}
    for line in lines:
        sides.setdefault(line.cashout_id, _Sides()).lines.append(line)
    booked: dict[str, list[Booking]] = {}
    for booking in sorted(bookings, key=lambda b: (b.day, _status_order(b.status))):
        booked.setdefault(booking.cashout_id, []).append(booking)
        if booking.day in covered_days and not booking.by_operator:
            sides.setdefault(booking.cashout_id, _Sides()).expected.append(booking)
    items = [
        _item(cashout_id, side, cashouts.get(cashout_id), booked.get(cashout_id, []))
        for cashout_id, side in sides.items()
    ]
    return sorted(items, key=lambda item: (KIND_ORDER.index(item.kind), item.cashout_id))


def _item(
    cashout_id: str, side: _Sides, cashout: LedgerCashout | None, booked: list[Booking]
) -> Item:
    lines = sorted(side.lines, key=lambda line: (line.value_date, _status_order(line.status)))
    kind, problems = _kind(lines, side.expected, cashout, booked)
    first_line = lines[0] if lines else None
    bookings = side.expected or booked
    first_booking = bookings[0] if bookings else None
    return Item(
        cashout_id=cashout_id,
        kind=kind,
        provider_reference=None if first_line is None else first_line.provider_reference,
        bank_statuses=tuple(line.status for line in lines),
        bank_amount_minor=None if first_line is None else first_line.amount_minor,
        bank_currency=None if first_line is None else first_line.currency,
        bank_value_date=None if first_line is None else first_line.value_date,
        ledger_status=None if cashout is None else cashout.status,
        ledger_statuses=tuple(booking.status for booking in booked),
        ledger_amount_minor=None if cashout is None else cashout.payout_amount_minor,
        ledger_currency=None if cashout is None else cashout.payout_currency,
        ledger_value_date=None if first_booking is None else first_booking.day,
        detail="; ".join(problems)[:DETAIL_LENGTH_MAX],
    )


def _kind(
    lines: list[SettlementLine],
    expected: list[Booking],
    cashout: LedgerCashout | None,
    booked: list[Booking],
) -> tuple[ItemKind, list[str]]:
    if lines and cashout is None:
        return ItemKind.MISSING_IN_LEDGER, ["the ledger has no such cash-out"]
    if lines and cashout is not None and not cashout.sent_to_bank:
        return ItemKind.MISSING_IN_LEDGER, [
            f"the ledger never sent it to the bank: {cashout.status}"
        ]
    if not lines:
        days = ", ".join(f"{booking.status} on {booking.day}" for booking in expected)
        return ItemKind.MISSING_IN_BANK, [f"the ledger booked it {days}; no file names it"]
    assert cashout is not None
    money = _money_problems(lines, cashout)
    statuses = _status_problems(lines, expected, cashout, booked)
    if money:
        return ItemKind.AMOUNT_OR_CURRENCY_DIFFERS, money + statuses
    if statuses:
        return ItemKind.STATUS_DIFFERS, statuses
    return ItemKind.MATCHED, []


def _money_problems(lines: list[SettlementLine], cashout: LedgerCashout) -> list[str]:
    problems = []
    for line in lines:
        if line.currency != cashout.payout_currency:
            problems.append(
                f"{line.status} line in {line.currency}, the payout is in {cashout.payout_currency}"
            )
        if line.amount_minor != cashout.payout_amount_minor:
            problems.append(
                f"{line.status} line for {line.amount_minor}, the payout is "
                f"{cashout.payout_amount_minor} (minor units)"
            )
    return problems


def _status_problems(
    lines: list[SettlementLine],
    expected: list[Booking],
    cashout: LedgerCashout,
    booked: list[Booking],
) -> list[str]:
    booked_statuses = {booking.status for booking in booked}
    line_statuses = {line.status for line in lines}
    problems = [
        f"the bank says {status}, the ledger never booked it (it has {cashout.status})"
        for status in sorted(line_statuses - booked_statuses, key=_status_order)
    ]
    lines_per_status = Counter(line.status for line in lines)
    problems += [
        f"the bank says {status} {count} times"
        for status, count in sorted(lines_per_status.items(), key=lambda s: _status_order(s[0]))
        if count > 1
    ]
    problems += [
        f"the ledger booked {booking.status} on {booking.day}, no line says it"
        for booking in expected
        if booking.status not in line_statuses
    ]
    return problems
