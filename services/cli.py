"""`giftledger`: the command line.

Each command is one `Command` in `COMMANDS`: a name, a one-line help, a function that adds its
arguments and a handler that returns the exit code. Adding a command is one function pair and one
line in that list.

Exit codes: 0 success, 1 a failure (the database is unreachable, `verify` found a problem), 2 a
usage error (a bad argument, an account or creator that does not exist, a configuration variable
that does not parse, a database without the current schema). Amounts are integers in
the asset's minor unit everywhere a program reads them (`--json`, `--csv`); text output shows
them as decimals in the major unit. `--json` and `--csv` write nothing else on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.migrate import (
    SchemaNotCurrentError,
    current_revision,
    require_current_schema,
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
from ledger.verify import check_names, verify
from schemas.assets import format_amount
from schemas.export import export_json_schemas
from services.api.documents import (
    STATEMENT_CSV_COLUMNS,
    creator_balances_document,
    statement_csv_row,
    trial_balance_document,
)
from services.app import runner
from services.app.asyncapi import asyncapi_document
from services.cashout.desk import (
    FxVersion,
    add_fx_rate,
    cashout_document,
    decimal_text,
    list_cashouts,
    list_fx_rates,
)
from services.cashout.eligibility import creator_eligibility, get_eligibility_settings
from services.demo import FreshStartError, run_demo
from services.loadtest import generator as loadgen
from services.loadtest import replay
from services.loadtest import run as loadtest
from services.rates.rate_cards import RATE_CARD_NOTICE_S, add_rate_card, load_rate_cards
from services.runtime.database import DatabaseUnavailableError, error_reason, open_database
from services.runtime.settings import configuration_problems, get_settings

PROGRAM = "giftledger"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
STATEMENT_PAGE_SIZE_DEFAULT = 100
ASYNCAPI_FILE_NAME = "asyncapi.json"

Handler = Callable[[argparse.Namespace], int]
DatabaseCommand = Callable[[AsyncEngine, argparse.Namespace], Awaitable[int]]


class UsageError(Exception):
    """The arguments name something that does not exist or do not fit together (exit 2)."""


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Handler


def on_database(command: DatabaseCommand, *, schema_required: bool = True) -> Handler:
    """Run an async command with an engine on the configured (or embedded) database, which must
    be at the current schema unless `schema_required` is False (`migrate`)."""

    async def run(args: argparse.Namespace) -> int:
        async with open_database(get_settings()) as engine:
            if schema_required:
                await require_current_schema(engine)
            return await command(engine, args)

    def handler(args: argparse.Namespace) -> int:
        return asyncio.run(run(args))

    return handler


# Argument types -----------------------------------------------------------------------------


def aware_timestamp(value: str) -> datetime:
    """An ISO 8601 timestamp with a time zone; naive ones are refused, never guessed as UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 timestamp: {value!r}") from None
    if moment.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"timestamp {value!r} has no time zone: add one, e.g. 2026-11-01T00:00:00Z"
        )
    return moment


def page_size(value: str) -> int:
    size = _integer(value)
    if not 1 <= size <= STATEMENT_PAGE_SIZE_MAX:
        raise argparse.ArgumentTypeError(
            f"page size must be between 1 and {STATEMENT_PAGE_SIZE_MAX}, not {size}"
        )
    return size


def cursor(value: str) -> int:
    position = _integer(value)
    if position < 0:
        raise argparse.ArgumentTypeError(f"cursor must not be negative, not {position}")
    return position


