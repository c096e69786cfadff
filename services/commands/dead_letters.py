"""`giftledger dead-letters`: the inputs that could not be applied, newest first, the list of the
console's dead letters page and of `GET /v1/dead-letters` (`services.api.dead_letters`).

    giftledger dead-letters [--topic TOPIC] [--error ERROR] [--from ISO] [--to ISO]
                            [--limit N] [--cursor ID] [--json | --csv]

A table by default (detail cut short, control characters shown escaped); `--json` prints the
API's document and `--csv` its CSV, nothing else on stdout. When more dead letters match than
`--limit`, the cursor of the next page goes to stderr (`next cursor: ID`).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from datetime import UTC, datetime
from typing import Final

from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.events import RULE_NAME_LENGTH_MAX, VISIBLE_ASCII_PATTERN
from schemas.topics import CONSUMED_TOPICS
from services.api.dead_letters import (
    DEAD_LETTER_CSV_COLUMNS,
    DEAD_LETTER_PAGE_SIZE_MAX,
    DeadLetterFilter,
    DeadLetterRow,
    dead_letter_csv_row,
    dead_letter_list_document,
    list_dead_letters,
)
from services.cli_text import aware_timestamp, table
from services.commands.common import (
    EXIT_OK,
    Command,
    UsageError,
    cursor,
    on_database,
    page_size,
    print_json,
)
from services.runtime.settings import get_settings

LIMIT_DEFAULT: Final = 100
DETAIL_SHOWN_CHARACTERS_MAX: Final = 60
_ERROR_NAME = re.compile(VISIBLE_ASCII_PATTERN)


def _error_name(value: str) -> str:
    """An error as dead letters record it: 1 to 64 visible ASCII characters."""
    if len(value) > RULE_NAME_LENGTH_MAX or _ERROR_NAME.fullmatch(value) is None:
        raise argparse.ArgumentTypeError(
            f"an error is 1 to {RULE_NAME_LENGTH_MAX} visible ASCII characters, e.g. "
            f"schema_violation, not {value!r}"
        )
    return value


def add_dead_letters_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", choices=CONSUMED_TOPICS, help="the source topic, no prefix")
    parser.add_argument(
        "--error",
        type=_error_name,
        metavar="ERROR",
        help="e.g. schema_violation, event_id_conflict",
    )
    parser.add_argument(
        "--from",
        dest="from_time",
        type=aware_timestamp,
        metavar="ISO",
        help="recorded at or after (ISO 8601 with a time zone)",
    )
    parser.add_argument(
        "--to",
        dest="to_time",
        type=aware_timestamp,
        metavar="ISO",
        help="recorded before (ISO 8601 with a time zone)",
    )
    parser.add_argument(
        "--limit",
        type=page_size,
        default=LIMIT_DEFAULT,
        metavar="N",
        help=f"at most N, 1 to {DEAD_LETTER_PAGE_SIZE_MAX} (default {LIMIT_DEFAULT})",
    )
    parser.add_argument(
        "--cursor",
        type=cursor,
        default=0,
        metavar="ID",
        help="continue after this dead letter: the 'next cursor' printed by the previous page",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="the finance API's document")
    output.add_argument("--csv", action="store_true", help="the finance API's CSV")


async def dead_letters_command(engine: AsyncEngine, args: argparse.Namespace) -> int:
    """A page of dead letters, newest first; exit 0 whether any matched or none."""
    if args.from_time and args.to_time and args.from_time >= args.to_time:
        raise UsageError("--from must be before --to")
    selection = DeadLetterFilter(
        topic=args.topic, error=args.error, from_time=args.from_time, to_time=args.to_time
    )
    async with engine.connect() as conn:
        page = await list_dead_letters(
            conn,
            get_settings().kafka_topic_prefix,
            selection,
            after_id=args.cursor or None,
            limit=args.limit,
        )
    if args.json:
        print_json(dead_letter_list_document(page))
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(DEAD_LETTER_CSV_COLUMNS)
        writer.writerows(dead_letter_csv_row(row) for row in page.rows)
    elif page.rows:
        print("\n".join(_table_lines(page.rows)))
    else:
        print("no dead letters")
    if page.next_cursor is not None:
        print(f"next cursor: {page.next_cursor}", file=sys.stderr)
    return EXIT_OK


# Text ---------------------------------------------------------------------------------------


def _shown(value: str, characters_max: int | None = None) -> str:
    """A value from a record as one line of plain text: what a terminal would act on (escape
    sequences, line breaks) written escaped, cut at `characters_max` characters."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
    if characters_max is not None and len(shown) > characters_max:
        return shown[: characters_max - 3] + "..."
    return shown


def _moment(moment: datetime | None) -> str:
    """In UTC to the second, as the console shows it; `no` for a dead letter not re-driven."""
    if moment is None:
        return "no"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table_lines(rows: list[DeadLetterRow]) -> list[str]:
    header = ["id", "recorded", "topic", "place", "event_id", "error", "detail", "re-driven"]
    lines = [
        [
            str(row.id),
            _moment(row.recorded_at),
            row.topic,
            f"{row.partition}/{row.offset}",
            _shown(row.event_id or ""),
            _shown(row.error),
            _shown(row.detail, DETAIL_SHOWN_CHARACTERS_MAX),
            _moment(row.redriven_at),
        ]
        for row in rows
    ]
    return table([header, *lines], right_aligned={0})


COMMANDS: list[Command] = [
    Command(
        "dead-letters",
        "list dead letters (inputs that could not be applied), newest first",
        add_dead_letters_arguments,
        on_database(dead_letters_command),
    ),
]
