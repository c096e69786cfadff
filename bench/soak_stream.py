"""The soak's stream: segments of the load test's mixed stream, and their paced publication.

A segment is one stream of `giftledger generate` (`services.loadtest.generator`) with a namespace
of its own (`soak<k>`: its own creators and event ids) and its expected end state. Its main phase
(gifts, reversals, tips, Creator Fund, Marketplace, profile updates, duplicates, records out of
order, bad records) is published over the segment's span of wall time; its cash-out phase, which
the expected state decides against the balances the main phase leaves, is published once the
database holds every event of that main phase, spread over half a span, while the next segment's
main phase goes out.

Time. The main phase keeps its recorded rhythm (LIVE bursts included), stretched so that it
covers the span: a record recorded at `offset_ms` goes out `offset_ms * stretch` after the
segment starts. Its `occurred_at` is moved the same way (`retime`): recorded time t becomes the
segment's start plus t * stretch, to the microsecond, so `commit - occurred_at` is the time from
when the event was due to be sent to its commit. The map is strictly increasing, so the order of
any two events (profile updates: the latest wins) is kept, and a duplicate is still the same
bytes as its original. Records the stream sends after their `occurred_at` on purpose (held back
out of order, a gift delayed behind its reversal, a profile dated back) keep that distance;
`Publisher.late_event_ids` names them, so that the latency can leave them out. Cash-out requests
keep the generator's `occurred_at` (the days after the stream's recorded start): the day decides
the daily limit and the creator's age, as the expected state assumes. Bad records whose
`occurred_at` is not the generator's form are sent as they are.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from schemas import topics
from services.loadtest.generator import generate
from services.loadtest.replay import StreamRecord, read_stream
from services.loadtest.stream_format import STREAM_START, ExpectedState, StreamShape

SEGMENT_RECORDS_MIN = 100
LATE_EVENT_IDS_MAX = 2_000_000
IN_FLIGHT_MAX = 20_000
YIELD_EVERY = 64
SLEEP_THRESHOLD_S = 0.001
# The embedded broker (Tansu, memory storage) keeps each produced batch as an object of its own,
# and a fetch costs it more the more batches the partition holds. At 5 ms, a paced stream of
# 2,000 records/s over 8 partitions made batches of a record or two, and the broker used 0.80 -
# 0.92 of a core by minute 6; at 50 ms, 0.64 at minute 5 and 0.94 at minute 20: slower growth,
# not none (bench/README.md). A record waits up to this long in the producer: part of its
# `commit - occurred_at`.
PRODUCER_LINGER_MS = 50
PRODUCER_BATCH_BYTES = 256 * 1024
PRODUCER_REQUEST_TIMEOUT_MS = 30_000

# The generator writes `occurred_at` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
OCCURRED_AT = re.compile(rb'"occurred_at":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"')
EVENT_ID = re.compile(rb'"event_id":"([^"\\]{1,128})"')
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
STREAM_START_DATE = STREAM_START.date()


@dataclass(frozen=True, slots=True)
class Segment:
    """One generated stream: its file, expected end state and the recorded span of its main
    phase (the `offset_ms` of its last main-phase record)."""

    index: int
    path: Path
    expected: ExpectedState
    main_span_ms: int

    @property
    def namespace(self) -> str:
        return self.expected.namespace

    @property
    def main_records(self) -> int:
        return self.expected.cashout_phase_from

    @property
    def cashout_records(self) -> int:
        return self.expected.records - self.expected.cashout_phase_from

    @property
    def main_applied(self) -> int:
        """Events of the main phase the ledger applies: all but the cash-out requests and the
        bank's reports."""
        expected = self.expected
        requests = expected.applied_by_topic.get(topics.CASHOUTS_REQUESTED, 0)
        return sum(expected.applied_by_topic.values()) - requests - expected.payout_reports

    @property
    def cashout_requests(self) -> int:
        return sum(self.expected.cashouts.values())


def make_segment(
    directory: Path, index: int, records: int, rate_per_s: float, seed: int
) -> Segment:
    """Generate segment `index` (namespace `soak<index>`) of `records` records (blocking)."""
    path = directory / f"soak{index}.jsonl.gz"
    shape = StreamShape(events_per_s=max(rate_per_s, 0.01))
    count = max(records, SEGMENT_RECORDS_MIN)
    expected = generate(
        path, events=count, seed=seed + index, namespace=f"soak{index}", shape=shape
    )
    main_span_ms = 0
    for record in read_stream(path, 0, expected.cashout_phase_from):
        main_span_ms = record.offset_ms
    return Segment(index, path, expected, max(main_span_ms, 1))


