"""The books: `migrate`, `verify`, `balance`, `statement` and `trial-balance`."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.migrate import (
    current_revision,
    upgrade_to_head,
)
from ledger.queries import (
    STATEMENT_PAGE_SIZE_MAX,
    AccountBalance,
    StatementLine,
    account_balance,
    creator_balances,
    statement,
    trial_balance,
)
from ledger.verify import Verification, ledger_check_names
from services.api.documents import (
    STATEMENT_CSV_COLUMNS,
    creator_balances_document,
    statement_csv_row,
    trial_balance_document,
)
from services.cashout.catch_up import catch_up_cashouts
from services.cli_text import aware_timestamp, table
from services.commands.common import (
    EXIT_FAILURE,
    EXIT_OK,
    STATEMENT_PAGE_SIZE_DEFAULT,
    UsageError,
    cursor,
    decimal_amount,
    page_size,
    print_error,
    print_json,
)
from services.rates.rate_cards import load_rate_cards
from services.runtime.ledger_setup import build_ledger
from services.runtime.settings import get_settings
from services.trial_balance_text import render_trial_balance
from services.verification import verify_and_record

# migrate ------------------------------------------------------------------------------------


def add_migrate_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no arguments


async def migrate_command(engine: AsyncEngine, args: argparse.Namespace) -> int:
    await upgrade_to_head(engine, get_settings().transfer_partition_months_ahead)
    print(f"database at revision {await current_revision(engine)}")
    caught_up = await catch_up_cashouts(build_ledger(get_settings(), engine))
    if caught_up:
        print(f"{caught_up} cash-outs booked before payables were settled: caught up")
    return EXIT_OK


# verify -------------------------------------------------------------------------------------


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--full",
        action="store_true",
        help="check the whole ledger, not only what was added since the last checkpoint",
    )


async def verify_command(engine: AsyncEngine, args: argparse.Namespace) -> int:
    """Check the ledger in one snapshot; a clean run records a checkpoint, a failed one none;
    every run is then recorded in the verify runs' log with what it found."""
    recorded = await verify_and_record(engine, full=args.full)
    if not recorded.clean:
        for problem in recorded.problems:
            print(f"{problem.check}: {problem.detail}")
        print_error(f"ledger verification failed: {len(recorded.problems)} problems")
        return EXIT_FAILURE
    verification, checkpoint = recorded.verification, recorded.checkpoint
    check_count = len(ledger_check_names()) + 1  # and the operator actions' chain
    print(f"ledger verified: {check_count} checks passed, {_what_was_checked(verification)}")
    if not verification.checkpoints_kept:
        print("no checkpoint recorded: this database has no verify_checkpoints table")
    elif checkpoint is None:
        print("no checkpoint recorded: another verify recorded one meanwhile")
    else:
        print(f"checkpoint {checkpoint.id} recorded at link {checkpoint.reached.link_id or 0}")
    return EXIT_OK


def _what_was_checked(verification: Verification) -> str:
    walked = verification.reached.walked_transfer_count
    if verification.full_check:
        return f"the whole ledger ({walked:,} transfers)"
    base = verification.base
    since = "" if base is None else f" since checkpoint {base.id}"
    return f"{walked:,} transfers added{since} (`verify --full` checks every transfer)"


# balance ------------------------------------------------------------------------------------


def add_balance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("creator_id", metavar="CREATOR_ID")
    parser.add_argument(
        "--json", action="store_true", help="print the finance API's balances document"
    )


async def balance_command(engine: AsyncEngine, args: argparse.Namespace) -> int:
    async with engine.connect() as conn:
        accounts = await creator_balances(conn, args.creator_id)
    if not accounts:
        raise UsageError(f"no accounts for creator {args.creator_id!r}")
    document = creator_balances_document(args.creator_id, accounts)
    if args.json:
        print_json(document)
        return EXIT_OK
    rows = [
        [
            line["asset"],
            "available",
            decimal_amount(line["available"], line["asset"]),
            "pending",
            decimal_amount(line["pending"], line["asset"]),
        ]
        for line in document["balances"]
    ]
    print("\n".join(table(rows, right_aligned={2, 4})))
    return EXIT_OK


# statement ----------------------------------------------------------------------------------


