"""`giftledger`: the command line.

Each command is one `Command` in `COMMANDS`: a name, a one-line help, a function that adds its
arguments and a handler that returns the exit code. Adding a command is one function pair and one
line in that list.

Exit codes: 0 success, 1 a failure (the database is unreachable, `verify` found a problem), 2 a
usage error (a bad argument, an account or creator that does not exist, a configuration variable
that does not parse, a database without the current schema, a login that lacks a privilege
`migrate` needs), 141 the reader of stdout closed the pipe before the output ended (`| head`:
128 + SIGPIPE, as a shell reports it). Amounts are integers in the asset's minor unit everywhere
a program reads them (`--json`, `--csv`); text output shows them as decimals in the major unit.
`--json` and `--csv` write nothing else on stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
import time

from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.exc import DBAPIError

from ledger.migrate import MigrationPrivilegeError, SchemaNotCurrentError
from services.commands import (
    books,
    cashouts,
    dead_letters,
    loadtest_tools,
    offsets,
    operator,
    reconcile,
    reports,
    service,
)
from services.commands.common import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROGRAM,
    Command,
    UsageError,
    on_database,
    print_error,
)
from services.loadtest import generator as loadgen
from services.loadtest import replay
from services.loadtest import run as loadtest
from services.runtime.database import DatabaseUnavailableError, ServicesLoginError, error_reason
from services.runtime.embedded_broker import BrokerUnavailableError, EmbeddedBrokerError
from services.runtime.listening import ListenError
from services.runtime.settings import configuration_problems

COMMANDS: list[Command] = [
    Command(
        "demo",
        "run the whole pipeline on a sample stream and print a finance summary",
        service.add_demo_arguments,
        service.demo_command,
    ),
    Command(
        "migrate",
        "bring the database schema up to date",
        books.add_migrate_arguments,
        on_database(books.migrate_command, schema_required=False),
    ),
    Command(
        "verify",
        "check every ledger invariant; exit 1 if one is broken",
        books.add_verify_arguments,
        on_database(books.verify_command),
    ),
    Command(
        "balance",
        "a creator's balances per asset",
        books.add_balance_arguments,
        on_database(books.balance_command),
    ),
    Command(
        "eligibility",
        "which Creator Next cash-out rules a creator passes",
        cashouts.add_eligibility_arguments,
        on_database(cashouts.eligibility_command),
    ),
    Command(
        "rates",
        "show the rate card and FX versions, or add one",
        cashouts.add_rates_arguments,
        on_database(cashouts.rates_command),
    ),
    Command(
        "cashouts",
        "list cash-outs; --stale lists holds the bank has not answered in time",
        cashouts.add_cashouts_arguments,
        on_database(cashouts.cashouts_command),
    ),
    *dead_letters.COMMANDS,
    Command(
        "operator",
        "operator actions: adjustments with four eyes, freezes, and their audit log",
        operator.add_operator_arguments,
        on_database(operator.operator_command),
    ),
    Command(
        "offsets",
        "after a database restore, rewind the consumer groups to what the database holds",
        offsets.add_offsets_arguments,
        on_database(offsets.offsets_command),
    ),
    Command(
        "statement",
        "an account's transfers with the running balance",
        books.add_statement_arguments,
        on_database(books.statement_command),
    ),
    Command(
        "trial-balance",
        "posted debits and credits per account and asset",
        books.add_trial_balance_arguments,
        on_database(books.trial_balance_command),
    ),
    *reports.COMMANDS,
    *reconcile.COMMANDS,
    Command(
        "schemas",
        "JSON Schemas and the AsyncAPI document of the Kafka topics",
        service.add_schemas_arguments,
        service.schemas_command,
    ),
    Command(
        "run", "run the consumers until SIGTERM", service.add_run_arguments, service.run_command
    ),
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
    *loadtest_tools.COMMANDS,
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


# Each line: when (UTC, milliseconds), level, logger, message.
LOG_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
TRACEBACK_INDENT = "    "


class _LineFormatter(logging.Formatter):
    """One line a record, whoever logs it: line breaks in a message are written as `\\n`, and
    a traceback's lines follow the record's, each indented, so every line that does not start
    with a space starts a record (what `grep`, the soak's tally and log shippers go by)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging.Formatter's)
        # `format` sets `record.message` afresh for every formatter, so this changes no other.
        record.message = record.message.replace("\r", "\\r").replace("\n", "\\n")
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        line, _, after = super().format(record).partition("\n")
        if not after:
            return line
        return line + "\n" + textwrap.indent(after, TRACEBACK_INDENT, lambda _: True)


def _log_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    formatter = _LineFormatter(LOG_FORMAT, LOG_DATE_FORMAT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    return handler


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, or a usage error argparse already printed
        return _exit_code(exit_request.code)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        handlers=[_log_handler()],
    )
    if not args.verbose:  # FastStream logs every batch and shutdown step at INFO
        logging.getLogger("faststream").setLevel(logging.WARNING)
    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # what is still buffered meets a closed pipe here, not at exit
        return code
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE
    except (
        UsageError,
        SchemaNotCurrentError,
        MigrationPrivilegeError,
        ServicesLoginError,
    ) as error:
        print_error(str(error))
        return EXIT_USAGE
    except (ValidationError, SettingsError) as error:
        for problem in configuration_problems(error):
            print_error(f"configuration: {problem}")
        return EXIT_USAGE
    except (
        DatabaseUnavailableError,
        BrokerUnavailableError,
        EmbeddedBrokerError,
        ListenError,
    ) as error:
        print_error(str(error))
        return EXIT_FAILURE
    except DBAPIError as error:
        print_error(f"database error: {error_reason(error)}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _stdout_to_devnull() -> None:
    """The reader of stdout has gone (`giftledger statement --csv | head -1`): what is left in
    stdout's buffer goes nowhere, so that the interpreter's last flush does not fail again and
    print a traceback, as the Python documentation advises for SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _exit_code(code: str | int | None) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
