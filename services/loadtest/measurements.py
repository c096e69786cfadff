"""Measuring a load test (`services.loadtest.run`): the counters sampled every
`SAMPLE_INTERVAL_S`, and the latency from the moment the replayer handed a sampled record to the
producer to the event's `applied_at` (the start of the transaction that applied it, so slightly
early). About one event in 100 is sampled (by a hash of its event_id, first send only; at most
200,000 samples)."""

from __future__ import annotations

import math
import re
import time
import zlib
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.loadtest.replay import StreamRecord

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


class SendTimes:
    """Wall-clock send times of sampled events: about one event_id in `one_in`, first send only
    (a duplicate or a conflicting record later does not move it), at most `samples_max`."""

    def __init__(
        self, one_in: int = LATENCY_SAMPLE_ONE_IN, samples_max: int = LATENCY_SAMPLES_MAX
    ) -> None:
        self.one_in = one_in
        self.samples_max = samples_max
        self.times: dict[tuple[str, str], float] = {}
        self.published = 0

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


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of already sorted values (`share` in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(share / 100 * len(sorted_values)), 1)
    return sorted_values[rank - 1]


async def latencies_ms(engine: AsyncEngine, send_times: SendTimes) -> list[float]:
    """applied_at minus the send time of each sampled event that was applied, sorted."""
    keys = list(send_times.times)
    found: list[float] = []
    async with engine.connect() as conn:
        for start in range(0, len(keys), LATENCY_QUERY_CHUNK):
            chunk = keys[start : start + LATENCY_QUERY_CHUNK]
            rows = await conn.execute(
                text(
                    "SELECT topic, event_id, extract(epoch FROM applied_at)::float8 AS at"
                    " FROM applied_events WHERE (topic, event_id) IN"
                    " (SELECT * FROM unnest(CAST(:topics AS text[]), CAST(:ids AS text[])))"
                ),
                {"topics": [key[0] for key in chunk], "ids": [key[1] for key in chunk]},
            )
            for row in rows:
                found.append((row.at - send_times.times[(row.topic, row.event_id)]) * 1000.0)
    return sorted(found)
