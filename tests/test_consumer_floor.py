"""The ingestion benchmark's consumers' floor: both passes read the records after the first
fetch and count them, the second parses them as the ingestor does, and a record that is not a
gift stops it rather than being counted as parsed."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from bench.consumer_floor import measure_floor
from bench.process_cpu import CpuSnapshot, cpu_snapshot, own_cpu_seconds_of
from services.runtime.embedded_broker import create_topics
from tests import event_factory as make

pytestmark = pytest.mark.asyncio(loop_scope="session")

GIFT_COUNT = 3_000
BATCH_SIZE_MAX = 2_000  # below GIFT_COUNT: the first fetch cannot hold every record


def read_cpu() -> CpuSnapshot:
    return cpu_snapshot({"this process": lambda: own_cpu_seconds_of(os.getpid())})


async def publish(bootstrap: str, topic: str, values: list[bytes]) -> None:
    await create_topics(bootstrap, [topic], 2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, value, key=b"creator")
        await producer.flush()
    finally:
        await producer.stop()


def gift_values(count: int) -> list[bytes]:
    return [json.dumps(make.gift(f"creator-{index % 7}")).encode() for index in range(count)]


async def test_both_passes_count_the_gifts_after_the_first_fetch(kafka_bootstrap: str) -> None:
    topic = f"floor{uuid.uuid4().hex[:8]}.gifts.sent"
    await publish(kafka_bootstrap, topic, gift_values(GIFT_COUNT))

    floor = await measure_floor(kafka_bootstrap, topic, GIFT_COUNT, BATCH_SIZE_MAX, read_cpu)

    for span in (floor.fetch, floor.fetch_and_parse):
        assert 0 < span.items < GIFT_COUNT  # the first fetch's records are not counted
        assert span.seconds["this process"] is not None


async def test_a_record_that_is_not_a_gift_stops_the_parse(kafka_bootstrap: str) -> None:
    topic = f"floor{uuid.uuid4().hex[:8]}.gifts.sent"
    values = gift_values(GIFT_COUNT)
    values[-1] = b'{"event_id": "not-a-gift"}'
    await publish(kafka_bootstrap, topic, values)

    with pytest.raises(ValueError, match="schema_violation"):
        await measure_floor(kafka_bootstrap, topic, GIFT_COUNT, BATCH_SIZE_MAX, read_cpu)