def recorded_ms(text: bytes) -> int:
    """Milliseconds from the stream's recorded start to a generator timestamp."""
    days = (date.fromisoformat(text[:10].decode()) - STREAM_START_DATE).days
    hours, minutes, seconds, millis = (
        int(text[11:13]),
        int(text[14:16]),
        int(text[17:19]),
        int(text[20:23]),
    )
    return (((days * 24 + hours) * 60 + minutes) * 60 + seconds) * 1000 + millis


def sent_late(record: StreamRecord) -> str | None:
    """The event id of a record the stream sends after its `occurred_at` on purpose (held back
    out of order, a gift delayed behind its reversal, a profile dated back), else None."""
    occurred = OCCURRED_AT.search(record.value)
    if occurred is None or recorded_ms(occurred.group(1)) >= record.offset_ms:
        return None
    event_id = EVENT_ID.search(record.value)
    return None if event_id is None else event_id.group(1).decode("utf-8", errors="replace")


def retime(value: bytes, start_us: int, stretch: float) -> bytes:
    """`value` with each generator `occurred_at` t moved to start_us + t * stretch (µs, UTC).
    With `stretch` at least 0.001, two different milliseconds stay two different microseconds."""
    assert stretch >= 0.001, stretch

    def moved(match: re.Match[bytes]) -> bytes:
        moment_us = start_us + math.floor(recorded_ms(match.group(1)) * 1000 * stretch)
        moment = EPOCH + timedelta(microseconds=moment_us)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
        return b'"occurred_at":"' + stamp.encode() + b'"'

    return OCCURRED_AT.sub(moved, value)


def new_producer(bootstrap_servers: str) -> Any:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id="giftledger-soak",
        acks="all",
        linger_ms=PRODUCER_LINGER_MS,
        max_batch_size=PRODUCER_BATCH_BYTES,
        request_timeout_ms=PRODUCER_REQUEST_TIMEOUT_MS,
    )


class Publisher:
    """Sends records to `<prefix><topic>` through one producer; sends in flight are bounded.
    `behind_s_max` is how far behind its schedule a paced record went out at worst;
    `late_event_ids` are the main phases' events sent after their `occurred_at` on purpose."""

    def __init__(self, producer: Any, topic_prefix: str) -> None:
        self.producer = producer
        self.topic_prefix = topic_prefix
        self.in_flight: deque[asyncio.Future[Any]] = deque()
        self.sent = 0
        self.behind_s_max = 0.0
        self.late_event_ids: set[str] = set()

    async def send(self, record: StreamRecord, value: bytes) -> None:
        future = await self.producer.send(
            self.topic_prefix + record.topic, value=value, key=record.key
        )
        self.in_flight.append(future)
        self.sent += 1
        while self.in_flight and self.in_flight[0].done():
            self.in_flight.popleft().result()
        if len(self.in_flight) >= IN_FLIGHT_MAX:
            await self.in_flight.popleft()
        elif self.sent % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # let the soak's other tasks run

    async def wait_until(self, due: float) -> None:
        loop = asyncio.get_running_loop()
        ahead_s = due - loop.time()
        if ahead_s > SLEEP_THRESHOLD_S:
            await asyncio.sleep(ahead_s)
        else:
            self.behind_s_max = max(self.behind_s_max, -ahead_s)

    async def main_phase(self, segment: Segment, start: float, span_s: float) -> None:
        """The segment's main phase over `span_s` from `start` (event loop time), retimed."""
        stretch = span_s * 1000.0 / segment.main_span_ms
        start_us = round(time.time() * 1e6 + (start - asyncio.get_running_loop().time()) * 1e6)
        for record in read_stream(segment.path, 0, segment.main_records):
            await self.wait_until(start + record.offset_ms * stretch / 1000.0)
            await self.send(record, retime(record.value, start_us, stretch))
            late = sent_late(record)
            if late is not None and len(self.late_event_ids) < LATE_EVENT_IDS_MAX:
                self.late_event_ids.add(late)

    async def backlog(self, segment: Segment) -> None:
        """The segment's main phase as fast as the producer takes it, bytes unchanged."""
        for record in read_stream(segment.path, 0, segment.main_records):
            await self.send(record, record.value)

    async def cashouts(self, segment: Segment, span_s: float) -> None:
        """The segment's cash-out phase, evenly over `span_s`, bytes unchanged."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        gap_s = span_s / max(segment.cashout_records, 1)
        records = read_stream(segment.path, segment.main_records, None)
        for number, record in enumerate(records):
            await self.wait_until(start + number * gap_s)
            await self.send(record, record.value)

    async def flush(self) -> None:
        await self.producer.flush()
        while self.in_flight:
            await self.in_flight.popleft()
