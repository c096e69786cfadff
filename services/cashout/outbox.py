"""The outbox relay: sends what the cash-out desk wrote to the `outbox` table (`payouts.requested`
to the bank, `cashouts.updated` to everyone) and marks it published; a payout request that left
moves its cash-out from `held` to `submitted`.

A round is three steps, and no transaction is open while the broker answers:

1. claim: one short transaction takes unpublished rows for this round (`claimed_by`, until
   `claimed_until`, the lease), skipping rows other relays are taking at that moment;
2. send them, outside any transaction, within `OUTBOX_SEND_TIMEOUT_S`;
3. mark: another short transaction marks the rows this round still holds published, and moves
   the cash-outs whose payout request left from `held` to `submitted`.

Several relays (several `giftledger run` processes) can run at once. Each message key (the
creator) leaves in order: a round claims a key's rows only from the key's oldest unpublished row,
and only while no live claim of another round holds that row; it stops before any later row of
the key that another round holds. So while one round has a key's rows in flight, the others
leave that key alone, and its next rows leave once those are marked.

A relay's pass (`publish_all`) runs rounds until one comes back short, and overlaps them: while
rounds are marked, the next claims and sends, so the broker's answers and the database's work
on the marks (which post the submissions) are not waited for one after the other. At most
`OUTBOX_MARKS_IN_FLIGHT_MAX` marks are in flight. A claim leaves the keys of the rounds being
marked alone, as it leaves another relay's, so each key's order holds as with several relays.

At least once: a relay that dies between claim and mark leaves its claim to run out (the lease
outlasts the send timeout); another relay then sends those rows again. A failed send gives the
claim back at once. The bank deduplicates `payouts.requested` by cashout_id, consumers of
`cashouts.updated` deduplicate by event_id.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from pydantic import ValidationError
from sqlalchemy import text

from ledger.service import Ledger
from schemas import topics
from schemas.events import PayoutRequested
from schemas.payout_cancel import parse_payout_cancel
from services.cashout.desk import CashoutDesk
from services.runtime import metrics

# How often a relay looks for rows nobody told it about: those other processes queue. A batch
# that queues rows in the relay's own process starts a pass when it commits
# (`services.app.consumer`).
OUTBOX_POLL_INTERVAL_S = 0.2
# Rows a round claims at most. The claim reads the window (below) whatever it takes, so a round
# of 2,000 pays for it once where four rounds of 500 paid four times: 26 - 47 ms a claim of
# 2,000 against 11 - 18 ms one of 500 with 5,000 to 50,000 rows waiting, and 5 % less CPU a
# batched cash-out in all (bench/README.md, 2026-12-05, before midnight).
OUTBOX_BATCH_SIZE_MAX = 2_000
OUTBOX_SEND_TIMEOUT_S = 30.0
# Marks of one relay's rounds in flight at once (rounds hold other keys, so their marks lock
# other cash-outs; they queue only on the platform accounts). With two, a payout request waited
# half as long to leave (held -> payout sent p50 0.25 - 0.41 s against 0.78 - 0.81 s with one,
# bench/README.md, 2026-12-05).
OUTBOX_MARKS_IN_FLIGHT_MAX = 2
# How long a claim keeps other relays off its rows: longer than a round's send may take, so a
# live relay marks its rows before anyone else may send them again.
OUTBOX_CLAIM_LEASE_S = 60.0
RELAY_ID_LENGTH_MAX = 160
# A claim considers the oldest unpublished rows up to this many: ten full rounds, so rows that
# other rounds hold leave enough free ones; a key whose rows are all further back waits for the
# rows before it, which leave first anyway.
OUTBOX_CLAIM_WINDOW_ROWS = 10 * OUTBOX_BATCH_SIZE_MAX
KEY_HASHES_CACHED_MAX = 16_384  # creators with rows in flight; an entry is about 200 bytes

# Step 1. `unpublished`: the oldest unpublished rows of this deployment, at most the window,
# with how many rows of its key up to it (itself included) a live claim holds. The window is a
# prefix in id order, so every row of a key older than a row in it is in it too, and the count
# is the same as over the whole backlog: a claim counts over the window, not the backlog
# (98 - 220 ms a claim with 50,000 rows waiting when it counted them all, bench/README.md).
# `runs`: the rows no live claim holds before them, oldest first, up to the limit, each with
# its key's first row among them (`head_id`, the key's oldest unpublished row): for each key,
# from that row up to the first row another round holds (a key whose oldest row is held has
# none). `free_heads`: those heads, locked now (rows another relay is claiming at this moment
# are skipped, and with them their whole key). The runs of the locked heads are claimed; the
# checks are made again on each row as it is updated, so a row another relay marked or claimed
# meanwhile is left out.
#
# Every other step reads only the runs, or rows by id from arrays computed once, so whatever the
# planner estimates the statement reads the unpublished rows a few times at most, never once per
# row. The lookups by id say "not published" as `(published_at IS NULL) IS TRUE`, which means
# the same but does not match the predicate of the partial index `outbox_unpublished`: with
# statistics saying there are no unpublished rows, the planner walked that index with the ids
# as a filter, every row compared with every id (713 ms a claim of 2,000 with 50,000 rows
# waiting, growing with the backlog times the round); now it takes each id from the primary
# key. The form before joined the heads to the rows of their keys; the relay drains the outbox
# between autovacuum's ANALYZEs, so the statistics say there are almost no unpublished rows, and
# the planner chose nested loops that read every unpublished row once per unpublished row: with
# 3,000 unpublished rows a claim took 20 to 90 s (bench/README.md: "the outbox relay's claim,
# quadratic on a backlog").
_CLAIM = text(
    """
    WITH unpublished AS (
        SELECT id, message_key,
               count(*) FILTER (WHERE claimed_until > clock_timestamp())
                   OVER (PARTITION BY message_key ORDER BY id) AS held_so_far
        FROM (
            SELECT id, message_key, claimed_until
            FROM outbox
            WHERE topic_prefix = :prefix AND published_at IS NULL
            ORDER BY id
            LIMIT :window
        ) AS oldest_unpublished
    ), runs AS (
        SELECT id, min(id) OVER (PARTITION BY message_key) AS head_id
        FROM (
            SELECT id, message_key
            FROM unpublished
            WHERE held_so_far = 0
            ORDER BY id
            LIMIT :limit
        ) AS oldest
    ), free_heads AS (
        SELECT o.id
        FROM outbox o
        WHERE o.id = ANY(ARRAY(SELECT DISTINCT head_id FROM runs))
          AND (o.published_at IS NULL) IS TRUE
          AND (o.claimed_until IS NULL OR o.claimed_until <= clock_timestamp())
        FOR UPDATE OF o SKIP LOCKED
    )
    UPDATE outbox o
    SET claimed_by = :claim,
        claimed_until = clock_timestamp() + make_interval(secs => CAST(:lease_s AS float8))
    WHERE o.id = ANY(ARRAY(
        SELECT id FROM runs WHERE head_id = ANY(ARRAY(SELECT id FROM free_heads))
    ))
      AND (o.published_at IS NULL) IS TRUE
      AND (o.claimed_until IS NULL OR o.claimed_until <= clock_timestamp())
    RETURNING o.id, o.topic, o.message_key, o.payload
    """
)

# Step 3: only the rows this round still holds (a claim that ran out may have passed to another
# relay, which marks them itself). Their topics and payloads came with the claim. By id from the
# primary key, as the claim's lookups (`(published_at IS NULL) IS TRUE`, see step 1).
_MARK_SENT = text(
    """
    UPDATE outbox SET published_at = clock_timestamp()
    WHERE id = ANY(CAST(:ids AS bigint[])) AND claimed_by = :claim
      AND (published_at IS NULL) IS TRUE
    RETURNING id
    """
)

_RELEASE = text(
    "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL"
    " WHERE claimed_by = :claim AND published_at IS NULL"
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    topic: str
    message_key: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class OutboxClaim:
    """The rows one round of a relay claimed, oldest first."""

    claim_id: str
    rows: list[OutboxRow]


@dataclass(frozen=True, slots=True)
class RelayPass:
    """What one pass of a relay (`OutboxRelay.publish_all`) sent: its rounds and their rows."""

    rounds: int
    rows: int


def default_relay_id() -> str:
    """Host, process and a random part: unique per relay, and says who holds a claim."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[-RELAY_ID_LENGTH_MAX:]


