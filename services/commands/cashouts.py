"""Cash-outs and what decides them: `eligibility`, `rates` (rate cards and FX) and `cashouts`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, get_args

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from schemas.assets import format_amount
from schemas.events import CashoutStatus
from services.cashout.eligibility import creator_eligibility
from services.cashout.store import (
    CashoutKey,
    cashout_cursor,
    cashout_key,
    cashout_list_document,
    list_cashouts,
)
from services.cli_text import aware_timestamp, table
from services.commands.common import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    acting_operator,
    add_actor_argument,
    as_writer,
    integer,
    page_size,
    positive_decimal,
    print_json,
)
from services.operator.freezes import creator_is_known
from services.rates.fx import (
    BASE_CURRENCY,
    FxVersion,
    add_fx_rate,
    decimal_text,
    list_fx_rates,
)
from services.rates.rate_cards import RATE_CARD_NOTICE_S, add_rate_card, load_rate_cards
from services.runtime.settings import get_settings

# eligibility --------------------------------------------------------------------------------


def add_eligibility_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("creator_id", metavar="CREATOR_ID")
    parser.add_argument("--json", action="store_true", help="print the finance API's document")


async def _require_known_creator(conn: AsyncConnection, creator_id: str) -> None:
    """A creator nothing names (`creator_is_known`) is a usage error: exit 2."""
    if not await creator_is_known(conn, creator_id):
        raise UsageError(f"no creator {creator_id!r}: no profile, account or cash-out names it")


async def eligibility_command(engine: AsyncEngine, args: argparse.Namespace) -> int:
    """Which Creator Next rules pass and which fail; exit 0 whatever the verdict."""
    async with engine.connect() as conn:
        await _require_known_creator(conn, args.creator_id)
        report = await creator_eligibility(conn, args.creator_id, get_settings().eligibility)
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


def add_rates_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="list the versions as JSON")
    actions = parser.add_subparsers(dest="rates_action", metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="add the next rate card version",
        description="Add the next rate card version. It must take effect at least "
        f"{RATE_CARD_NOTICE_S} s from now, so every running consumer knows it in time.",
    )
    add.add_argument("--effective-from", type=aware_timestamp, required=True, metavar="ISO")
    add.add_argument("--milli-diamonds-per-coin", type=integer, required=True, metavar="N")
    add.add_argument("--diamonds-per-usd", type=integer, required=True, metavar="N")
    add.add_argument("--note", default="", help="why this version exists")
    add_actor_argument(add)
    fx = actions.add_parser(
        "fx-add",
        help="add an FX rate: units of a currency per 1 USD",
        description="Add an FX rate for cash-outs paid in CURRENCY, taking effect in the future.",
    )
    fx.add_argument("currency", metavar="CURRENCY")
    fx.add_argument("units_per_usd", type=positive_decimal, metavar="UNITS_PER_USD")
    fx.add_argument("--effective-from", type=aware_timestamp, required=True, metavar="ISO")
    add_actor_argument(fx)


async def rates_command(engine: AsyncEngine, args: argparse.Namespace) -> int:
    """Show the rate card and FX versions with who added them, or add one (`rates add`,
    `rates fx-add`) as `--as NAME` (else OPERATOR_NAME)."""
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
            "created_by": card.created_by,
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
    actor = acting_operator(args)
    try:
        async with as_writer(engine) as writer, writer.begin() as conn:
            await add_fx_rate(
                conn, args.currency, args.units_per_usd, args.effective_from, created_by=actor
            )
    except ValueError as error:
        raise UsageError(str(error)) from error
    units = decimal_text(args.units_per_usd)
    print(
        f"{args.currency}: {units} per USD from {args.effective_from.isoformat()}, added by {actor}"
    )
    return EXIT_OK


async def _add_rate_card(engine: AsyncEngine, args: argparse.Namespace) -> int:
    actor = acting_operator(args)
    try:
        async with as_writer(engine) as writer, writer.begin() as conn:
            card = await add_rate_card(
                conn,
                effective_from=args.effective_from,
                milli_diamonds_per_coin=args.milli_diamonds_per_coin,
                diamonds_per_usd=args.diamonds_per_usd,
                note=args.note,
                created_by=actor,
            )
    except ValueError as error:
        raise UsageError(str(error)) from error
    print(
        f"rate card version {card.version} takes effect {card.effective_from.isoformat()},"
        f" added by {actor}"
    )
    return EXIT_OK


def _fx_document(fx: FxVersion) -> dict[str, str | None]:
    return {
        "currency": fx.currency,
        "effective_from": None if fx.effective_from is None else fx.effective_from.isoformat(),
        "units_per_usd": decimal_text(fx.units_per_usd),
        "created_by": fx.created_by,
    }


def _units_text(document: dict[str, str | None]) -> str:
    """A version's units per USD; a USD version other than 1 (an older giftledger let one in)
    is marked as the desk treats it."""
    units = str(document["units_per_usd"])
    if document["currency"] == BASE_CURRENCY and units != "1":
        return f"{units} (ignored: USD is 1)"
    return units


def _who(name: object) -> str:
    """Who added a version; `-` for one added before migration 0031, which kept no name."""
    return "-" if name is None else str(name)


def _print_rate_cards(documents: Sequence[dict[str, Any]]) -> None:
    rows = [
        [
            str(document["version"]),
            str(document["effective_from"] or "always"),
            str(document["milli_diamonds_per_coin"]),
            str(document["diamonds_per_usd"]),
            _who(document["created_by"]),
            str(document["note"]),
        ]
        for document in documents
    ]
    header = [
        "version",
        "effective from",
        "milli-diamonds/coin",
        "diamonds/USD",
        "added by",
        "note",
    ]
    print("\n".join(table([header, *rows], right_aligned={2, 3})))


def _print_fx_rates(documents: Sequence[dict[str, str | None]]) -> None:
    rows = [
        [
            str(document["currency"]),
            document["effective_from"] or "always",
            _units_text(document),
            _who(document["created_by"]),
        ]
        for document in documents
    ]
    header = ["currency", "effective from", "units/USD", "added by"]
    print("\n".join(table([header, *rows], right_aligned={2})))


# cashouts -----------------------------------------------------------------------------------


def _cashout_cursor_argument(value: str) -> CashoutKey:
    try:
        return cashout_key(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_cashouts_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status", choices=get_args(CashoutStatus))
    parser.add_argument("--creator", metavar="CREATOR_ID")
    parser.add_argument(
        "--stale",
        action="store_true",
        help="only holds with no answer from the bank within CASHOUT_ANSWER_WINDOW_S",
    )
    parser.add_argument("--limit", type=page_size, default=100, metavar="N")
    parser.add_argument(
        "--cursor",
        dest="after",
        type=_cashout_cursor_argument,
        metavar="CURSOR",
        help="continue after this cash-out: the 'next cursor' printed by the previous page",
    )
    parser.add_argument(
        "--json", action="store_true", help="the finance API's document (GET /v1/cashouts)"
    )


async def cashouts_command(engine: AsyncEngine, args: argparse.Namespace) -> int:
    """A page of cash-outs, newest first, its next cursor on stderr; `--stale` lists the holds
    waiting too long for the bank (exit 1 if any)."""
    window_s = get_settings().cashout_answer_window_s if args.stale else None
    async with engine.connect() as conn:
        if args.creator is not None:
            await _require_known_creator(conn, args.creator)
        page = await list_cashouts(
            conn,
            status=args.status,
            creator_id=args.creator,
            stale_after_s=window_s,
            after=args.after,
            limit=args.limit,
        )
    found = page.cashouts
    if args.json:
        print_json(cashout_list_document(page))
    else:
        header = ["cashout_id", "creator_id", "status", "amount", "payout", "rule/code"]
        rows = [
            [
                cashout.cashout_id,
                cashout.creator_id,
                cashout.status,
                format_amount(cashout.amount, cashout.asset),
                "-"
                if cashout.payout_amount is None
                else format_amount(cashout.payout_amount, cashout.payout_currency),
                cashout.rejected_rule or cashout.failure_code or "",
            ]
            for cashout in found
        ]
        print("\n".join(table([header, *rows], right_aligned={3, 4})))
    if page.next_after is not None:
        print(f"next cursor: {cashout_cursor(page.next_after)}", file=sys.stderr)
    return EXIT_FAILURE if args.stale and found else EXIT_OK
