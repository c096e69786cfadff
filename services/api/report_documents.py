"""The documents of the gifts, cash-outs and money reports: what `GET /v1/reports/...` answers
and `giftledger report ... --json` prints, for a window whose ends are known
(`services.api.report_window`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.assets import ASSET_SCALES, DIAMOND
from schemas.reports import GiftGrouping
from services.api.queries import cashouts_report, gifts_report, money_report
from services.api.report_window import CashoutClock, ReportWindow


def _range(window: ReportWindow) -> dict[str, str]:
    return {"from": window.from_time.isoformat(), "to": window.to_time.isoformat()}


async def gifts_document(
    conn: AsyncConnection, window: ReportWindow, group_by: GiftGrouping
) -> dict[str, Any]:
    return {
        **_range(window),
        "group_by": group_by,
        "asset": DIAMOND,
        "scale": ASSET_SCALES[DIAMOND],
        "groups": await gifts_report(conn, window.from_time, window.to_time, group_by),
    }


async def cashouts_document(
    conn: AsyncConnection, window: ReportWindow, clock: CashoutClock
) -> dict[str, Any]:
    return {
        **_range(window),
        "clock": clock,
        "statuses": await cashouts_report(conn, window.from_time, window.to_time, clock),
    }


async def money_document(conn: AsyncConnection, window: ReportWindow) -> dict[str, Any]:
    return {
        **_range(window),
        "currencies": await money_report(conn, window.from_time, window.to_time),
    }
