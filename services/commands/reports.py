"""`giftledger report gifts|cashouts|money`: the finance API's reports on the command line, with
the same range, defaults and limits (`services.api.report_window`) and, with `--json`, the same
documents."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.assets import format_amount
from schemas.reports import GIFT_GROUPINGS
from services.api.queries import TooManyGroupsError, uncounted_events_text
from services.api.report_documents import cashouts_document, gifts_document, money_document
from services.api.report_window import (
    CASHOUT_CLOCK_DEFAULT,
    CASHOUT_CLOCKS,
    REPORT_RANGE_DAYS_DEFAULT,
    ReportWindow,
    database_now,
    default_span,
    report_window,
)
from services.cli_text import aware_timestamp, table
from services.commands.common import (
    EXIT_OK,
    Command,
    UsageError,
    on_database,
    print_json,
)
from services.runtime.settings import get_settings

REPORT_NAMES: Final = ("gifts", "cashouts", "money")

DocumentBuilder = Callable[[AsyncConnection, ReportWindow, argparse.Namespace], Awaitable[Any]]


def _add_range_arguments(parser: argparse.ArgumentParser) -> None:
    span = f"{REPORT_RANGE_DAYS_DEFAULT} days"
    parser.add_argument(
        "--from",
        dest="from_time",
        type=aware_timestamp,
        metavar="ISO",
        help=f"first instant included, ISO 8601 with a time zone (default: {span} before --to, "
        "or before now when --to is left out too)",
    )
    parser.add_argument(
        "--to",
        dest="to_time",
        type=aware_timestamp,
        metavar="ISO",
        help=f"first instant excluded (default: {span} after --from, or now when --from is "
        "left out too)",
    )
    parser.add_argument(
        "--json", action="store_true", help="the finance API's document, amounts in minor units"
    )


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    reports = parser.add_subparsers(dest="report", required=True, metavar="REPORT")
    gifts = reports.add_parser(
        "gifts",
        help="gift events, their gifts and Diamonds booked in the range, per group",
        description="Gift events booked in [from, to), per group, with the gifts they sent (each "
        "event's count; '-' where some were booked before giftledger recorded it), their coins "
        "and Diamonds; reversals are not netted out.",
    )
    _add_range_arguments(gifts)
    gifts.add_argument(
        "--group-by", choices=GIFT_GROUPINGS, default="surface", help="default: surface"
    )
    cashouts = reports.add_parser(
        "cashouts",
        help="cash-outs booked (or requested) in the range, by status",
        description="Cash-outs whose request the ledger booked in [from, to) (or, with "
        "--clock requested, whose request's occurred_at is in it), under their status now.",
    )
    _add_range_arguments(cashouts)
    cashouts.add_argument(
        "--clock",
        choices=CASHOUT_CLOCKS,
        default=CASHOUT_CLOCK_DEFAULT,
        help=f"booked: when the ledger recorded the request; requested: its occurred_at "
        f"(default: {CASHOUT_CLOCK_DEFAULT})",
    )
    money = reports.add_parser(
        "money",
        help="tips, fund rewards and marketplace totals booked in the range",
        description="Tips, their fees, fund rewards, marketplace payments and fees booked in "
        "[from, to), per currency and transfer code.",
    )
    _add_range_arguments(money)


def _checked_window(
    from_time: datetime | None, to_time: datetime | None, now: datetime | None, days_max: int
) -> ReportWindow:
    """The API's rules: `--to` after `--from`, at most `days_max` days apart."""
    if from_time is not None and to_time is not None:
        if from_time >= to_time:
            raise UsageError("--to must be after --from")
        if to_time - from_time > timedelta(days=days_max):
            raise UsageError(
                f"the range from --from to --to is longer than {days_max} days"
                " (API_TIME_RANGE_DAYS_MAX): ask for less"
            )
    return report_window(from_time, to_time, now, default_span(days_max))


async def _gifts(conn: AsyncConnection, window: ReportWindow, args: argparse.Namespace) -> Any:
    try:
        return await gifts_document(conn, window, args.group_by)
    except TooManyGroupsError as error:
        raise UsageError(str(error)) from error


