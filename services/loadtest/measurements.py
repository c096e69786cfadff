"""Measuring a load test (`services.loadtest.run`): the counters sampled every
`SAMPLE_INTERVAL_S`, each publishing phase's timing (`PublishTiming`, from the publisher
process), and the latency from the moment the replayer handed a sampled record to the producer to
the event's `applied_at` (the start of the transaction that applied it, so slightly early). About
one event in 100 is sampled (by a hash of its event_id, first send only; at most 200,000
samples); a sampled event applied before the run (a duplicate now) or before it was sent by this
machine's clock is left out, so no latency is negative."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.loadtest.replay import StreamRecord, read_stream

SAMPLE_INTERVAL_S = 0.5
SAMPLES_MAX = 200_000
LATENCY_SAMPLE_ONE_IN = 100
LATENCY_SAMPLES_MAX = 200_000
LATENCY_QUERY_CHUNK = 10_000
EVENT_ID_PATTERN = re.compile(rb'"event_id"\s*:\s*"([!-~]{1,128}?)"')


@dataclass(frozen=True, slots=True)
class Sample:
    """Counters at `t_s` seconds after the first replay began."""

    t_s: float
    published: int  # stream records handed to the producer
    consumed: int  # records the consumers took (stream records and the bank's reports)
    reports: int  # reports the simulated bank sent


@dataclass(frozen=True, slots=True)
class PublishTiming:
    """One publishing phase, as the publisher process reported it; moments on the load test's
    `time.monotonic()` clock."""

    records: int  # handed to the producer
    first_send_t: float  # the first record handed to the producer
    done_t: float  # every record acknowledged
    elapsed_s: float  # the publisher's own clock: first send to last acknowledgement
    cpu_s: float  # the publisher process's CPU time (user and system)


class SendTimes:
    """Wall-clock send times of sampled events: about one event_id in `one_in`, first send only
    (a duplicate or a conflicting record later does not move it), at most `samples_max`; the
    records published so far, and each publishing phase's timing (`publishes`)."""

    def __init__(
        self, one_in: int = LATENCY_SAMPLE_ONE_IN, samples_max: int = LATENCY_SAMPLES_MAX
    ) -> None:
        self.one_in = one_in
        self.samples_max = samples_max
        self.times: dict[tuple[str, str], float] = {}
        self.published = 0
        self.publishes: list[PublishTiming] = []

    def __call__(self, record: StreamRecord) -> None:
        self.published += 1
        if len(self.times) >= self.samples_max:
            return
        found = EVENT_ID_PATTERN.search(record.value, 0, 512)
        if found is None or zlib.crc32(found.group(1)) % self.one_in:
            return
        key = (record.topic, found.group(1).decode("ascii"))
        if key not in self.times:
            self.times[key] = time.time()

    def merge(self, rows: list[list[Any]]) -> None:
        """Add the send times another process sampled: `[topic, event_id, wall-clock s]` rows
        (an event already sampled keeps its first send)."""
        for topic, event_id, sent_at in rows:
            if len(self.times) >= self.samples_max:
                return
            self.times.setdefault((str(topic), str(event_id)), float(sent_at))


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of already sorted values (`share` in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(share / 100 * len(sorted_values)), 1)
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class Latency:
    """One sampled event: when it was sent (wall-clock s) and how long until it was applied."""

    sent_at: float
    ms: float


@dataclass(frozen=True, slots=True)
class Latencies:
    """The sampled events applied during the run, and those left out: applied before the run
    (a stream this database held already: duplicates now), or applied before they were sent by
    this machine's clock (the database's clock is behind it)."""

    points: list[Latency]
    applied_before_run: int
    applied_before_sent: int


async def latencies(
    engine: AsyncEngine, send_times: SendTimes, run_started_at: datetime
) -> Latencies:
    """applied_at minus the send time of each sampled event applied since `run_started_at` (the
    database's clock), in the order they were sent; never below zero (see `Latencies`)."""
    keys = list(send_times.times)
    found: list[Latency] = []
    before_run = before_sent = 0
    async with engine.connect() as conn:
        for start in range(0, len(keys), LATENCY_QUERY_CHUNK):
            chunk = keys[start : start + LATENCY_QUERY_CHUNK]
            rows = await conn.execute(
                text(
                    "SELECT topic, event_id, extract(epoch FROM applied_at)::float8 AS at,"
                    " applied_at < :run_started_at AS before_run"
                    " FROM applied_events WHERE (topic, event_id) IN"
                    " (SELECT * FROM unnest(CAST(:topics AS text[]), CAST(:ids AS text[])))"
                ),
                {
                    "topics": [key[0] for key in chunk],
                    "ids": [key[1] for key in chunk],
                    "run_started_at": run_started_at,
                },
            )
            for row in rows:
                sent_at = send_times.times[(row.topic, row.event_id)]
                ms = (row.at - sent_at) * 1000.0
                if row.before_run:
                    before_run += 1
                elif ms < 0:
                    before_sent += 1
                else:
                    found.append(Latency(sent_at, ms))
    found.sort(key=lambda latency: latency.sent_at)
    return Latencies(found, before_run, before_sent)


async def applied_before_run(engine: AsyncEngine, stream: Path, run_started_at: datetime) -> int:
    """How many records of the stream file name an event (their topic and `event_id`) that this
    database applied before `run_started_at` (its clock): the file read `LATENCY_QUERY_CHUNK`
    records at a time, one query each, in bounded memory."""
    records = read_stream(stream)
    count = 0
    async with engine.connect() as conn:
        while True:
            chunk, read = await asyncio.to_thread(_event_ids, records, LATENCY_QUERY_CHUNK)
            if not read:
                return count
            if not chunk:
                continue
            found = await conn.execute(
                text(
                    "SELECT count(*) FROM unnest(CAST(:topics AS text[]),"
                    " CAST(:ids AS text[])) AS w(topic, event_id)"
                    " JOIN applied_events a USING (topic, event_id)"
                    " WHERE a.applied_at < :run_started_at"
                ),
                {
                    "topics": [topic for topic, _ in chunk],
                    "ids": [event_id for _, event_id in chunk],
                    "run_started_at": run_started_at,
                },
            )
            count += int(found.scalar_one())


def _event_ids(records: Iterator[StreamRecord], limit: int) -> tuple[list[tuple[str, str]], int]:
    """(topic, event_id) of those of the next `limit` records that have an event_id, and how
    many records were read (0: the end of the file)."""
    found = []
    read = 0
    for record in itertools.islice(records, limit):
        read += 1
        match = EVENT_ID_PATTERN.search(record.value)
        if match is not None:
            found.append((record.topic, match.group(1).decode("ascii")))
    return found, read


def sorted_ms(points: list[Latency]) -> list[float]:
    """The latencies alone, in ms, sorted (for percentiles)."""
    return sorted(point.ms for point in points)
