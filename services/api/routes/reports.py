"""The finance reports: trial balance, gifts, cash-outs and money over a range."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from ledger.queries import trial_balance
from schemas.assets import ASSET_SCALES, DIAMOND
from schemas.reports import GiftGrouping
from services.api.deps import (
    RANGE_END_DESCRIPTION,
    RANGE_START_DESCRIPTION,
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
from services.api.queries import cashouts_report, gifts_report, money_report

router = APIRouter()

RangeStart = Annotated[Timestamp, Query(alias="from", description=RANGE_START_DESCRIPTION)]
RangeEnd = Annotated[Timestamp, Query(alias="to", description=RANGE_END_DESCRIPTION)]


@token_route(
    router,
    "/v1/reports/trial-balance",
    summary="Posted debits and credits per account and asset (`giftledger trial-balance`)",
    response_model=TrialBalanceDocument,
)
async def trial_balance_route(
    conn: Reader,
    as_of: Annotated[
        Timestamp | None,
        Query(description=f"Posted up to this instant (default: now). {TIMESTAMP_RULES}."),
    ] = None,
) -> dict[str, Any]:
    return trial_balance_document(await trial_balance(conn, as_of), as_of)


@token_route(
    router,
    "/v1/reports/gifts",
    summary="Gifts and their milli-diamonds per surface, creator, gift or UTC day",
    description="Counts transfers with code `gift_diamonds` recorded in `[from, to)`; "
    "reversals are not netted out (see the `money` and trial balance reports for those).",
    response_model=GiftsReportDocument,
)
async def gifts_route(
    conn: Reader,
    settings: ApiSettings,
    from_time: RangeStart,
    to_time: RangeEnd,
    group_by: GiftGrouping = "surface",
) -> dict[str, Any]:
    check_range(from_time, to_time, settings.api_time_range_days_max)
    return {
        "from": from_time.isoformat(),
        "to": to_time.isoformat(),
        "group_by": group_by,
        "asset": DIAMOND,
        "scale": ASSET_SCALES[DIAMOND],
        "groups": await gifts_report(conn, from_time, to_time, group_by),
    }


@token_route(
    router,
    "/v1/reports/cashouts",
    summary="Cash-outs requested in a range: count and amounts by status",
    response_model=CashoutsReportDocument,
)
async def cashouts_report_route(
    conn: Reader, settings: ApiSettings, from_time: RangeStart, to_time: RangeEnd
) -> dict[str, Any]:
    check_range(from_time, to_time, settings.api_time_range_days_max)
    return {
        "from": from_time.isoformat(),
        "to": to_time.isoformat(),
        "statuses": await cashouts_report(conn, from_time, to_time),
    }


@token_route(
    router,
    "/v1/reports/money",
    summary="Tips, fund rewards and marketplace totals per currency and transfer code",
    response_model=MoneyReportDocument,
)
async def money_report_route(
    conn: Reader, settings: ApiSettings, from_time: RangeStart, to_time: RangeEnd
) -> dict[str, Any]:
    check_range(from_time, to_time, settings.api_time_range_days_max)
    return {
        "from": from_time.isoformat(),
        "to": to_time.isoformat(),
        "currencies": await money_report(conn, from_time, to_time),
    }
