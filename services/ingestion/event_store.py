"""What the ingestion stores beside the ledger, in the caller's transaction: which events were
applied (with their payload hash), which events are parked waiting for what they refer to (a
reversal for its gift, a payout result for its cash-out's request), and which records were
dead-lettered. Every row is keyed by the deployment's topic prefix where two deployments could
share the database."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.service import is_duplicate_key
from schemas import topics
from schemas.events import GiftReversed, PayoutUpdated
from services.ingestion.records import (
    BatchReport,
    DeadLetter,
    InputRecord,
    ParsedEvent,
    headers_from_json,
    headers_json,
    is_dead_lettered_record,
    parse_record,
    value_sha256,
)
from services.runtime.settings import PAYOUT_PARK_COUNT_MAX_DEFAULT, PAYOUT_PARK_S_DEFAULT

PARKED_READ_COUNT_MAX = 1_000
# How long a sweep keeps the parked rows it took: the sweeps of other processes skip them until
# then, unless the sweep that took them takes them again first (it does every second while its
# process runs); so a process that stops leaves its rows to the others after this long.
PARKED_CLAIM_S = 30.0
SWEEPER_ID_LENGTH_MAX = 200
# The topics whose events may be parked: a reversal waits for its gift, a payout result for its
# cash-out (whose request can be read after it: after a restore, each topic is read again by its
# own consumer group, nothing orders the two).
PARKING_TOPICS = frozenset({topics.GIFTS_REVERSED, topics.PAYOUTS_UPDATED})
# How a parked payout result names its cash-out in `waiting_for`: `cashout <cashout_id>`.
WAITING_FOR_CASHOUT = "cashout "


# Which of a batch's event ids were applied, with their payload hash and occurred_at: one
# primary-key probe per id, whatever the table's statistics say. Written as
# `topic = :topic AND event_id = ANY(:ids)`, the planner, until the table's first ANALYZE, read
# every row of the topic and filtered them: 45-75 ms a batch at 300,000 applied events, growing
# with the table, against 3-5 ms for the probes.
SELECT_APPLIED = text(
    """
    SELECT wanted.event_id, a.payload_sha256, a.occurred_at
    FROM unnest(CAST(:ids AS text[])) AS wanted(event_id)
    CROSS JOIN LATERAL (
        SELECT payload_sha256, occurred_at FROM applied_events
        WHERE topic = :topic AND event_id = wanted.event_id
        LIMIT 1
    ) a
    """
)
# Record a batch's events as applied: `_INSERT_APPLIED` inserts every one, the usual case, and
# fails on a key recorded already; `_CLAIM_APPLIED` inserts each unless its event_id is recorded
# already (a redelivery, or another consumer's transaction that committed meanwhile: the insert
# waits for it) and returns the event_ids it did not insert (`_insert_applied` runs the first,
# and the second only when the first fails).
#
# Most columns come as one value each rather than an array: asyncpg checks every element of an
# array parameter against `collections.abc.Iterable` in Python (about a fifth of a microsecond),
# which these columns would pay per event. Ids and Kafka positions are joined by spaces (an
# id is visible ASCII, `schemas.events.VISIBLE_ASCII_PATTERN`: never a space; no creator is
# written as ''), the hashes concatenated.
_WANTED_APPLIED = """
    WITH wanted AS (
        SELECT u.event_id,
               substring(CAST(:hashes AS bytea) FROM CAST(u.position AS integer) * 32 - 31
                         FOR 32) AS payload_sha256,
               NULLIF(u.creator_id, '') AS creator_id, u.occurred_at, u.kafka_partition,
               u.kafka_offset
        FROM unnest(
            string_to_array(CAST(:event_ids AS text), ' '),
            string_to_array(CAST(:creator_ids AS text), ' '),
            CAST(:occurred_at AS timestamptz[]),
            CAST(string_to_array(CAST(:partitions AS text), ' ') AS integer[]),
            CAST(string_to_array(CAST(:offsets AS text), ' ') AS bigint[])
        ) WITH ORDINALITY
            AS u(event_id, creator_id, occurred_at, kafka_partition, kafka_offset, position)
    )"""
_INSERT_APPLIED = text(
    _WANTED_APPLIED  # noqa: S608 (constant text: the values are bound parameters)
    + """
    INSERT INTO applied_events (topic, event_id, payload_sha256, creator_id,
                                occurred_at, kafka_partition, kafka_offset)
    SELECT :topic, * FROM wanted
    """
)
_CLAIM_APPLIED = text(
    _WANTED_APPLIED  # noqa: S608 (constant text: the values are bound parameters)
    + """, inserted AS (
        INSERT INTO applied_events (topic, event_id, payload_sha256, creator_id,
                                    occurred_at, kafka_partition, kafka_offset)
        SELECT :topic, * FROM wanted
        ON CONFLICT (topic, event_id) DO NOTHING
        RETURNING event_id
    )
    SELECT wanted.event_id FROM wanted
    WHERE NOT EXISTS (SELECT 1 FROM inserted WHERE inserted.event_id = wanted.event_id)
    """
)


def _take_parked_statement(ready: str) -> TextClause:
    """The oldest parked rows of a topic that no other sweep holds (a claim that ran out holds
    nothing) and that meet `ready` (SQL on the row `p`), locked as they are found; rows another
    sweep is locking at that moment are skipped. They are taken for this sweep until
    `claimed_until`."""
    return text(
        f"""
        WITH free AS (
            SELECT p.topic_prefix, p.topic, p.event_id
            FROM parked_events p
            WHERE p.topic = :topic AND p.topic_prefix = :prefix
              AND (p.claimed_until IS NULL OR p.claimed_until <= clock_timestamp()
                   OR p.claimed_by = :sweeper)
              AND ({ready})
            ORDER BY p.parked_at, p.kafka_partition, p.kafka_offset
            LIMIT :limit
            FOR UPDATE OF p SKIP LOCKED
        )
        UPDATE parked_events p
        SET claimed_by = :sweeper,
            claimed_until = clock_timestamp() + make_interval(secs => CAST(:claim_s AS float8))
        FROM free
        WHERE p.topic_prefix = free.topic_prefix AND p.topic = free.topic
          AND p.event_id = free.event_id
        RETURNING p.event_id, p.payload, p.headers, p.kafka_partition, p.kafka_offset,
                  p.retry_until, p.parked_at, p.message_key
        """  # noqa: S608 (`ready` is one of the constants below)
    )


# Reversals: every parked one, oldest first.
_TAKE_PARKED = _take_parked_statement("TRUE")
# Payout results: only those with something to decide, their cash-out's request arrived (its
# row exists) or their wait over. The others would only be found waiting again, and in front of
# the rest they could keep a result whose cash-out has arrived from ever being taken: a parked
# result waits up to PAYOUT_PARK_S, and the parking holds up to PAYOUT_PARK_COUNT_MAX of them,
# more than one sweep takes. One primary-key probe of `cashouts` a parked row.
_TAKE_READY_RESULTS = _take_parked_statement(
    """p.retry_until <= clock_timestamp()
               OR EXISTS (
                   SELECT 1 FROM cashouts c
                   WHERE starts_with(p.waiting_for, :waiting_prefix)
                     AND c.cashout_id = substr(p.waiting_for, length(:waiting_prefix) + 1))"""
)
# The parked events of a topic that wait for any of `waits`, with their place in the parking's
# order (payout results: by their cash-out). Read from the primary key's range of the topic,
# which the parking's bound keeps small, and which usually holds nothing.
_PARKED_WAITING_FOR = text(
    """
    SELECT event_id, waiting_for, parked_at, kafka_partition, kafka_offset
    FROM parked_events
    WHERE topic_prefix = :prefix AND topic = :topic
      AND waiting_for = ANY(CAST(:waits AS text[]))
    """
)
_COUNT_PARKED = text(
    "SELECT count(*) FROM parked_events WHERE topic_prefix = :prefix AND topic = :topic"
)
_SELECT_PARKED = text(
    """
    SELECT wanted.event_id, p.payload
    FROM unnest(CAST(:ids AS text[])) AS wanted(event_id)
    CROSS JOIN LATERAL (
        SELECT payload FROM parked_events
        WHERE topic_prefix = :prefix AND topic = :topic AND event_id = wanted.event_id
        LIMIT 1
    ) p
    """
)


_LOCK_PARKED = text(
    """
    SELECT event_id FROM parked_events
    WHERE topic_prefix = :prefix AND topic = :topic AND event_id = ANY(CAST(:ids AS text[]))
    ORDER BY event_id
    FOR UPDATE
    """
)

# The dead letters of one deployment and topic within offset ranges, one a partition, each read
# from `dead_letters_source` (migration 0040). The range's lookup is a LATERAL subquery kept from
# being pulled up into a join (`OFFSET 0`): as a join, with the ranges estimated at 10 rows, the
# planner hashed them and read every dead letter of the topic (54 ms a batch with 200,000 dead
# letters, against well under 1 ms).
_DEAD_LETTERED_IN_RANGES = text(
    """
    SELECT d.kafka_partition, d.kafka_offset, d.event_id, d.error, d.detail, d.value_sha256
    FROM unnest(CAST(:partitions AS integer[]), CAST(:firsts AS bigint[]),
                CAST(:lasts AS bigint[])) AS r(kafka_partition, first_offset, last_offset)
    CROSS JOIN LATERAL (
        SELECT d.kafka_partition, d.kafka_offset, d.event_id, d.error, d.detail,
               d.value_sha256
        FROM dead_letters d
        WHERE d.topic_prefix = :prefix AND d.topic = :topic
          AND d.kafka_partition = r.kafka_partition
          AND d.kafka_offset BETWEEN r.first_offset AND r.last_offset
        OFFSET 0
    ) d
    """
)


# A batch's dead letters, each unless its record has its row already: the same value at the same
# place (`dead_letters_source`: ON CONFLICT, which also waits for another consumer inserting
# it), or, for a row recorded before value hashes were (migration 0030), the same event_id there.
_INSERT_DEAD_LETTERS = text(
    """
    INSERT INTO dead_letters (topic_prefix, topic, kafka_partition, kafka_offset,
                              event_id, error, detail, value_sha256)
    SELECT :prefix, :topic, l.kafka_partition, l.kafka_offset, l.event_id, l.error, l.detail,
           l.value_sha256
    FROM unnest(CAST(:partitions AS integer[]), CAST(:offsets AS bigint[]),
                CAST(:event_ids AS text[]), CAST(:errors AS text[]),
                CAST(:details AS text[]), CAST(:hashes AS bytea[]))
        AS l(kafka_partition, kafka_offset, event_id, error, detail, value_sha256)
    WHERE NOT EXISTS (
        SELECT 1 FROM dead_letters d
        WHERE d.topic_prefix = :prefix AND d.topic = :topic
          AND d.kafka_partition = l.kafka_partition AND d.kafka_offset = l.kafka_offset
          AND d.value_sha256 IS NULL AND d.event_id = l.event_id
    )
    ON CONFLICT DO NOTHING
    RETURNING kafka_partition, kafka_offset, value_sha256
    """
)


def offset_ranges(records: Sequence[InputRecord]) -> tuple[list[int], list[int], list[int]]:
    """The batch's partitions, and each one's first and last offset in it (whatever the order
    of the records): about 0.1 µs a record, where the arrays of every record's partition and
    offset cost the driver's encoding some 0.6 µs a record."""
    firsts: dict[int, int] = {}
    lasts: dict[int, int] = {}
    for record in records:
        partition, offset = record.partition, record.offset
        if firsts.setdefault(partition, offset) > offset:
            firsts[partition] = offset
        if lasts.setdefault(partition, offset) < offset:
            lasts[partition] = offset
    partitions = list(firsts)
    return partitions, [firsts[p] for p in partitions], [lasts[p] for p in partitions]


