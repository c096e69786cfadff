"""What every command shares: exit codes, usage errors, the database wrapper, argument types,
who acts, and output helpers."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.migrate import require_current_schema
from ledger.queries import STATEMENT_PAGE_SIZE_MAX
from schemas.assets import format_amount
from schemas.events import OPERATOR_NAME_LENGTH_MAX, OPERATOR_NAME_PATTERN
from services.runtime.database import engine_as_role, open_database
from services.runtime.settings import get_settings

PROGRAM = "giftledger"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
# 128 + SIGPIPE, as a shell reports a command whose reader closed the pipe (`| head`)
EXIT_BROKEN_PIPE = 141
STATEMENT_PAGE_SIZE_DEFAULT = 100
ASYNCAPI_FILE_NAME = "asyncapi.json"
_OPERATOR_NAME = re.compile(OPERATOR_NAME_PATTERN)

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


@asynccontextmanager
async def as_writer(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    """An engine on the same database acting as DATABASE_WRITER_ROLE, for the commands that
    write (`close`, `reconcile`, `rates add`, `rates fx-add`)."""
    settings = get_settings()
    writer = engine_as_role(engine, settings, settings.database_writer_role)
    try:
        yield writer
    finally:
        await writer.dispose()


# Argument types -----------------------------------------------------------------------------


def page_size(value: str) -> int:
    size = integer(value)
    if not 1 <= size <= STATEMENT_PAGE_SIZE_MAX:
        raise argparse.ArgumentTypeError(
            f"page size must be between 1 and {STATEMENT_PAGE_SIZE_MAX}, not {size}"
        )
    return size


def cursor(value: str) -> int:
    position = integer(value)
    if position < 0:
        raise argparse.ArgumentTypeError(f"cursor must not be negative, not {position}")
    return position


def positive_decimal(value: str) -> Fraction:
    """A decimal such as 0.92, read exactly (never through a float)."""
    try:
        number = Fraction(Decimal(value))  # Infinity: OverflowError; NaN: ValueError
    except (InvalidOperation, ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"not a decimal number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value!r}")
    return number


def integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None


# Who acts -----------------------------------------------------------------------------------


def add_actor_argument(parser: argparse.ArgumentParser) -> None:
    """`--as NAME`: who acts, as the operator commands and the commands that change what finance
    reads (`rates add`, `rates fx-add`, `close`) record it."""
    parser.add_argument(
        "--as", dest="actor", metavar="NAME", help="who acts (default: OPERATOR_NAME)"
    )


def acting_operator(args: argparse.Namespace) -> str:
    """The name given by `--as`, else `OPERATOR_NAME`; a usage error (exit 2) without either,
    or for a name the operator actions log would refuse. The command line has no token: the name
    is the word of whoever can reach the database."""
    actor = args.actor or get_settings().operator_name
    if actor is None:
        raise UsageError("who acts? give --as NAME or set OPERATOR_NAME")
    if len(actor) > OPERATOR_NAME_LENGTH_MAX or _OPERATOR_NAME.fullmatch(actor) is None:
        raise UsageError(
            f"operator name {actor!r}: letters, digits and ._@- (at most "
            f"{OPERATOR_NAME_LENGTH_MAX})"
        )
    return str(actor)


# Output helpers -----------------------------------------------------------------------------


def decimal_amount(amount_minor: int, asset: str) -> str:
    """`12500, "DIAMOND"` → `12.500`: format_amount without the asset code."""
    return format_amount(amount_minor, asset).removesuffix(f" {asset}")


def print_json(document: object) -> None:
    print(json.dumps(document, indent=2))


def print_error(message: str) -> None:
    print(f"{PROGRAM}: {message}", file=sys.stderr)
