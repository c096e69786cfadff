"""What the soak reads from its database while it runs: the events committed in a window of time
with their `commit - occurred_at`, the database's size, and whether a segment has settled.

Commit times come from PostgreSQL itself: the soak's server runs with `track_commit_timestamp`
on, so `pg_xact_commit_timestamp(xmin)` of an `applied_events` row is when the transaction that
applied the event committed (the same transaction as its transfers). A segment's rows are found by
ranges of primary keys (`topic, event_id`) and of the `cashouts_creator_day` index: the soak's
database is created with collation C, so every id of a namespace lies between `<ns>-` and
`<ns>.`.

Every read is retried (`DB_READ_ATTEMPTS_MAX` times, `DB_READ_RETRY_S` apart), so the database
restart in the middle of the soak only delays a reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bench.soak_stream import Segment
from schemas import topics

DB_READ_ATTEMPTS_MAX = 120
DB_READ_RETRY_S = 0.5
TRANSACTION_S_MAX = 600  # a window's events started at most this long before it
RAIL_REPORT_PREFIXES = ("rail:paid:", "rail:failed:", "rail:returned:")
OPEN_STATUSES = ("requested", "held", "submitted")

T = TypeVar("T")

WINDOW = text(
    "SELECT count(*) AS applied, count(*) FILTER (WHERE timed) AS timed,"
    " percentile_disc(0.5) WITHIN GROUP (ORDER BY lateness_ms) FILTER (WHERE timed) AS p50_ms,"
    " percentile_disc(0.99) WITHIN GROUP (ORDER BY lateness_ms) FILTER (WHERE timed) AS p99_ms"
    " FROM (SELECT topic <> :requests AND event_id <> ALL(:sent_late) AS timed,"
    "   1000 * extract(epoch FROM pg_xact_commit_timestamp(xmin) - occurred_at) AS lateness_ms"
    "   FROM applied_events WHERE applied_at >= :started_after"
    "   AND pg_xact_commit_timestamp(xmin) >= :start"
    "   AND pg_xact_commit_timestamp(xmin) < :stop) AS events"
)
RANGE_COUNT = text(
    "SELECT count(*) FROM applied_events"
    " WHERE topic = ANY(:topics) AND event_id >= :low AND event_id < :high"
    " AND starts_with(event_id, :low)"
)
CASHOUT_COUNTS = text(
    "SELECT count(*) AS recorded, count(*) FILTER (WHERE status = ANY(:open)) AS open"
    " FROM cashouts WHERE creator_id >= :low AND creator_id < :high"
    " AND starts_with(creator_id, :low)"
)
UNPUBLISHED = text(
    "SELECT count(*) FROM outbox WHERE published_at IS NULL AND topic_prefix = :topic_prefix"
)
PARKED = text("SELECT count(*) FROM parked_events WHERE topic_prefix = :topic_prefix")


@dataclass(frozen=True, slots=True)
class Window:
    """Events committed in a window: how many (`applied`), and `commit - occurred_at` p50 and
    p99 of those the stream sent when they occurred (`timed`): cash-out requests, which keep
    the generator's days, and the events sent late on purpose are left out."""

    applied: int
    timed: int
    p50_ms: float | None
    p99_ms: float | None


def namespace_range(prefix: str) -> tuple[str, str]:
    """[low, high) holding exactly the texts that start with `prefix` + '-' (collation C)."""
    return prefix + "-", prefix + "."