class EventStore:
    """The applied, parked and dead-lettered events of one deployment (its topic prefix)."""

    def __init__(
        self,
        topic_prefix: str,
        park_s: float,
        *,
        payout_park_s: float = PAYOUT_PARK_S_DEFAULT,
        payout_park_count_max: int = PAYOUT_PARK_COUNT_MAX_DEFAULT,
        sweeper_id: str | None = None,
        parked_claim_s: float = PARKED_CLAIM_S,
    ) -> None:
        if parked_claim_s <= 0:
            raise ValueError("parked_claim_s must be positive")
        if payout_park_s < 0 or payout_park_count_max < 1:
            raise ValueError("payout_park_s must be 0 or more, payout_park_count_max 1 or more")
        self.topic_prefix = topic_prefix
        # How long a reversal waits for its gift.
        self.park_s = park_s
        # How long a payout result waits for its cash-out (0: it does not), and how many of this
        # deployment's may wait at once.
        self.payout_park_s = payout_park_s
        self.payout_park_count_max = payout_park_count_max
        # Who takes parked rows through this store (host, process, a random part).
        self.sweeper_id = (
            sweeper_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )[:SWEEPER_ID_LENGTH_MAX]
        self.parked_claim_s = parked_claim_s

    async def read_parked(
        self, conn: AsyncConnection, topic: str, limit: int = PARKED_READ_COUNT_MAX
    ) -> list[ParsedEvent]:
        """Take the oldest events of `topic` this deployment parked, for `parked_claim_s`, and
        return them parsed again, each with the deadline of its wait.

        The rows are taken in one statement, committed on `conn` (a reading connection, as
        `Ingestor.retry_parked` opens), so the sweeps of other processes skip them while this one
        retries them: rows another sweep is taking at that moment are skipped (`SKIP LOCKED`), and
        so are rows another sweep took within its claim. This store takes back its own rows."""
        if not 1 <= limit <= PARKED_READ_COUNT_MAX:
            raise ValueError(f"limit must be between 1 and {PARKED_READ_COUNT_MAX}")
        if topic == topics.PAYOUTS_UPDATED:
            statement = _TAKE_READY_RESULTS
            parameters = {
                **self._take_parameters(topic, limit),
                "waiting_prefix": WAITING_FOR_CASHOUT,
            }
        else:
            statement, parameters = _TAKE_PARKED, self._take_parameters(topic, limit)
        taken = (await conn.execute(statement, parameters)).all()
        await conn.commit()
        # In the order they were parked, and by their Kafka position within a batch: a cash-out's
        # results are decided in the order they came.
        rows = sorted(
            taken,
            key=lambda row: (row.parked_at, row.kafka_partition, row.kafka_offset, row.event_id),
        )
        parsed: list[ParsedEvent] = []
        for row in rows:
            record = InputRecord(
                topic,
                row.kafka_partition,
                row.kafka_offset,
                None if row.message_key is None else bytes(row.message_key),
                bytes(row.payload),
                headers_from_json(row.headers),
            )
            outcome = parse_record(topic, record)
            assert not isinstance(outcome, DeadLetter), "only valid events are parked"
            outcome.from_parking = True
            outcome.parked_until = row.retry_until
            parsed.append(outcome)
        return parsed

    def _take_parameters(self, topic: str, limit: int) -> dict[str, object]:
        return {
            "topic": topic,
            "prefix": self.topic_prefix,
            "limit": limit,
            "sweeper": self.sweeper_id,
            "claim_s": self.parked_claim_s,
        }

    async def drop_applied(
        self, conn: AsyncConnection, topic: str, items: list[ParsedEvent], report: BatchReport
    ) -> list[ParsedEvent]:
        """Keep the items seen for the first time. Each copy of an event_id already applied,
        parked, or earlier in this batch is a duplicate when its payload hash matches, else a
        conflict. The ingestor gives a handler no event_id twice (`decision_runs`), since an
        item kept here may yet be refused, and then was not seen: so the verdict is the same
        wherever Kafka happened to cut the batches."""
        if not items:
            return []
        ids = [item.event.event_id for item in items]
        rows = await conn.execute(SELECT_APPLIED, {"topic": topic, "ids": ids})
        known = {row.event_id: bytes(row.payload_sha256) for row in rows}
        if topic in PARKING_TOPICS:
            known = {**await self._parked_hashes(conn, topic, items), **known}
        fresh: list[ParsedEvent] = []
        for item in items:
            stored_hash = known.get(item.event.event_id)
            if stored_hash is None:
                fresh.append(item)
                known[item.event.event_id] = item.payload_sha256
            elif stored_hash == item.payload_sha256:
                report.duplicates += 1
            else:
                report.dead_letters.append(
                    DeadLetter(
                        item.record,
                        "event_id_conflict",
                        "event_id already seen with a different payload",
                        item.event.event_id,
                    )
                )
        return fresh

    async def occurred_at_of(
        self, conn: AsyncConnection, topic: str, event_ids: list[str]
    ) -> dict[str, datetime]:
        """The `occurred_at` of each of `event_ids` applied on `topic`; those not applied are
        left out."""
        if not event_ids:
            return {}
        rows = await conn.execute(SELECT_APPLIED, {"topic": topic, "ids": event_ids})
        return {row.event_id: row.occurred_at for row in rows}

    async def claim_applied(
        self, conn: AsyncConnection, topic: str, items: list[ParsedEvent], report: BatchReport
    ) -> list[ParsedEvent]:
        """`drop_applied` and `record_applied` of the items kept, in one insert (two when one
        was recorded already: `_insert_applied`), for a topic whose every new event is applied
        (gifts): the same items kept, the same duplicates and conflicts, the same rows. Not for
        reversals and payout results, whose parked events count as seen."""
        assert topic not in PARKING_TOPICS, "parked events count as seen too"
        if not items:
            return []
        firsts: dict[str, ParsedEvent] = {}
        for item in items:
            firsts.setdefault(item.event.event_id, item)
        candidates = list(firsts.values())
        not_inserted = await _insert_applied(conn, _claim_parameters(topic, candidates))
        stored: dict[str, bytes] = {}
        if not_inserted:
            found = await conn.execute(SELECT_APPLIED, {"topic": topic, "ids": not_inserted})
            stored = {row.event_id: bytes(row.payload_sha256) for row in found}
            # An event is not inserted only when its row is committed, and applied events are
            # never removed: this statement, with a newer snapshot, finds every one.
            assert len(stored) == len(not_inserted), "an applied event went missing"
        fresh: list[ParsedEvent] = []
        for item in items:
            event_id = item.event.event_id
            first = firsts[event_id]
            if item is first and event_id not in stored:
                fresh.append(item)
            elif item.payload_sha256 == stored.get(event_id, first.payload_sha256):
                report.duplicates += 1
            else:
                report.dead_letters.append(
                    DeadLetter(
                        item.record,
                        "event_id_conflict",
                        "event_id already seen with a different payload",
                        event_id,
                    )
                )
        return fresh

    async def _parked_hashes(
        self, conn: AsyncConnection, topic: str, items: list[ParsedEvent]
    ) -> dict[str, bytes]:
        """Payload hashes of events this deployment parked that these items (not the parked
        ones) repeat."""
        ids = [item.event.event_id for item in items if not item.from_parking]
        if not ids:
            return {}
        rows = await conn.execute(
            _SELECT_PARKED, {"prefix": self.topic_prefix, "topic": topic, "ids": ids}
        )
        hashes: dict[str, bytes] = {}
        for row in rows:
            parked = parse_record(topic, InputRecord(topic, 0, 0, None, bytes(row.payload)))
            assert not isinstance(parked, DeadLetter), "only valid events are parked"
            hashes[row.event_id] = parked.payload_sha256
        return hashes

    async def park(
        self, conn: AsyncConnection, topic: str, items: list[ParsedEvent], now: datetime
    ) -> None:
        """Park events until what they wait for arrives (`waiting_for`) or their wait from `now`
        is over: reversals for `park_s`, payout results for `payout_park_s`."""
        if not items:
            return
        wait_s = self.payout_park_s if topic == topics.PAYOUTS_UPDATED else self.park_s
        await conn.execute(
            text(
                """
                INSERT INTO parked_events (topic_prefix, topic, event_id, payload, headers,
                                           kafka_partition, kafka_offset, waiting_for, retry_until,
                                           message_key)
                SELECT :prefix, :topic, * FROM unnest(
                    CAST(:event_ids AS text[]), CAST(:payloads AS bytea[]),
                    CAST(:headers AS text[])::jsonb[], CAST(:partitions AS integer[]),
                    CAST(:offsets AS bigint[]), CAST(:waiting_for AS text[]),
                    CAST(:retry_until AS timestamptz[]), CAST(:keys AS bytea[]))
                ON CONFLICT (topic_prefix, topic, event_id) DO NOTHING
                """
            ),
            {
                "prefix": self.topic_prefix,
                "topic": topic,
                "event_ids": [item.event.event_id for item in items],
                "payloads": [item.record.value for item in items],
                "headers": [headers_json(item.record.headers) for item in items],
                "partitions": [item.record.partition for item in items],
                "offsets": [item.record.offset for item in items],
                "waiting_for": [waiting_for(item) for item in items],
                "retry_until": [now + timedelta(seconds=wait_s)] * len(items),
                "keys": [item.record.key for item in items],
            },
        )

    async def park_results(
        self, conn: AsyncConnection, items: list[ParsedEvent], now: datetime
    ) -> tuple[list[ParsedEvent], list[ParsedEvent]]:
        """Park payout results, in their order, while this deployment's parked results number
        fewer than `payout_park_count_max`; returns those parked and those left out for want of
        room (for the caller to dead-letter). The count is read as the batch parks: batches
        parking at the same moment in other transactions each see the others' rows only once
        committed, so the parking can pass its bound by what they park together."""
        if not items:
            return [], []
        count = await conn.scalar(
            _COUNT_PARKED, {"prefix": self.topic_prefix, "topic": topics.PAYOUTS_UPDATED}
        )
        room = max(self.payout_park_count_max - int(count or 0), 0)
        parked, left_out = items[:room], items[room:]
        await self.park(conn, topics.PAYOUTS_UPDATED, parked, now)
        return parked, left_out

    async def results_behind(self, conn: AsyncConnection, items: list[ParsedEvent]) -> set[str]:
        """The event_ids of the payout results among `items` that must wait behind a result of
        their cash-out parked before them and not among `items`: a new result whenever its
        cash-out has one parked; a parked one (a sweep's) when one parked before it is left
        (another sweep holds it, or this one did not take it). A cash-out's results are so
        decided in the order they came, whichever arrives while the others wait."""
        cashouts = {
            item.event.event_id: item.event.cashout_id
            for item in items
            if isinstance(item.event, PayoutUpdated)
        }
        if not cashouts:
            return set()
        rows = await conn.execute(
            _PARKED_WAITING_FOR,
            {
                "prefix": self.topic_prefix,
                "topic": topics.PAYOUTS_UPDATED,
                "waits": sorted({WAITING_FOR_CASHOUT + cashout for cashout in cashouts.values()}),
            },
        )
        here = {item.event.event_id for item in items}
        # Per cash-out: the place in the parking's order of the first parked result not here.
        first_left: dict[str, tuple[datetime, int, int]] = {}
        places: dict[str, tuple[datetime, int, int]] = {}
        for row in rows:
            place = (row.parked_at, row.kafka_partition, row.kafka_offset)
            cashout = row.waiting_for.removeprefix(WAITING_FOR_CASHOUT)
            if row.event_id in here:
                places[row.event_id] = place
            elif cashout not in first_left or place < first_left[cashout]:
                first_left[cashout] = place
        behind: set[str] = set()
        for event_id, cashout in cashouts.items():
            left = first_left.get(cashout)
            if left is None:
                continue
            parked_at = places.get(event_id)
            if parked_at is None or left < parked_at:  # new, or parked after the one left
                behind.add(event_id)
        return behind

    async def hold_parked(
        self, conn: AsyncConnection, topic: str, items: list[ParsedEvent], report: BatchReport
    ) -> list[ParsedEvent]:
        """For a sweep, in its transaction: lock the parked rows of `items` (in event_id order,
        as every sweep does), and keep the items still to decide. An item whose row is gone
        was settled by another sweep meanwhile, and is left out; one dead-lettered already (by
        a sweep whose dead letter was not published, or whose claim ran out while it
        published) gets its verdict again in `report`, as it was (`dead_lettered_before`), and
        stays parked until `Ingestor.retry_parked` has published it."""
        parked = [item for item in items if item.from_parking]
        if not parked:
            return items
        rows = await conn.execute(
            _LOCK_PARKED,
            {
                "prefix": self.topic_prefix,
                "topic": topic,
                "ids": sorted({item.event.event_id for item in parked}),
            },
        )
        still_parked = {row.event_id for row in rows}
        records = [item.record for item in parked if item.event.event_id in still_parked]
        verdicts = await self.dead_lettered_before(conn, topic, records, scattered=True)
        kept: list[ParsedEvent] = []
        for item in items:
            if not item.from_parking:
                kept.append(item)
            elif item.event.event_id not in still_parked:
                continue
            elif verdict := verdicts.get((item.record.partition, item.record.offset)):
                report.dead_letters.append(verdict)
            else:
                kept.append(item)
        return kept

    async def unpark(self, conn: AsyncConnection, topic: str, event_ids: list[str]) -> None:
        """Remove these events' parked rows: settled (applied, a duplicate, or dead-lettered
        and published)."""
        done = sorted(set(event_ids))
        if done:
            await conn.execute(
                text(
                    "DELETE FROM parked_events WHERE topic_prefix = :prefix AND topic = :topic"
                    " AND event_id = ANY(CAST(:ids AS text[]))"
                ),
                {"prefix": self.topic_prefix, "topic": topic, "ids": done},
            )

    async def record_applied(
        self, conn: AsyncConnection, topic: str, items: list[ParsedEvent]
    ) -> None:
        if not items:
            return
        await conn.execute(
            text(
                """
                INSERT INTO applied_events (topic, event_id, payload_sha256, creator_id,
                                            occurred_at, kafka_partition, kafka_offset)
                SELECT :topic, * FROM unnest(
                    CAST(:event_ids AS text[]), CAST(:hashes AS bytea[]),
                    CAST(:creator_ids AS text[]), CAST(:occurred_at AS timestamptz[]),
                    CAST(:partitions AS integer[]), CAST(:offsets AS bigint[]))
                """
            ),
            {"topic": topic, **self._applied_columns(items)},
        )

    @staticmethod
    def _applied_columns(items: list[ParsedEvent]) -> dict[str, list[Any]]:
        """The columns of the items' `applied_events` rows, but the topic."""
        return {
            "event_ids": [item.event.event_id for item in items],
            "hashes": [item.payload_sha256 for item in items],
            "creator_ids": [getattr(item.event, "creator_id", None) for item in items],
            "occurred_at": [item.event.occurred_at for item in items],
            "partitions": [item.record.partition for item in items],
            "offsets": [item.record.offset for item in items],
        }

    async def record_dead_letters(
        self, conn: AsyncConnection, topic: str, letters: list[DeadLetter]
    ) -> list[DeadLetter]:
        """One row per dead-lettered record, known by where it was read (prefix, topic,
        partition, offset) and the hash of its value (`dead_letters_source`, migration 0040): a
        record dead-lettered again, when its batch runs again, keeps the row it has (as does one
        whose row was recorded before the hash was, matched by its event_id); another record at
        that offset (a topic whose offsets started again) gets its own. Returns the letters
        whose rows were written now."""
        if not letters:
            return []
        hashes = [value_sha256(letter.record.value) for letter in letters]
        rows = await conn.execute(
            _INSERT_DEAD_LETTERS,
            {
                "prefix": self.topic_prefix,
                "topic": topic,
                "partitions": [letter.record.partition for letter in letters],
                "offsets": [letter.record.offset for letter in letters],
                "event_ids": [letter.event_id for letter in letters],
                "errors": [letter.error for letter in letters],
                "details": [letter.detail for letter in letters],
                "hashes": hashes,
            },
        )
        written = {
            (
                row.kafka_partition,
                row.kafka_offset,
                None if row.value_sha256 is None else bytes(row.value_sha256),
            )
            for row in rows
        }
        return [
            letter
            for letter, digest in zip(letters, hashes, strict=True)
            if (letter.record.partition, letter.record.offset, digest) in written
        ]

    async def dead_lettered_before(
        self,
        conn: AsyncConnection,
        topic: str,
        records: Sequence[InputRecord],
        *,
        scattered: bool = False,
    ) -> dict[tuple[int, int], DeadLetter]:
        """The records among `records` that were dead-lettered already, as their dead letters
        were recorded, by (partition, offset): a batch that comes again after its dead letters
        were published (its offsets not committed: a rewind, a crash, a rebalance) gives each of
        them its verdict again, rather than deciding it anew on a ledger that has moved on. A
        row counts for a record only if it was made of the same value (`value_sha256`), or,
        for a row recorded before the hash was, of the same event_id. One range of offsets a
        partition, read from `dead_letters_source`: usually nothing is found. Records `scattered`
        over their partitions (parked events, taken by age) are looked up one offset each."""
        if not records:
            return {}
        if scattered:
            offsets = [record.offset for record in records]
            partitions, firsts, lasts = [record.partition for record in records], offsets, offsets
        else:
            partitions, firsts, lasts = offset_ranges(records)
        rows = await conn.execute(
            _DEAD_LETTERED_IN_RANGES,
            {
                "prefix": self.topic_prefix,
                "topic": topic,
                "partitions": partitions,
                "firsts": firsts,
                "lasts": lasts,
            },
        )
        # An offset can hold several dead letters, each of another record (offsets that started
        # again): the record's own, if any, is the one made of it.
        stored: dict[tuple[int, int], list[Any]] = {}
        for row in rows:
            stored.setdefault((row.kafka_partition, row.kafka_offset), []).append(row)
        if not stored:
            return {}
        found: dict[tuple[int, int], DeadLetter] = {}
        for record in records:
            for row in stored.get((record.partition, record.offset), ()):
                if is_dead_lettered_record(topic, record, row.value_sha256, row.event_id):
                    found[record.partition, record.offset] = DeadLetter(
                        record, row.error, row.detail, row.event_id
                    )
                    break
        return found