async def _cashouts(conn: AsyncConnection, window: ReportWindow, args: argparse.Namespace) -> Any:
    return await cashouts_document(conn, window, args.clock)


async def _money(conn: AsyncConnection, window: ReportWindow, args: argparse.Namespace) -> Any:
    return await money_document(conn, window)


BUILDERS: Final[dict[str, DocumentBuilder]] = {
    "gifts": _gifts,
    "cashouts": _cashouts,
    "money": _money,
}
assert tuple(BUILDERS) == REPORT_NAMES


async def report_command(engine: AsyncEngine, args: argparse.Namespace) -> int:
    days_max = get_settings().api_time_range_days_max
    async with engine.connect() as conn:
        both_left_out = args.from_time is None and args.to_time is None
        now = await database_now(conn) if both_left_out else None
        window = _checked_window(args.from_time, args.to_time, now, days_max)
        document = await BUILDERS[args.report](conn, window, args)
    if args.json:
        print_json(document)
    else:
        print("\n".join(PRINTERS[args.report](document)))
    return EXIT_OK


# Text ---------------------------------------------------------------------------------------


def _heading(what: str, document: dict[str, Any], by: str = "") -> str:
    """`gifts booked from ... to ..., by surface`."""
    return f"{what} from {document['from']} to {document['to']}{by}"


def _gift_lines(document: dict[str, Any]) -> list[str]:
    group_by, asset = document["group_by"], document["asset"]
    lines = [_heading("gifts booked", document, f", by {group_by}")]
    if not document["groups"]:
        return [*lines, "no gifts"]
    rows = [[group_by, "gift events", "gifts", "coins", "diamonds"]] + [
        [
            str(group[group_by]),
            str(group["gift_events"]),
            "-" if group["gift_count"] is None else str(group["gift_count"]),
            str(group["coins"]),
            format_amount(group["milli_diamonds"], asset),
        ]
        for group in document["groups"]
    ]
    lines += table(rows, right_aligned={1, 2, 3, 4})
    uncounted = sum(group["gift_events_without_count"] for group in document["groups"])
    if uncounted:
        lines.append(f"gifts -: {uncounted_events_text(uncounted)}")
    return lines


def _cashout_lines(document: dict[str, Any]) -> list[str]:
    lines = [_heading(f"cash-outs {document['clock']}", document, ", by status")]
    if not document["statuses"]:
        return [*lines, "no cash-outs"]
    rows = [["status", "count", "amount", "priced", "payout"]] + [
        [
            entry["status"],
            str(line["count"]),
            format_amount(line["amount"], line["asset"]),
            str(line["priced_count"]),
            format_amount(line["payout_amount"], line["payout_currency"]),
        ]
        for entry in document["statuses"]
        for line in entry["lines"]
    ]
    footnote = "payout: of the priced cash-outs (a request refused before pricing has none)"
    return [*lines, *table(rows, right_aligned={1, 2, 3, 4}), footnote]


def _money_lines(document: dict[str, Any]) -> list[str]:
    lines = [_heading("money booked", document)]
    if not document["currencies"]:
        return [*lines, "no tips, fund rewards or marketplace payments"]
    rows = [["currency", "code", "transfers", "amount"]] + [
        [
            entry["currency"],
            total["code"],
            str(total["transfer_count"]),
            format_amount(total["amount"], entry["currency"]),
        ]
        for entry in document["currencies"]
        for total in entry["totals"]
    ]
    return [*lines, *table(rows, right_aligned={2, 3})]


PRINTERS: Final[dict[str, Callable[[dict[str, Any]], list[str]]]] = {
    "gifts": _gift_lines,
    "cashouts": _cashout_lines,
    "money": _money_lines,
}
assert tuple(PRINTERS) == REPORT_NAMES

COMMANDS: list[Command] = [
    Command(
        "report",
        "the gifts, cash-outs and money reports (last 30 days by default)",
        add_report_arguments,
        on_database(report_command),
    ),
]