class SoakDatabase:
    def __init__(self, engine: AsyncEngine, database: str, topic_prefix: str) -> None:
        self.engine = engine
        self.database = database
        self.topic_prefix = topic_prefix

    async def read(self, reading: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """`reading` on a connection, retried while the database is away."""
        for attempt in range(DB_READ_ATTEMPTS_MAX):
            try:
                async with self.engine.connect() as conn:
                    return await reading(conn)
            except (SQLAlchemyError, OSError):
                if attempt + 1 == DB_READ_ATTEMPTS_MAX:
                    raise
                await asyncio.sleep(DB_READ_RETRY_S)
        raise AssertionError("unreachable")

    async def window(
        self, start: datetime, stop: datetime, sent_late: Collection[str] = ()
    ) -> Window:
        """Events committed from `start` to `stop`; `sent_late`: event ids left out of the
        latency."""

        async def reading(conn: AsyncConnection) -> Window:
            row = (
                await conn.execute(
                    WINDOW,
                    {
                        "requests": topics.CASHOUTS_REQUESTED,
                        "sent_late": list(sent_late),
                        "started_after": start - timedelta(seconds=TRANSACTION_S_MAX),
                        "start": start,
                        "stop": stop,
                    },
                )
            ).one()
            return Window(
                int(row.applied),
                int(row.timed),
                None if row.p50_ms is None else float(row.p50_ms),
                None if row.p99_ms is None else float(row.p99_ms),
            )

        return await self.read(reading)

    async def size_bytes(self) -> int:
        async def reading(conn: AsyncConnection) -> int:
            size = await conn.scalar(
                text("SELECT pg_database_size(:name)"), {"name": self.database}
            )
            return int(size or 0)

        return await self.read(reading)

    async def applied(self, segment: Segment) -> int:
        """Events of the segment's namespace applied, the bank's reports on its cash-outs
        included."""
        namespace = segment.namespace

        async def reading(conn: AsyncConnection) -> int:
            low, high = namespace_range(namespace)
            total = await conn.scalar(
                RANGE_COUNT, {"topics": list(topics.CONSUMED_TOPICS), "low": low, "high": high}
            )
            for report_prefix in RAIL_REPORT_PREFIXES:
                low, high = namespace_range(report_prefix + namespace)
                reports = await conn.scalar(
                    RANGE_COUNT, {"topics": [topics.PAYOUTS_UPDATED], "low": low, "high": high}
                )
                total = int(total or 0) + int(reports or 0)
            return int(total or 0)

        return await self.read(reading)

    async def cashouts(self, segment: Segment) -> tuple[int, int]:
        """(cash-outs of the segment's creators recorded, of those still open)."""
        low, high = namespace_range(segment.namespace)

        async def reading(conn: AsyncConnection) -> tuple[int, int]:
            row = (
                await conn.execute(
                    CASHOUT_COUNTS, {"open": list(OPEN_STATUSES), "low": low, "high": high}
                )
            ).one()
            return int(row.recorded), int(row.open)

        return await self.read(reading)

    async def unpublished(self) -> int:
        """Outbox rows of the soak's topics not yet sent."""

        async def reading(conn: AsyncConnection) -> int:
            return int(await conn.scalar(UNPUBLISHED, {"topic_prefix": self.topic_prefix}) or 0)

        return await self.read(reading)

    async def parked(self) -> int:
        """Reversals of the soak's topics still waiting for their gift."""

        async def reading(conn: AsyncConnection) -> int:
            return int(await conn.scalar(PARKED, {"topic_prefix": self.topic_prefix}) or 0)

        return await self.read(reading)

    async def progress(self, segment: Segment) -> SegmentProgress:
        """The segment's events applied and its cash-outs recorded and still open."""
        recorded, still_open = await self.cashouts(segment)
        return SegmentProgress(await self.applied(segment), recorded, still_open)


@dataclass(frozen=True, slots=True)
class SegmentProgress:
    """How far the database is with one segment (`SoakDatabase.progress`)."""

    applied: int  # its namespace's events, the bank's reports on its cash-outs included
    cashouts_recorded: int
    cashouts_open: int

    def settled(self, segment: Segment) -> bool:
        """Every event of the segment applied, the bank's reports included, and every cash-out
        recorded and closed."""
        return (
            self.applied >= sum(segment.expected.applied_by_topic.values())
            and self.cashouts_recorded >= segment.cashout_requests
            and self.cashouts_open == 0
        )
