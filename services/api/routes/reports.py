"""The finance reports: trial balance, gifts, cash-outs and money over a range.

The gifts, cash-outs and money reports take the same range, `[from, to)`, each end optional
(`services.api.report_window`: the last 30 days by default), and count by booking time; the
cash-out report also by request time (`clock=requested`).
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Query

from ledger.queries import trial_balance
from schemas.reports import GiftGrouping
from services.api.deps import (
    TIMESTAMP_RULES,
    ApiSettings,
    Reader,
    Timestamp,
    check_range,
    token_route,
)
from services.api.documents import trial_balance_document
from services.api.models import (
    CashoutsReportDocument,
    GiftsReportDocument,
    MoneyReportDocument,
    TrialBalanceDocument,
)
from services.api.queries import TooManyGroupsError
from services.api.report_documents import cashouts_document, gifts_document, money_document
from services.api.report_window import (
    CASHOUT_CLOCK_DEFAULT,
    REPORT_RANGE_DAYS_DEFAULT,
    CashoutClock,
    ReportWindow,
    database_now,
    default_span,
    report_window,
)

router = APIRouter()

# The range of the gifts, cash-outs and money reports ---------------------------------------

_SPAN: Final = (
    f"{REPORT_RANGE_DAYS_DEFAULT} days (`API_TIME_RANGE_DAYS_MAX` days, when that is less)"
)
REPORT_FROM_DESCRIPTION: Final = (
    f"First instant included. {TIMESTAMP_RULES}. Default: {_SPAN} before `to`, or before now "
    "(the database's clock) when `to` is left out too."
)
REPORT_TO_DESCRIPTION: Final = (
    f"First instant excluded. {TIMESTAMP_RULES}. Default: {_SPAN} after `from`, or now when "
    "`from` is left out too. With `from`, `to` must be after it and at most "
    "`API_TIME_RANGE_DAYS_MAX` days (366 by default) after it, else 422: a rule between two "
    "parameters, which JSON Schema cannot state."
)
GROUP_BY_DESCRIPTION: Final = (
    "One line per `surface` (`video`, `live`), `creator`, `gift` (its `gift_id`) or `day` (the "
    "UTC day of the booking)."
)
CLOCK_DESCRIPTION: Final = (
    "What places a cash-out in the range: `booked`, when the ledger recorded the request (the "
    "clock of every report); `requested`, the request's `occurred_at` (its business time)."
)


async def _report_range(
    conn: Reader,
    settings: ApiSettings,
    from_time: Annotated[
        Timestamp | None, Query(alias="from", description=REPORT_FROM_DESCRIPTION)
    ] = None,
    to_time: Annotated[
        Timestamp | None, Query(alias="to", description=REPORT_TO_DESCRIPTION)
    ] = None,
) -> ReportWindow:
    """The range asked for, its missing ends filled in (a range of defaults is always valid)."""
    days_max = settings.api_time_range_days_max
    check_range(from_time, to_time, days_max)
    now = await database_now(conn) if from_time is None and to_time is None else None
    return report_window(from_time, to_time, now, default_span(days_max))


ReportRange = Annotated[ReportWindow, Depends(_report_range)]


@token_route(
    router,
    "/v1/reports/trial-balance",
    summary="Posted debits and credits per account and asset, each account with its accounting"
    " type and normal side (`giftledger trial-balance --json`)",
    response_model=TrialBalanceDocument,
)
async def trial_balance_route(
    conn: Reader,
    as_of: Annotated[
        Timestamp | None,
        Query(
            description="The transfers posted before this instant, none stamped at it (periods "
            "are `[from, to)`: as of a month's first instant is the previous month's close; "
            f"default: now). {TIMESTAMP_RULES}."
        ),
    ] = None,
) -> dict[str, Any]:
    return trial_balance_document(await trial_balance(conn, as_of), as_of)


@token_route(
    router,
    "/v1/reports/gifts",
    summary="Gift events, their gifts and milli-diamonds per surface, creator, gift or UTC day",
    description="Counts the gift events (transfers with code `gift_diamonds`) booked in "
    "`[from, to)` (committed by the ledger) and the gifts they sent (each event's `count`); "
    "reversals are not netted out (see the `money` and trial balance reports for those). A "
    "gift event booked before giftledger recorded its count (migration 0042) is counted as an "
    "event only: a group holding one has `gift_count` null, and says how many in "
    "`gift_events_without_count`.",
    response_model=GiftsReportDocument,
)
async def gifts_route(
    conn: Reader,
    window: ReportRange,
    group_by: Annotated[GiftGrouping, Query(description=GROUP_BY_DESCRIPTION)] = "surface",
) -> dict[str, Any]:
    try:
        return await gifts_document(conn, window, group_by)
    except TooManyGroupsError as error:
        raise HTTPException(422, detail=str(error)) from error


@token_route(
    router,
    "/v1/reports/cashouts",
    summary="Cash-outs booked (or requested) in a range: count and amounts by status",
    description="Counts the cash-outs whose request the ledger recorded in `[from, to)`, or, "
    "with `clock=requested`, whose request's `occurred_at` is in it; each under its status now.",
    response_model=CashoutsReportDocument,
)
async def cashouts_report_route(
    conn: Reader,
    window: ReportRange,
    clock: Annotated[CashoutClock, Query(description=CLOCK_DESCRIPTION)] = CASHOUT_CLOCK_DEFAULT,
) -> dict[str, Any]:
    return await cashouts_document(conn, window, clock)


@token_route(
    router,
    "/v1/reports/money",
    summary="Tips, fund rewards and marketplace totals per currency and transfer code",
    description="Sums the transfers of those codes booked in `[from, to)`.",
    response_model=MoneyReportDocument,
)
async def money_report_route(conn: Reader, window: ReportRange) -> dict[str, Any]:
    return await money_document(conn, window)