def add_statement_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "account", metavar="ACCOUNT", help="account name, e.g. creator:c1:DIAMOND:available"
    )
    parser.add_argument(
        "--from",
        dest="from_time",
        type=aware_timestamp,
        metavar="ISO",
        help="first instant included (ISO 8601 with a time zone)",
    )
    parser.add_argument(
        "--to",
        dest="to_time",
        type=aware_timestamp,
        metavar="ISO",
        help="first instant excluded (ISO 8601 with a time zone)",
    )
    parser.add_argument(
        "--csv",
        action="store_true",
        help="CSV with amounts as integers in minor units, each line with the account's asset "
        "and scale: every transfer of the range (from --cursor on), read a page at a time from "
        "one snapshot, unless --page-size asks for one page",
    )
    parser.add_argument(
        "--page-size",
        type=page_size,
        default=None,
        metavar="N",
        help=f"transfers per page, 1 to {STATEMENT_PAGE_SIZE_MAX} "
        f"(default {STATEMENT_PAGE_SIZE_DEFAULT}; with --csv, the whole range)",
    )
    parser.add_argument(
        "--cursor",
        type=cursor,
        default=0,
        metavar="N",
        help="continue after this seq: the 'next cursor' printed by the previous page",
    )


async def statement_command(engine: AsyncEngine, args: argparse.Namespace) -> int:
    """One page (`--page-size`, 100 by default), its next cursor on stderr; with `--csv` and
    no `--page-size`, every line of the range, so that a file written from it is the whole
    statement."""
    if args.from_time and args.to_time and args.from_time >= args.to_time:
        raise UsageError("--from must be before --to")
    whole_range = args.csv and args.page_size is None
    async with engine.connect() as conn:
        if whole_range:  # one snapshot for every page
            await conn.execution_options(isolation_level="REPEATABLE READ")
        account = await account_balance(conn, args.account)
        if account is None:
            raise UsageError(f"no account named {args.account!r}")
        after_seq = args.cursor
        page_size = (
            STATEMENT_PAGE_SIZE_MAX
            if whole_range
            else (args.page_size or STATEMENT_PAGE_SIZE_DEFAULT)
        )
        writer = csv.writer(sys.stdout, lineterminator="\n") if args.csv else None
        if writer is not None:
            writer.writerow(STATEMENT_CSV_COLUMNS)
        while True:
            page = await statement(
                conn,
                account.account_id,
                from_time=args.from_time,
                to_time=args.to_time,
                after_seq=after_seq,
                page_size=page_size,
            )
            if writer is None:
                _print_statement(account, page.lines)
            else:
                writer.writerows(statement_csv_row(account, line) for line in page.lines)
            if page.next_cursor is None or not whole_range:
                break
            after_seq = page.next_cursor
    if page.next_cursor is not None:
        print(f"next cursor: {page.next_cursor}", file=sys.stderr)
    return EXIT_OK


def _print_statement(account: AccountBalance, lines: Sequence[StatementLine]) -> None:
    asset = account.asset
    print(f"{account.name} ({asset}, scale {account.scale})")
    if not lines:
        print("no transfers")
        return
    # `pending` marks a line that moves only pending amounts; the last two columns are the
    # running balance and pending amount, as `balance_after` and `pending_after` in the CSV
    header = ["seq", "created_at", "code", "counterparty", "debit", "credit", "", "balance"]
    rows = [[*header, "pending"]] + [
        [
            str(line.seq),
            line.created_at.isoformat(timespec="seconds"),
            line.code,
            line.counterparty,
            decimal_amount(line.debit, asset) if line.debit else "",
            decimal_amount(line.credit, asset) if line.credit else "",
            "pending" if line.pending else "",
            decimal_amount(line.balance_after, asset),
            decimal_amount(line.pending_after, asset),
        ]
        for line in lines
    ]
    print("\n".join(table(rows, right_aligned={0, 4, 5, 7, 8})))


# trial-balance ------------------------------------------------------------------------------


def add_trial_balance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as-of",
        type=aware_timestamp,
        metavar="ISO",
        help="the transfers posted before this instant, none stamped at it: as of a month's "
        "first instant is the previous month's close (default: now)",
    )
    parser.add_argument(
        "--json", action="store_true", help="JSON with amounts as integers in minor units"
    )


async def trial_balance_command(engine: AsyncEngine, args: argparse.Namespace) -> int:
    async with engine.connect() as conn:
        lines = await trial_balance(conn, args.as_of)
        rate_cards = await load_rate_cards(conn)
        now = (await conn.execute(text("SELECT now()"))).scalar_one()
    document = trial_balance_document(lines, args.as_of)
    if args.json:
        print_json(document)
    else:
        card = rate_cards.in_force_at(args.as_of or now)
        print("\n".join(render_trial_balance(lines, card, args.as_of)))
    unbalanced = [entry["asset"] for entry in document["assets"] if entry["total"]["balance"]]
    if unbalanced:
        print_error(f"trial balance does not sum to zero for {', '.join(unbalanced)}")
        return EXIT_FAILURE
    return EXIT_OK
