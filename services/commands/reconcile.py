"""The books at month end and against the bank: `reconcile`, `settlement-file`, `close` and
`journal`.

    giftledger reconcile FILE... [--from DAY] [--to DAY] [--json]
    giftledger settlement-file --date DAY OUT [--dir DIR]
    giftledger close --period YYYY-MM [--as NAME]
    giftledger journal --period YYYY-MM [--csv]

`reconcile` and `close` write as `DATABASE_WRITER_ROLE`; a close keeps who made it, `--as NAME`
else `OPERATOR_NAME` (as `giftledger operator` acts). Exit codes: `reconcile` 1 when breaks
remain (a second run of the same files answers the stored reconciliation, with the same code);
`close` 1 when the close is refused (the period has not ended, is closed, a later one is, or an
earlier one holding transfers is open); `journal` 1 when a period's debits and credits differ;
2 for a usage error (a file that is not a settlement file, a bad period or day, a close with no
name).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.closes import CloseRefusedError, PeriodClose, close_period
from ledger.journal import JournalLine, asset_totals, journal_basis, journal_lines
from ledger.periods import Period, parse_period
from schemas.assets import format_amount
from services.api.spreadsheet import spreadsheet_text
from services.cli_text import table
from services.commands.common import (
    EXIT_FAILURE,
    EXIT_OK,
    Command,
    UsageError,
    acting_operator,
    add_actor_argument,
    as_writer,
    decimal_amount,
    on_database,
    print_error,
    print_json,
)
from services.payout_rail.settlement import SettlementBooks
from services.payout_rail.settlement_file import file_name
from services.reconcile.files import ReconciliationInputError, read_settlement_set
from services.reconcile.service import reconcile
from services.reconcile.store import (
    ITEM_PAGE_SIZE_MAX,
    reconciliation_items,
    reconciliation_summary,
)
from services.runtime.settings import get_settings

JOURNAL_CSV_COLUMNS: Final = (
    "day",
    "account",
    "asset",
    "scale",
    "code",
    "debits",
    "credits",
    "opening",
    "closing",
)
# Text output is a table sized to its widest cell; past this many lines, ask for --csv.
JOURNAL_TEXT_LINES_MAX: Final = 10_000
BREAK_ITEMS_PRINTED_MAX: Final = 100_000


def day_argument(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {value!r}") from None


def period_argument(value: str) -> Period:
    try:
        return parse_period(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# reconcile ----------------------------------------------------------------------------------


def add_reconcile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files", type=Path, nargs="+", metavar="FILE", help="settlement files, one UTC day each"
    )
    parser.add_argument(
        "--from",
        dest="first_day",
        type=day_argument,
        metavar="DAY",
        help="first day reconciled (default: the first file's day)",
    )
    parser.add_argument(
        "--to",
        dest="last_day",
        type=day_argument,
        metavar="DAY",
        help="last day reconciled, included (default: the last file's day)",
    )
    parser.add_argument(
        "--json", action="store_true", help="the reconciliation document with its breaks"
    )
    parser.epilog = (
        "A day from --from to --to without a file is a missing day: the payouts the ledger "
        "booked on it are missing in the bank. Exit 1 when breaks remain."
    )


async def reconcile_command(engine: AsyncEngine, args: argparse.Namespace) -> int:
    try:
        settlement = read_settlement_set(args.files, args.first_day, args.last_day)
    except ReconciliationInputError as error:
        raise UsageError(str(error)) from None
    async with as_writer(engine) as writer:
        outcome = await reconcile(writer, settlement)
    async with engine.connect() as conn:
        summary = await reconciliation_summary(conn, outcome.reconciliation_id)
        assert summary is not None
        breaks = await _break_items(conn, outcome.reconciliation_id)
    if args.json:
        print_json({**summary, "breaks": breaks})
    else:
        _print_reconciliation(summary, breaks, created=outcome.created)
    if summary["break_count"]:
        print_error(f"{summary['break_count']} breaks remain")
        return EXIT_FAILURE
    return EXIT_OK


async def _break_items(conn: Any, reconciliation_id: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: int | None = 0
    while cursor is not None and len(items) < BREAK_ITEMS_PRINTED_MAX:
        page, cursor = await reconciliation_items(
            conn, reconciliation_id, after_item=cursor, limit=ITEM_PAGE_SIZE_MAX
        )
        items += [item for item in page if item["kind"] != "matched"]
        if page and page[-1]["kind"] == "matched":
            break  # breaks come first
    return items


def _print_reconciliation(
    summary: dict[str, Any], breaks: list[dict[str, Any]], *, created: bool
) -> None:
    when = "stored now" if created else f"reconciled before, at {summary['reconciled_at']}"
    print(
        f"reconciliation {summary['id']} ({when}): {summary['first_day']} to "
        f"{summary['last_day']}, {len(summary['files'])} files, {summary['line_count']} lines"
    )
    if summary["missing_days"]:
        print(f"missing days (no file): {', '.join(summary['missing_days'])}")
    rows = [[kind, str(count)] for kind, count in summary["kinds"].items()]
    print("\n".join(table(rows, right_aligned={1})))
    if breaks:
        print("breaks:")
        rows = [[item["kind"], item["cashout_id"], item["detail"]] for item in breaks]
        print("\n".join("  " + line for line in table(rows, right_aligned=set())))


# settlement-file ----------------------------------------------------------------------------


def add_settlement_file_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--date", dest="day", type=day_argument, required=True, metavar="DAY", help="UTC day"
    )
    parser.add_argument(
        "out",
        type=Path,
        metavar="OUT",
        help=f"a file, or a directory to write {file_name(date(2026, 11, 3))} into",
    )
    parser.add_argument(
        "--dir",
        dest="directory",
        type=Path,
        metavar="DIR",
        help="the bank's directory, with its journal (default: PAYOUT_RAIL_SETTLEMENT_DIR)",
    )
    parser.epilog = (
        "Writes the simulated bank's settlement file of one day from its journal, with the "
        "breaks of PAYOUT_RAIL_SETTLEMENT_BREAKS and the seed PAYOUT_RAIL_SEED."
    )


def settlement_file_command(args: argparse.Namespace) -> int:
    settings = get_settings()
    directory = args.directory or settings.payout_rail_settlement_dir
    if directory is None:
        raise UsageError("no bank directory: give --dir or set PAYOUT_RAIL_SETTLEMENT_DIR")
    if not Path(directory).is_dir():
        raise UsageError(f"{directory}: no such directory (the bank's, with its journal)")
    books = SettlementBooks(
        directory, seed=settings.payout_rail_seed, breaks=settings.payout_rail_settlement_breaks
    )
    out: Path = args.out / file_name(args.day) if args.out.is_dir() else args.out
    try:
        written = books.write_day(args.day, out)
    except (OSError, ValueError) as error:
        raise UsageError(f"{directory}: {error}") from None
    if not written:
        print_error(f"no file for {args.day}: the bank skips this day (break missing_day)")
        return EXIT_OK
    day_end = datetime(args.day.year, args.day.month, args.day.day, tzinfo=UTC) + timedelta(days=1)
    if datetime.now(UTC) < day_end:
        print_error(f"{args.day} is not over: the file holds the payouts reported so far")
    print(out)
    return EXIT_OK


# close --------------------------------------------------------------------------------------


def add_close_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--period", type=period_argument, required=True, metavar="YYYY-MM", help="a UTC month"
    )
    add_actor_argument(parser)
    parser.epilog = (
        "Stores every account's closing balance at the period's end, hashed with the head of "
        "the transfers' hash chain, and who closed it. Refused (exit 1) before the month has "
        "ended, for a period closed already or before a closed one, and while an earlier month "
        "with transfers is open."
    )


async def close_command(engine: AsyncEngine, args: argparse.Namespace) -> int:
    period: Period = args.period
    actor = acting_operator(args)
    try:
        async with as_writer(engine) as writer:
            close = await close_period(writer, period, closed_by=actor)
    except CloseRefusedError as error:
        print_error(f"close of {period} refused: {error}")
        return EXIT_FAILURE
    anchor = "an empty chain" if close.chain_link_id is None else f"link {close.chain_link_id}"
    print(
        f"closed {close.period}: {close.account_count} accounts, hash {close.hash.hex()}, "
        f"with the transfers' chain at {anchor}; closed by {close.closed_by}"
    )
    return EXIT_OK


# journal ------------------------------------------------------------------------------------


def add_journal_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--period", type=period_argument, required=True, metavar="YYYY-MM", help="a UTC month"
    )
    parser.add_argument(
        "--csv",
        action="store_true",
        help="CSV with amounts as integers in minor units, each line with its asset and scale",
    )


def journal_csv_row(line: JournalLine) -> list[str]:
    return [
        line.day.isoformat(),
        spreadsheet_text(line.account),
        line.asset,
        str(line.scale),
        line.code,
        str(line.debits),
        str(line.credits),
        str(line.opening),
        str(line.closing),
    ]


async def journal_command(engine: AsyncEngine, args: argparse.Namespace) -> int:
    period: Period = args.period
    async with engine.connect() as conn:
        # One snapshot: on an open month, totals and lines read apart could disagree.
        await conn.execution_options(isolation_level="REPEATABLE READ")
        basis = await journal_basis(conn, period)
        totals = await asset_totals(conn, basis)
        if args.csv:
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(JOURNAL_CSV_COLUMNS)
            async for line in journal_lines(conn, basis):
                writer.writerow(journal_csv_row(line))
        else:
            state = "open" if basis.close is None else _closed_state(basis.close)
            print(
                f"journal of {period} ({state}), {period.start.isoformat()} to "
                f"{period.end.isoformat()}"
            )
            await _print_journal(journal_lines(conn, basis))
            for total in totals:
                print(
                    f"total {total.asset}: debits {format_amount(total.debits, total.asset)}, "
                    f"credits {format_amount(total.credits, total.asset)}"
                )
    unbalanced = [total.asset for total in totals if total.debits != total.credits]
    if unbalanced:
        print_error(f"debits and credits differ for {', '.join(unbalanced)}")
        return EXIT_FAILURE
    return EXIT_OK


def _closed_state(close: PeriodClose) -> str:
    """`closed by NAME`, or `closed` for a close made before migration 0031, which kept no name."""
    return "closed" if close.closed_by is None else f"closed by {close.closed_by}"


async def _print_journal(lines: AsyncIterator[JournalLine]) -> None:
    header = ["day", "account", "asset", "code", "debits", "credits", "opening", "closing"]
    rows = [header]
    more = 0
    async for line in lines:
        if len(rows) > JOURNAL_TEXT_LINES_MAX:
            more += 1
            continue
        asset = line.asset
        rows.append(
            [
                line.day.isoformat(),
                line.account,
                asset,
                line.code,
                decimal_amount(line.debits, asset),
                decimal_amount(line.credits, asset),
                decimal_amount(line.opening, asset),
                decimal_amount(line.closing, asset),
            ]
        )
    if len(rows) == 1:
        print("no posted transfers")
        return
    print("\n".join(table(rows, right_aligned={4, 5, 6, 7})))
    if more:
        print(f"... and {more} more lines: use --csv for all of them")


COMMANDS: list[Command] = [
    Command(
        "reconcile",
        "match the bank's settlement files against the cash-outs; exit 1 when breaks remain",
        add_reconcile_arguments,
        on_database(reconcile_command),
    ),
    Command(
        "settlement-file",
        "write the simulated bank's settlement file of one day",
        add_settlement_file_arguments,
        settlement_file_command,
    ),
    Command(
        "close",
        "close a month: store every account's closing balance, hashed with the chain's head",
        add_close_arguments,
        on_database(close_command),
    ),
    Command(
        "journal",
        "a month's debits and credits per day, account and code, with balances",
        add_journal_arguments,
        on_database(journal_command),
    ),
]
