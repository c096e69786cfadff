"""The dead letters list: one query for the console's page (`/console/dead-letters`), the command
line (`giftledger dead-letters`) and the finance API (`GET /v1/dead-letters`), and the document
and CSV line the command line and the API write for each dead letter.

A deployment's dead letters (its topic prefix), newest first (`recorded_at`, then `id`, both
descending), filtered by source topic, by error and by a range `[from_time, to_time)` of
`recorded_at`. A page ends at `limit` rows; the next page starts after the last row of this one,
named by its id (`next_cursor`), so paging visits every dead letter of the filter exactly once,
however many share one `recorded_at` (a batch's dead letters are recorded in one transaction).
Every filter is a bound parameter; the connections plan each statement with its values
(`plan_cache_mode = force_custom_plan`), so a filter left out costs nothing and one given is an
index condition: the list reads `dead_letters_newest`, `dead_letters_by_topic_newest` (by topic
alone, migration 0034), `dead_letters_by_error_newest` (by error alone, migration 0032) or
`dead_letters_by_error` (by topic and error), the first three in its order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.api.spreadsheet import spreadsheet_text

DEAD_LETTER_PAGE_SIZE_MAX: Final = 1_000
DETAIL_CHARACTERS_MAX: Final = 4_000

DEAD_LETTER_CSV_COLUMNS: Final = (
    "id",
    "recorded_at",
    "topic",
    "partition",
    "offset",
    "event_id",
    "error",
    "detail",
    "redriven_at",
    "redrive_action_id",
)


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """A dead letter as the lists show it: `detail` cut at `DETAIL_CHARACTERS_MAX` characters;
    `redrive_action_id` and `redriven_at` set once it was re-driven."""

    id: int
    topic: str
    partition: int
    offset: int
    event_id: str | None
    error: str
    detail: str
    recorded_at: datetime
    redrive_action_id: int | None
    redriven_at: datetime | None
    value_sha256: bytes | None


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters a list holds: of `topic` (without the prefix), with `error`, recorded
    in `[from_time, to_time)`; None leaves that filter out."""

    topic: str | None = None
    error: str | None = None
    from_time: datetime | None = None
    to_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    """Up to a page of dead letters, newest first, and the id to continue after (None: none
    left)."""

    rows: list[DeadLetterRow]
    next_cursor: int | None


_SELECT: Final = """
    SELECT d.id, d.topic, d.kafka_partition AS partition, d.kafka_offset AS "offset", d.event_id,
           d.error, left(d.detail, :detail_max) AS detail, d.recorded_at,
           r.operator_action_id AS redrive_action_id, r.redriven_at, d.value_sha256
    FROM dead_letters d
    LEFT JOIN dead_letter_redrives r ON r.dead_letter_id = d.id
    WHERE d.topic_prefix = :prefix
"""

# After the cursor: strictly older than the dead letter it names, in the list's order. An id that
# names no dead letter of the deployment gives an empty page.
_LIST: Final = text(
    _SELECT  # noqa: S608 (constant text)
    + """
      AND (CAST(:topic AS text) IS NULL OR d.topic = :topic)
      AND (CAST(:error AS text) IS NULL OR d.error = :error)
      AND (CAST(:from_time AS timestamptz) IS NULL OR d.recorded_at >= :from_time)
      AND (CAST(:to_time AS timestamptz) IS NULL OR d.recorded_at < :to_time)
      AND (CAST(:after_id AS bigint) IS NULL
           OR (d.recorded_at, d.id) < (SELECT shown.recorded_at, shown.id FROM dead_letters shown
                                       WHERE shown.id = :after_id
                                         AND shown.topic_prefix = :prefix))
    ORDER BY d.recorded_at DESC, d.id DESC
    LIMIT :limit
    """
)
_ONE: Final = text(_SELECT + " AND d.id = :id")


async def list_dead_letters(
    conn: AsyncConnection,
    topic_prefix: str,
    selection: DeadLetterFilter,
    *,
    after_id: int | None = None,
    limit: int,
) -> DeadLetterPage:
    """Up to `limit` dead letters of the deployment `topic_prefix` matching `selection`, newest
    first, after the dead letter `after_id` (None: from the newest)."""
    if not 1 <= limit <= DEAD_LETTER_PAGE_SIZE_MAX:
        raise ValueError(f"limit must be between 1 and {DEAD_LETTER_PAGE_SIZE_MAX}, not {limit}")
    result = await conn.execute(
        _LIST,
        {
            "prefix": topic_prefix,
            "topic": selection.topic,
            "error": selection.error,
            "from_time": selection.from_time,
            "to_time": selection.to_time,
            "after_id": after_id,
            "detail_max": DETAIL_CHARACTERS_MAX,
            "limit": limit + 1,  # one more: whether a next page exists
        },
    )
    rows = [DeadLetterRow(**row._mapping) for row in result]
    if len(rows) > limit:
        return DeadLetterPage(rows[:limit], rows[limit - 1].id)
    return DeadLetterPage(rows, None)


async def load_dead_letter(
    conn: AsyncConnection, topic_prefix: str, dead_letter_id: int
) -> DeadLetterRow | None:
    """One dead letter of the deployment, as the list shows it; None when it has no such id."""
    row = (
        await conn.execute(
            _ONE,
            {"prefix": topic_prefix, "id": dead_letter_id, "detail_max": DETAIL_CHARACTERS_MAX},
        )
    ).first()
    return None if row is None else DeadLetterRow(**row._mapping)


# What the command line and the API write ----------------------------------------------------


def _time_text(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def dead_letter_document(row: DeadLetterRow) -> dict[str, Any]:
    """`GET /v1/dead-letters`' entry (`DeadLetterEntry`), as `giftledger dead-letters --json`
    prints it."""
    return {
        "id": row.id,
        "topic": row.topic,
        "source": {"partition": row.partition, "offset": row.offset},
        "event_id": row.event_id,
        "error": row.error,
        "detail": row.detail,
        "recorded_at": row.recorded_at.isoformat(),
        "redriven_at": _time_text(row.redriven_at),
        "redrive_action_id": row.redrive_action_id,
    }


def dead_letter_list_document(page: DeadLetterPage) -> dict[str, Any]:
    """`GET /v1/dead-letters`' answer (`DeadLetterListDocument`)."""
    return {
        "dead_letters": [dead_letter_document(row) for row in page.rows],
        "next_cursor": page.next_cursor,
    }


def dead_letter_csv_row(row: DeadLetterRow) -> list[object]:
    """One dead letter as the values of `DEAD_LETTER_CSV_COLUMNS` (empty for a null)."""
    return [
        row.id,
        row.recorded_at.isoformat(),
        row.topic,
        row.partition,
        row.offset,
        spreadsheet_text(row.event_id or ""),
        row.error,
        spreadsheet_text(row.detail),
        _time_text(row.redriven_at) or "",
        "" if row.redrive_action_id is None else row.redrive_action_id,
    ]