def _positive_decimal(value: str) -> Fraction:
    """A decimal such as 0.92, read exactly (never through a float)."""
    try:
        number = Fraction(Decimal(value))
    except (InvalidOperation, ValueError):
        raise argparse.ArgumentTypeError(f"not a decimal number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return number


def _integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None


# Output helpers -----------------------------------------------------------------------------


def decimal_amount(amount_minor: int, asset: str) -> str:
    """`12500, "DIAMOND"` → `12.500`: format_amount without the asset code."""
    return format_amount(amount_minor, asset).removesuffix(f" {asset}")


def table(rows: Sequence[Sequence[str]], right_aligned: set[int]) -> list[str]:
    """Rows padded into columns two spaces apart; columns in `right_aligned` align right."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if column in right_aligned else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def print_json(document: object) -> None:
    print(json.dumps(document, indent=2))


def _error(message: str) -> None:
    print(f"{PROGRAM}: {message}", file=sys.stderr)


# migrate ------------------------------------------------------------------------------------


def _add_migrate_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no arguments


async def _migrate(engine: AsyncEngine, args: argparse.Namespace) -> int:
    await upgrade_to_head(engine)
    print(f"database at revision {await current_revision(engine)}")
    return EXIT_OK


# verify -------------------------------------------------------------------------------------


def _add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no arguments


async def _verify(engine: AsyncEngine, args: argparse.Namespace) -> int:
    async with engine.connect() as conn:
        problems = await verify(conn)
    if not problems:
        print(f"ledger verified: {len(check_names())} checks passed")
        return EXIT_OK
    for problem in problems:
        print(f"{problem.check}: {problem.detail}")
    _error(f"ledger verification failed: {len(problems)} problems")
    return EXIT_FAILURE


# balance ------------------------------------------------------------------------------------


def _add_balance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("creator_id", metavar="CREATOR_ID")
    parser.add_argument(
        "--json", action="store_true", help="print the finance API's balances document"
    )


async def _balance(engine: AsyncEngine, args: argparse.Namespace) -> int:
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


# eligibility --------------------------------------------------------------------------------


def _add_eligibility_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("creator_id", metavar="CREATOR_ID")
    parser.add_argument("--json", action="store_true", help="print the finance API's document")


async def _require_known_creator(conn: AsyncConnection, creator_id: str) -> None:
    """A creator is known by a profile, an account or a cash-out request; else exit 2."""
    known = await conn.scalar(
        text(
            "SELECT EXISTS (SELECT 1 FROM creators WHERE creator_id = :id)"
            " OR EXISTS (SELECT 1 FROM accounts WHERE creator_id = :id)"
            " OR EXISTS (SELECT 1 FROM cashouts WHERE creator_id = :id)"
        ),
        {"id": creator_id},
    )
    if not known:
        raise UsageError(f"no creator {creator_id!r}: no profile, account or cash-out names it")


async def _eligibility(engine: AsyncEngine, args: argparse.Namespace) -> int:
    """Which Creator Next rules pass and which fail; exit 0 whatever the verdict."""
    async with engine.connect() as conn:
        await _require_known_creator(conn, args.creator_id)
        report = await creator_eligibility(conn, args.creator_id, get_eligibility_settings())
    if args.json:
        print_json(report.to_document())
        return EXIT_OK
    verdict = "eligible" if report.eligible else f"not eligible ({report.first_failed_rule})"
    print(f"{args.creator_id}: {verdict}")
    rows = [
        [rule.rule, "pass" if rule.passed else "FAIL", rule.seen, rule.required]
        for rule in report.rules
    ]
    print("\n".join(table([["rule", "result", "seen", "required"], *rows], right_aligned=set())))
    return EXIT_OK


# rates --------------------------------------------------------------------------------------


def _add_rates_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="list the versions as JSON")
    actions = parser.add_subparsers(dest="rates_action", metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="add the next rate card version",
        description="Add the next rate card version. It must take effect at least "
        f"{RATE_CARD_NOTICE_S} s from now, so every running consumer knows it in time.",
    )
    add.add_argument("--effective-from", type=aware_timestamp, required=True, metavar="ISO")
    add.add_argument("--milli-diamonds-per-coin", type=_integer, required=True, metavar="N")
    add.add_argument("--diamonds-per-usd", type=_integer, required=True, metavar="N")
    add.add_argument("--note", default="", help="why this version exists")
    fx = actions.add_parser(
        "fx-add",
        help="add an FX rate: units of a currency per 1 USD",
        description="Add an FX rate for cash-outs paid in CURRENCY, taking effect in the future.",
    )
    fx.add_argument("currency", metavar="CURRENCY")
    fx.add_argument("units_per_usd", type=_positive_decimal, metavar="UNITS_PER_USD")
    fx.add_argument("--effective-from", type=aware_timestamp, required=True, metavar="ISO")


async def _rates(engine: AsyncEngine, args: argparse.Namespace) -> int:
    """Show the rate card and FX versions, or add one (`rates add`, `rates fx-add`)."""
    if args.rates_action == "fx-add":
        return await _add_fx_rate(engine, args)
    if args.rates_action == "add":
        return await _add_rate_card(engine, args)
    async with engine.connect() as conn:
        cards = (await load_rate_cards(conn)).cards
        fx_rates = await list_fx_rates(conn)
    card_documents = [
        {
            "version": card.version,
            "effective_from": None if card.always_in_force else card.effective_from.isoformat(),
            "milli_diamonds_per_coin": card.milli_diamonds_per_coin,
            "diamonds_per_usd": card.diamonds_per_usd,
            "note": card.note,
        }
        for card in cards
    ]
    fx_documents = [_fx_document(fx) for fx in fx_rates]
    if args.json:
        print_json({"rate_cards": card_documents, "fx_rates": fx_documents})
        return EXIT_OK
    _print_rate_cards(card_documents)
    print()
    _print_fx_rates(fx_documents)
    return EXIT_OK


async def _add_fx_rate(engine: AsyncEngine, args: argparse.Namespace) -> int:
    try:
        async with engine.begin() as conn:
            await add_fx_rate(conn, args.currency, args.units_per_usd, args.effective_from)
    except ValueError as error:
        raise UsageError(str(error)) from error
    units = decimal_text(args.units_per_usd)
    print(f"{args.currency}: {units} per USD from {args.effective_from.isoformat()}")
    return EXIT_OK


async def _add_rate_card(engine: AsyncEngine, args: argparse.Namespace) -> int:
    try:
        async with engine.begin() as conn:
            card = await add_rate_card(
                conn,
                effective_from=args.effective_from,
                milli_diamonds_per_coin=args.milli_diamonds_per_coin,
                diamonds_per_usd=args.diamonds_per_usd,
                note=args.note,
            )
    except ValueError as error:
        raise UsageError(str(error)) from error
    print(f"rate card version {card.version} takes effect {card.effective_from.isoformat()}")
    return EXIT_OK


def _fx_document(fx: FxVersion) -> dict[str, str | None]:
    return {
        "currency": fx.currency,
        "effective_from": None if fx.effective_from is None else fx.effective_from.isoformat(),
        "units_per_usd": decimal_text(fx.units_per_usd),
    }


def _print_rate_cards(documents: Sequence[dict[str, Any]]) -> None:
    rows = [
        [
            str(document["version"]),
            str(document["effective_from"] or "always"),
            str(document["milli_diamonds_per_coin"]),
            str(document["diamonds_per_usd"]),
            str(document["note"]),
        ]
        for document in documents
    ]
    header = ["version", "effective from", "milli-diamonds/coin", "diamonds/USD", "note"]
    print("\n".join(table([header, *rows], right_aligned={2, 3})))


def _print_fx_rates(documents: Sequence[dict[str, str | None]]) -> None:
    rows = [
        [
            str(document["currency"]),
            document["effective_from"] or "always",
            str(document["units_per_usd"]),
        ]
        for document in documents
    ]
    header = ["currency", "effective from", "units/USD"]
    print("\n".join(table([header, *rows], right_aligned={2})))


# cashouts -----------------------------------------------------------------------------------

CASHOUT_STATUSES = ("requested", "held", "submitted", "paid", "rejected", "failed", "returned")


def _add_cashouts_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", choices=CASHOUT_STATUSES)
    parser.add_argument("--creator", metavar="CREATOR_ID")
    parser.add_argument(
        "--stale",
        action="store_true",
        help="only holds with no answer from the bank within CASHOUT_ANSWER_WINDOW_S",
    )
    parser.add_argument("--limit", type=page_size, default=100, metavar="N")
    parser.add_argument("--json", action="store_true", help="the cashouts.updated documents")


async def _cashouts(engine: AsyncEngine, args: argparse.Namespace) -> int:
    """List cash-outs; `--stale` lists the holds waiting too long for the bank (exit 1 if any)."""
    window_s = get_settings().cashout_answer_window_s if args.stale else None
    async with engine.connect() as conn:
        if args.creator is not None:
            await _require_known_creator(conn, args.creator)
        found = await list_cashouts(
            conn,
            status=args.status,
            creator_id=args.creator,
            stale_after_s=window_s,
            limit=args.limit,
        )
    documents = [cashout_document(cashout) for cashout in found]
    if args.json:
        print_json({"cashouts": documents})
    else:
        header = ["cashout_id", "creator_id", "status", "amount", "payout", "rule/code"]
        rows = [
            [
                cashout.cashout_id,
                cashout.creator_id,
                cashout.status,
                decimal_amount(cashout.amount, cashout.asset),
                "-"
                if cashout.payout_amount is None
                else decimal_amount(cashout.payout_amount, cashout.payout_currency),
                cashout.rejected_rule or cashout.failure_code or "",
            ]
            for cashout in found
        ]
        print("\n".join(table([header, *rows], right_aligned={3, 4})))
    return EXIT_FAILURE if args.stale and found else EXIT_OK


# statement ----------------------------------------------------------------------------------


def _add_statement_arguments(parser: argparse.ArgumentParser) -> None:
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
        "--csv", action="store_true", help="CSV with amounts as integers in minor units"
    )
    parser.add_argument(
        "--page-size",
        type=page_size,
        default=STATEMENT_PAGE_SIZE_DEFAULT,
        metavar="N",
        help=f"transfers per page, 1 to {STATEMENT_PAGE_SIZE_MAX} "
        f"(default {STATEMENT_PAGE_SIZE_DEFAULT})",
    )
    parser.add_argument(
        "--cursor",
        type=cursor,
        default=0,
        metavar="N",
        help="continue after this seq: the 'next cursor' printed by the previous page",
    )


async def _statement(engine: AsyncEngine, args: argparse.Namespace) -> int:
    if args.from_time and args.to_time and args.from_time >= args.to_time:
        raise UsageError("--from must be before --to")
    async with engine.connect() as conn:
        account = await account_balance(conn, args.account)
        if account is None:
            raise UsageError(f"no account named {args.account!r}")
        page = await statement(
            conn,
            account.account_id,
            from_time=args.from_time,
            to_time=args.to_time,
            after_seq=args.cursor,
            page_size=args.page_size,
        )
    if args.csv:
        _write_statement_csv(page.lines)
    else:
        _print_statement(account, page.lines)
    if page.next_cursor is not None:
        print(f"next cursor: {page.next_cursor}", file=sys.stderr)
    return EXIT_OK


def _write_statement_csv(lines: Sequence[StatementLine]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(STATEMENT_CSV_COLUMNS)
    for line in lines:
        writer.writerow(statement_csv_row(line))


def _print_statement(account: AccountBalance, lines: Sequence[StatementLine]) -> None:
    asset = account.asset
    print(f"{account.name} ({asset}, scale {account.scale})")
    if not lines:
        print("no transfers")
        return
    header = ["seq", "created_at", "code", "counterparty", "debit", "credit", "balance", ""]
    rows = [header] + [
        [
            str(line.seq),
            line.created_at.isoformat(timespec="seconds"),
            line.code,
            line.counterparty,
            decimal_amount(line.debit, asset) if line.debit else "",
            decimal_amount(line.credit, asset) if line.credit else "",
            decimal_amount(line.balance_after, asset),
            "pending" if line.pending else "",
        ]
        for line in lines
    ]
    print("\n".join(table(rows, right_aligned={0, 4, 5, 6})))


# trial-balance ------------------------------------------------------------------------------


def _add_trial_balance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as-of",
        type=aware_timestamp,
        metavar="ISO",
        help="posted transfers up to this instant (default: now)",
    )
    parser.add_argument(
        "--json", action="store_true", help="JSON with amounts as integers in minor units"
    )


async def _trial_balance(engine: AsyncEngine, args: argparse.Namespace) -> int:
    async with engine.connect() as conn:
        lines = await trial_balance(conn, args.as_of)
    document = trial_balance_document(lines, args.as_of)
    if args.json:
        print_json(document)
    else:
        _print_trial_balance(document)
    unbalanced = [entry["asset"] for entry in document["assets"] if entry["total"]["balance"]]
    if unbalanced:
        _error(f"trial balance does not sum to zero for {', '.join(unbalanced)}")
        return EXIT_FAILURE
    return EXIT_OK


def _print_trial_balance(document: dict[str, Any]) -> None:
    if not document["assets"]:
        print("no posted transfers")
        return
    rows = [["asset", "account", "debits", "credits", "balance"]]
    for entry in document["assets"]:
        asset = entry["asset"]
        for line in [*entry["accounts"], {"account": "total", **entry["total"]}]:
            rows.append(
                [
                    asset,
                    line["account"],
                    format_amount(line["debits"], asset),
                    format_amount(line["credits"], asset),
                    format_amount(line["balance"], asset),
                ]
            )
    print("\n".join(table(rows, right_aligned={2, 3, 4})))


# schemas ------------------------------------------------------------------------------------


def _add_schemas_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="schemas_action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export",
        help="write <topic>.schema.json for every topic, and asyncapi.json",
        description="Write the JSON Schema of every consumed and produced topic's event, and "
        "the AsyncAPI document of every topic giftledger reads and writes.",
    )
    export.add_argument("directory", type=Path, metavar="DIR")


def _schemas(args: argparse.Namespace) -> int:
    assert args.schemas_action == "export", args.schemas_action
    for path in export_json_schemas(args.directory):
        print(path)
    asyncapi_path = args.directory / ASYNCAPI_FILE_NAME
    document = asyncapi_document(get_settings().kafka_topic_prefix)
    asyncapi_path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    print(asyncapi_path)
    return EXIT_OK


# demo ---------------------------------------------------------------------------------------


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-wait", action="store_true", help="exit right after the summary instead of serving"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="first remove the embedded database under DATA_DIR (.giftledger/), to start from an "
        "empty ledger; refused when DATABASE_URL is set",
    )


def _demo(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        return asyncio.run(run_demo(settings, wait=not args.no_wait, fresh=args.fresh))
    except FreshStartError as error:
        raise UsageError(str(error)) from error


# run ----------------------------------------------------------------------------------------


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api", action="store_true", help="also serve the finance API on API_HOST:API_PORT"
    )
    parser.add_argument(
        "--payout-rail",
        action="store_true",
        help="also run the simulated bank (answers payouts.requested on payouts.updated)",
    )
    parser.epilog = (
        "Reads KAFKA_BOOTSTRAP_SERVERS (unset: an embedded broker) and DATABASE_URL (unset: the "
        "embedded PostgreSQL, migrated on start). Stops cleanly on SIGTERM or Ctrl-C."
    )


def _run(args: argparse.Namespace) -> int:
    asyncio.run(runner.run(get_settings(), with_payout_rail=args.payout_rail, with_api=args.api))
    return EXIT_OK


# The parser ---------------------------------------------------------------------------------

COMMANDS: list[Command] = [
    Command(
        "demo",
        "run the whole pipeline on a sample stream and print a finance summary",
        _add_demo_arguments,
        _demo,
    ),
    Command(
        "migrate",
        "bring the database schema up to date",
        _add_migrate_arguments,
        on_database(_migrate, schema_required=False),
    ),
    Command(
        "verify",
        "check every ledger invariant; exit 1 if one is broken",
        _add_verify_arguments,
        on_database(_verify),
    ),
    Command(
        "balance", "a creator's balances per asset", _add_balance_arguments, on_database(_balance)
    ),
    Command(
        "eligibility",
        "which Creator Next cash-out rules a creator passes",
        _add_eligibility_arguments,
        on_database(_eligibility),
    ),
    Command(
        "rates",
        "show the rate card and FX versions, or add one",
        _add_rates_arguments,
        on_database(_rates),
    ),
    Command(
        "cashouts",
        "list cash-outs; --stale lists holds the bank has not answered in time",
        _add_cashouts_arguments,
        on_database(_cashouts),
    ),
    Command(
        "statement",
        "an account's transfers with the running balance",
        _add_statement_arguments,
        on_database(_statement),
    ),
    Command(
        "trial-balance",
        "posted debits and credits per account and asset",
        _add_trial_balance_arguments,
        on_database(_trial_balance),
    ),
    Command(
        "schemas",
        "JSON Schemas and the AsyncAPI document of the Kafka topics",
        _add_schemas_arguments,
        _schemas,
    ),
    Command("run", "run the consumers until SIGTERM", _add_run_arguments, _run),
    Command(
        "generate",
        "write a load-test stream and its expected end state",
        loadgen.add_generate_arguments,
        loadgen.generate_command,
    ),
    Command(
        "replay",
        "publish a stream file to Kafka, resumably",
        replay.add_replay_arguments,
        replay.replay_command,
    ),
    Command(
        "loadtest",
        "run a stream through the whole pipeline and check the ledger",
        loadtest.add_loadtest_arguments,
        loadtest.loadtest_command,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="A double-entry PostgreSQL ledger for creator monetisation, fed from Kafka. "
        "Reads DATABASE_URL (unset: an embedded PostgreSQL under .giftledger/).",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log progress to stderr (INFO level)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        subparser = commands.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(subparser)
        subparser.set_defaults(handler=command.handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, or a usage error argparse already printed
        return _exit_code(exit_request.code)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:  # FastStream logs every batch and shutdown step at INFO
        logging.getLogger("faststream").setLevel(logging.WARNING)
    try:
        return int(args.handler(args))
    except (UsageError, SchemaNotCurrentError) as error:
        _error(str(error))
        return EXIT_USAGE
    except (ValidationError, SettingsError) as error:
        for problem in configuration_problems(error):
            _error(f"configuration: {problem}")
        return EXIT_USAGE
    except DatabaseUnavailableError as error:
        _error(str(error))
        return EXIT_FAILURE
    except DBAPIError as error:
        _error(f"database error: {error_reason(error)}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _exit_code(code: str | int | None) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