def waiting_for(item: ParsedEvent) -> str:
    """What a parked event waits for, as `parked_events.waiting_for` names it."""
    event = item.event
    if isinstance(event, GiftReversed):
        return f"gift {event.gift_event_id}"
    if isinstance(event, PayoutUpdated):
        return WAITING_FOR_CASHOUT + event.cashout_id
    raise ValueError(f"a {type(event).__name__} is never parked")


async def _insert_applied(conn: AsyncConnection, parameters: dict[str, Any]) -> list[str]:
    """Record the events as applied; returns the event_ids not inserted (recorded already).

    Usually none was: a plain `INSERT`, in a savepoint, records them all. Only when one was
    (a redelivery, or another consumer's transaction that committed it meanwhile: the insert
    waits for it) does the key clash; the savepoint is rolled back and `_CLAIM_APPLIED` inserts
    the others and names those it did not. `ON CONFLICT` looks each key up before it inserts it
    and writes a confirmation of each insert to the WAL: the plain insert costs PostgreSQL 4 to 5
    µs less a row (6 - 7 against 10 - 13 µs, 262 against 310 bytes of WAL; bench/README.md,
    2026-12-06, afternoon)."""
    try:
        async with conn.begin_nested():
            await conn.execute(_INSERT_APPLIED, parameters)
    except IntegrityError as error:
        if not is_duplicate_key(error):
            raise
    else:
        return []
    rows = await conn.execute(_CLAIM_APPLIED, parameters)
    return [row.event_id for row in rows]


def _claim_parameters(topic: str, items: list[ParsedEvent]) -> dict[str, Any]:
    """The parameters of `_INSERT_APPLIED` and `_CLAIM_APPLIED`: the columns of the items'
    rows, joined."""
    event_ids = " ".join([item.event.event_id for item in items])
    creator_ids = " ".join([getattr(item.event, "creator_id", None) or "" for item in items])
    # Validated ids hold no space (`schemas.events.Identifier`, whose pattern is
    # `VISIBLE_ASCII_PATTERN`): one word per item, else stop.
    if event_ids.count(" ") != len(items) - 1 or creator_ids.count(" ") != len(items) - 1:
        raise ValueError("an event or creator id holds a space")
    return {
        "topic": topic,
        "event_ids": event_ids,
        "hashes": b"".join([item.payload_sha256 for item in items]),
        "creator_ids": creator_ids,
        "occurred_at": [item.event.occurred_at for item in items],
        "partitions": " ".join([str(item.record.partition) for item in items]),
        "offsets": " ".join([str(item.record.offset) for item in items]),
    }
