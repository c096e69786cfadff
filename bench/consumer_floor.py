"""The least CPU a gift can cost a consumer process before it prices, records or posts anything.

Two passes over the same `gifts.sent` records, each with a raw aiokafka consumer of a consumer
group of its own, in this process, with nothing else running in it (the caller settles its
collector first, as the consumer processes settle theirs: `services.runtime.collector`):

- `fetch`: the records fetched and dropped (aiokafka's fetches and its record decoding, in C);
- `fetch and parse`: each fetched batch also turned into the ingestor's records and parsed as
  `Ingestor.process` parses them (`services.ingestion.records.parse_records`: the validation in
  one pydantic call, the canonical form and its hash).

Neither is what a consumer process does: it also goes through FastStream's batch subscriber,
commits its offsets and does everything after the parse. So `fetch and parse` is a floor, below
the consumers' CPU a gift whatever the code after the parse does; `bench.ingest_bench` sets it
against what a drain's consumers could spend a gift for a target ratio over the ledger alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]

from bench.process_cpu import CpuSnapshot, CpuSpan
from schemas import topics
from services.ingestion.records import DeadLetter, InputRecord, parse_records

FLOOR_GIFTS_MAX = 200_000  # records read by each pass: enough for a steady CPU a gift
FETCH_TIMEOUT_MS = 500
SESSION_TIMEOUT_MS = 6_000


@dataclass(frozen=True, slots=True)
class Floor:
    """CPU a gift of each pass (`CpuSpan`s of this process and the broker)."""

    fetch: CpuSpan
    fetch_and_parse: CpuSpan


def raw_consumer(bootstrap_servers: str, topic: str, group: str) -> Any:
    """An aiokafka consumer of `topic` in `group`, from the earliest offset, committing nothing
    (the benchmarks' raw readers: this floor, `ingest_bench`'s ceiling and baseline)."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        client_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=SESSION_TIMEOUT_MS // 4,
    )


def _parse(batch: Sequence[Any]) -> int:
    """What `Ingestor.process` makes of a batch before its handler: records, then parsed."""
    records = [
        InputRecord(topics.GIFTS_SENT, record.partition, record.offset, record.key, record.value)
        for record in batch
    ]
    outcomes = parse_records(topics.GIFTS_SENT, records)
    refused = [outcome for outcome in outcomes if isinstance(outcome, DeadLetter)]
    if refused:
        raise ValueError(
            f"the floor's records must be gifts: {refused[0].error} at offset"
            f" {refused[0].record.offset}"
        )
    return len(outcomes)


async def _pass(
    bootstrap_servers: str,
    topic: str,
    count: int,
    batch_size_max: int,
    read_cpu: Callable[[], CpuSnapshot],
    *,
    parse: bool,
) -> CpuSpan:
    """Read `count` records; the CPU from the end of the first fetch that returned records (the
    group's join before it is not counted, nor are its records) to the last."""
    consumer = raw_consumer(bootstrap_servers, topic, f"bench-floor-{uuid.uuid4().hex[:8]}")
    await consumer.start()
    try:
        seen = first = 0
        before = None
        while seen < count:
            batches = await consumer.getmany(
                timeout_ms=FETCH_TIMEOUT_MS, max_records=batch_size_max
            )
            # One batch of all the partitions' records, as FastStream hands the consumer's.
            batch = [record for records in batches.values() for record in records]
            fetched = _parse(batch) if parse and before is not None else len(batch)
            if fetched and before is None:
                before, first = read_cpu(), fetched
            seen += fetched
        assert before is not None
        return CpuSpan.between(before, read_cpu(), seen - first)
    finally:
        await consumer.stop()


async def measure_floor(
    bootstrap_servers: str,
    topic: str,
    published: int,
    batch_size_max: int,
    read_cpu: Callable[[], CpuSnapshot],
) -> Floor:
    """Both passes over the first `FLOOR_GIFTS_MAX` (at most `published`) records of `topic`,
    which must all parse as gifts, in batches of at most `batch_size_max` (the consumers'
    `consumer_batch_size_max`); `read_cpu` reads this process's and the broker's CPU."""
    count = min(published, FLOOR_GIFTS_MAX)
    fetch = await _pass(bootstrap_servers, topic, count, batch_size_max, read_cpu, parse=False)
    fetch_and_parse = await _pass(
        bootstrap_servers, topic, count, batch_size_max, read_cpu, parse=True
    )
    return Floor(fetch, fetch_and_parse)
