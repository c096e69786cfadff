"""What the ledger says about the payouts of a reconciliation: its cash-outs, and the bank results
it booked (each `paid`, `failed` or `returned` state a `payouts.updated` report moved a cash-out
to, with the UTC day of the move).

An operator's cancellation of a stale hold is not a bank result: the cash-out's `failed`
transition whose detail names the `cashout_cancelled` action on that cash-out
(`operator-action:<action id>`, as services/cashout/recovery.py stores it). It never asks for a
line (a cancelled payout the bank never made has none; one the bank paid anyway has its `paid`),
and it answers the bank's own `failed` line for the payout it stopped (`Booking.by_operator`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.cashout.recovery import CASHOUT_CANCELLED
from services.reconcile.matching import Booking, LedgerCashout

IDS_PER_QUERY: Final = 1_000
BANK_RESULTS: Final = ("paid", "failed", "returned")

# Whether a transition `t` is an operator's cancellation (see the module's docstring).
_CANCELLED_BY_OPERATOR = """
    (t.status = 'failed' AND EXISTS (
        SELECT 1 FROM operator_actions a
        WHERE a.target = t.cashout_id AND a.action = :cancel_action
          AND t.detail = 'operator-action:' || a.id))
"""

_BOOKINGS_ON_DAYS = text(
    f"""
    SELECT t.cashout_id FROM cashout_transitions t
    WHERE t.at >= :from_time AND t.at < :to_time
      AND t.status = ANY(CAST(:statuses AS text[])) AND NOT {_CANCELLED_BY_OPERATOR}
    GROUP BY t.cashout_id
    """  # noqa: S608
)

_BOOKINGS_OF = text(
    f"""
    SELECT t.cashout_id, t.status, {_CANCELLED_BY_OPERATOR} AS by_operator, min(t.at) AS at
    FROM cashout_transitions t
    WHERE t.cashout_id = ANY(CAST(:ids AS text[])) AND t.status = ANY(CAST(:statuses AS text[]))
    GROUP BY 1, 2, 3
    """  # noqa: S608
)

_CASHOUTS = text(
    """
    SELECT cashout_id, status, payout_amount, payout_currency FROM cashouts
    WHERE cashout_id = ANY(CAST(:ids AS text[]))
    """
)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


async def cashouts_booked_on(conn: AsyncConnection, first_day: date, last_day: date) -> list[str]:
    """The cash-outs with a bank result booked from `first_day` to `last_day` (UTC days)."""
    rows = await conn.execute(
        _BOOKINGS_ON_DAYS,
        {
            "from_time": _midnight(first_day),
            "to_time": _midnight(last_day + timedelta(days=1)),
            "statuses": list(BANK_RESULTS),
            "cancel_action": CASHOUT_CANCELLED,
        },
    )
    return [row.cashout_id for row in rows]


async def bookings_of(conn: AsyncConnection, cashout_ids: Sequence[str]) -> list[Booking]:
    """Every bank result booked for these cash-outs, the first booking of each status, and
    their operators' cancellations."""
    bookings: list[Booking] = []
    for start in range(0, len(cashout_ids), IDS_PER_QUERY):
        rows = await conn.execute(
            _BOOKINGS_OF,
            {
                "ids": list(cashout_ids[start : start + IDS_PER_QUERY]),
                "statuses": list(BANK_RESULTS),
                "cancel_action": CASHOUT_CANCELLED,
            },
        )
        bookings += [
            Booking(row.cashout_id, row.status, _utc_day(row.at), by_operator=row.by_operator)
            for row in rows
        ]
    return bookings


async def cashouts_of(
    conn: AsyncConnection, cashout_ids: Sequence[str]
) -> dict[str, LedgerCashout]:
    found: dict[str, LedgerCashout] = {}
    for start in range(0, len(cashout_ids), IDS_PER_QUERY):
        rows = await conn.execute(
            _CASHOUTS, {"ids": list(cashout_ids[start : start + IDS_PER_QUERY])}
        )
        for row in rows:
            found[row.cashout_id] = LedgerCashout(
                row.cashout_id, row.status, row.payout_amount, row.payout_currency
            )
    return found


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()
