"""The window and the clock of the finance reports, shared by the API's report routes and
`giftledger report`.

A report covers `[from, to)`. Either end may be left out: without both, the last
`REPORT_RANGE_DAYS_DEFAULT` days up to now; with one, that many days after `from` or before
`to`. Now is the database's clock, the one that stamps every booking. The span is never longer
than the API's `API_TIME_RANGE_DAYS_MAX`, so a window made of defaults is always one the API
accepts.

Every report counts by booking time: when the ledger committed what it counts (a transfer's
`created_at`; for a cash-out, its first transition, written in the transaction that decided the
request). The cash-out report can count by request time instead (`clock=requested`: the
request's `occurred_at`, the business time its publisher gave).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal, get_args

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

REPORT_RANGE_DAYS_DEFAULT: Final = 30

# What places a cash-out in a window: when the ledger booked it, or when it was requested.
CashoutClock = Literal["booked", "requested"]
CASHOUT_CLOCKS: Final[tuple[CashoutClock, ...]] = get_args(CashoutClock)
CASHOUT_CLOCK_DEFAULT: Final[CashoutClock] = "booked"


@dataclass(frozen=True, slots=True)
class ReportWindow:
    """`[from_time, to_time)`, both ends known."""

    from_time: datetime
    to_time: datetime


def default_span(days_max: int) -> timedelta:
    """The span of a window with an end left out: REPORT_RANGE_DAYS_DEFAULT days, or `days_max`
    when that is less."""
    return timedelta(days=min(REPORT_RANGE_DAYS_DEFAULT, days_max))


def report_window(
    from_time: datetime | None, to_time: datetime | None, now: datetime | None, span: timedelta
) -> ReportWindow:
    """The window asked for, its missing ends filled in: `span` up to `now` when both are
    missing (`now` is needed only then), else `span` after `from_time` or before `to_time`."""
    if from_time is not None and to_time is not None:
        return ReportWindow(from_time, to_time)
    if from_time is not None:
        return ReportWindow(from_time, from_time + span)
    if to_time is None:
        assert now is not None, "both ends left out: the window ends now"
        to_time = now
    return ReportWindow(to_time - span, to_time)


async def database_now(conn: AsyncConnection) -> datetime:
    """The database's clock, which stamps every booking."""
    now: datetime = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    return now