class OutboxRelay:
    """Publishes one deployment's outbox rows (its topic prefix) with the given producer."""

    def __init__(
        self,
        ledger: Ledger,
        desk: CashoutDesk,
        producer: Any,
        *,
        relay_id: str | None = None,
        claim_lease_s: float = OUTBOX_CLAIM_LEASE_S,
        marks_in_flight_max: int | None = None,
        claim_window_rows: int = OUTBOX_CLAIM_WINDOW_ROWS,
    ) -> None:
        if claim_lease_s <= 0:
            raise ValueError("claim_lease_s must be positive")
        if claim_window_rows < 1:
            raise ValueError("claim_window_rows must be positive")
        self._claim_window_rows = claim_window_rows
        self._marks_in_flight_max = (
            OUTBOX_MARKS_IN_FLIGHT_MAX if marks_in_flight_max is None else marks_in_flight_max
        )
        if self._marks_in_flight_max < 1:
            raise ValueError("marks_in_flight_max must be at least 1")
        self._ledger = ledger
        self._desk = desk
        self._producer = producer
        self.relay_id = (relay_id or default_relay_id())[:RELAY_ID_LENGTH_MAX]
        self._claim_lease_s = claim_lease_s
        self._rounds = itertools.count(1)

    async def publish_once(self, limit: int = OUTBOX_BATCH_SIZE_MAX) -> int:
        """One round: claim at most `limit` unpublished rows, send them, mark them published;
        returns how many were sent."""
        started = time.perf_counter()
        claim = await self.claim(limit)
        if not claim.rows:
            return 0
        await self._send_or_release(claim)
        await self._mark_and_count(claim, started)
        return len(claim.rows)

    async def publish_all(self, limit: int = OUTBOX_BATCH_SIZE_MAX) -> RelayPass:
        """Rounds of at most `limit` rows until one comes back short, each round's mark
        overlapping the next rounds' claims and sends (at most `marks_in_flight_max` marks in
        flight). A round claimed while marks were in flight may have left rows of their keys:
        the pass ends only at a short round claimed with none in flight."""
        rounds = rows = 0
        marking: collections.deque[asyncio.Task[int]] = collections.deque()
        try:
            while True:
                overlapped = bool(marking)
                started = time.perf_counter()
                claim = await self.claim(limit)
                if not claim.rows:
                    while marking:  # their keys may hold the rows left
                        await marking.popleft()
                else:
                    await self._send_or_release(claim)
                    if len(marking) == self._marks_in_flight_max:
                        await marking.popleft()
                    marking.append(asyncio.create_task(self._mark_and_count(claim, started)))
                    rounds, rows = rounds + 1, rows + len(claim.rows)
                if len(claim.rows) < limit and not overlapped:
                    return RelayPass(rounds, rows)
        finally:
            while marking:
                await marking.popleft()

    async def _mark_and_count(self, claim: OutboxClaim, started: float) -> int:
        """Step 3, counted: the rows marked, and the round's time from `started` (before its
        claim, `time.perf_counter`) to the mark's commit."""
        marked = await self.mark_sent(claim)
        metrics.OUTBOX_ROWS_PUBLISHED.inc(marked)
        metrics.OUTBOX_ROUND_SECONDS.observe(time.perf_counter() - started)
        return marked

    async def _send_or_release(self, claim: OutboxClaim) -> None:
        """Step 2; when the send fails, the claim is given back at once."""
        try:
            await self._send(claim.rows)
        except Exception:
            with contextlib.suppress(Exception):  # then the lease runs out instead
                await self._release(claim)
            raise

    async def claim(self, limit: int = OUTBOX_BATCH_SIZE_MAX) -> OutboxClaim:
        """Step 1: claim at most `limit` rows for a new round, in one short transaction."""
        if not 1 <= limit <= min(OUTBOX_BATCH_SIZE_MAX, self._claim_window_rows):
            raise ValueError(
                f"limit must be between 1 and {OUTBOX_BATCH_SIZE_MAX}, and within the window"
            )
        claim_id = f"{self.relay_id}#{next(self._rounds)}"
        async with self._ledger.begin() as conn:
            result = await conn.execute(
                _CLAIM,
                {
                    "prefix": self._desk.topic_prefix,
                    "limit": limit,
                    "window": self._claim_window_rows,
                    "claim": claim_id,
                    "lease_s": self._claim_lease_s,
                },
            )
            rows = [
                OutboxRow(row.id, row.topic, row.message_key, bytes(row.payload)) for row in result
            ]
        rows.sort(key=lambda row: row.id)
        return OutboxClaim(claim_id, rows)

    async def _send(self, rows: list[OutboxRow]) -> None:
        """Step 2, with no transaction open: every row sent and acknowledged by the broker, as
        one producer batch per topic partition (more when a batch is full), each in row order,
        built here and handed to the producer whole rather than a message at a time."""
        async with asyncio.timeout(OUTBOX_SEND_TIMEOUT_S):
            deliveries = [
                await self._producer.send_batch(batch, topic, partition=partition)
                for topic, partition, batch in await self._batches(rows)
            ]
            await asyncio.gather(*deliveries)

    async def _batches(self, rows: list[OutboxRow]) -> list[tuple[str, int, Any]]:
        """The rows as producer batches: (topic, partition, batch), a partition's batches in row
        order. A key goes where the producer's default partitioner, and so `send`, would put it:
        the key's murmur2 hash modulo the partition count, as in Kafka's Java client."""
        prefix = self._desk.topic_prefix
        partitions_of: dict[str, list[int]] = {}
        batches: dict[tuple[str, int], list[Any]] = {}
        for row in rows:
            topic = topics.prefixed(prefix, row.topic)
            if topic not in partitions_of:
                partitions_of[topic] = sorted(await self._producer.partitions_for(topic))
            partitions = partitions_of[topic]
            key = row.message_key.encode()
            partition = partitions[key_hash(key) % len(partitions)]
            if (topic, partition) not in batches:
                batches[topic, partition] = [self._producer.create_batch()]
            filling = batches[topic, partition]
            if filling[-1].append(key=key, value=row.payload, timestamp=None) is None:
                filling.append(self._producer.create_batch())
                if filling[-1].append(key=key, value=row.payload, timestamp=None) is None:
                    raise ValueError(f"outbox row {row.id} does not fit in a producer batch")
        return [
            (topic, partition, batch)
            for (topic, partition), filled in batches.items()
            for batch in filled
        ]

    async def mark_sent(self, claim: OutboxClaim) -> int:
        """Step 3: the rows the round still holds are published, and a payout request that left
        moves its cash-out to `submitted`; returns how many rows were marked (none when the
        claim ran out and passed to another relay, which marks them itself)."""
        async for tx in self._ledger.transactions():  # submitting posts transfers
            async with tx:
                marked = set(
                    (
                        await tx.connection.execute(
                            _MARK_SENT,
                            {"ids": [row.id for row in claim.rows], "claim": claim.claim_id},
                        )
                    ).scalars()
                )
                submitted = [
                    cashout_id
                    for row in claim.rows  # oldest first
                    if row.id in marked
                    and row.topic == topics.PAYOUTS_REQUESTED
                    and (cashout_id := submitted_cashout_id(row.payload)) is not None
                ]
                await self._desk.mark_submitted(tx, self._ledger, submitted)
        return len(marked)

    async def _release(self, claim: OutboxClaim) -> None:
        """Give a claim back after a failed send, so the next round sends its rows at once
        instead of after the lease."""
        async with self._ledger.begin() as conn:
            await conn.execute(_RELEASE, {"claim": claim.claim_id})


@functools.lru_cache(maxsize=KEY_HASHES_CACHED_MAX)
def key_hash(key: bytes) -> int:
    """A message key's partitioning hash (aiokafka's `DefaultPartitioner`, Kafka's Java client):
    its murmur2, made non-negative. Cached: a creator's rows come back round after round, and
    murmur2 is pure Python."""
    return int(murmur2(key)) & 0x7FFFFFFF


def submitted_cashout_id(payload: bytes) -> str | None:
    """The cash-out a `payouts.requested` row submits to the bank, or None for an operator's
    cancellation (services/cashout/recovery.py), which travels on the same topic. Read as a
    request first, as nearly every row is one; a row that is neither raises the request's
    `ValidationError`."""
    try:
        return PayoutRequested.model_validate_json(payload).cashout_id
    except ValidationError:
        if parse_payout_cancel(payload) is not None:
            return None
        raise
