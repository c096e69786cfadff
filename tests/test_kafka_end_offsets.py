"""End offsets on the session's broker, for partitions written as producers write them: many
records of a partition in one produce request. The embedded broker's ListOffsets answers such a
partition with less than its end; the dead letters' source records past that answer were then
reported gone (the console's page, `giftledger operator redrive` and its API route), though they
were in their topic."""

from __future__ import annotations

import uuid

from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    TopicPartition,
)

from services.ingestion.redrive import read_source_records
from services.runtime.embedded_broker import create_topics
from services.runtime.kafka_offsets import end_offsets

RECORD_COUNT = 100
WAIT_S = 10.0


async def batched_topic(kafka_bootstrap: str, partition_count: int) -> str:
    """A new topic whose partition 0 holds `RECORD_COUNT` records sent in one produce request
    (`v0` ... `v99`); the other partitions hold nothing."""
    name = f"end-offsets-{uuid.uuid4().hex[:12]}"
    await create_topics(kafka_bootstrap, [name], partition_count)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=200)
    await producer.start()
    try:
        sent = [
            await producer.send(name, f"v{number}".encode(), key=b"creator-1", partition=0)
            for number in range(RECORD_COUNT)
        ]
        await producer.flush()
        offsets = [(await ack).offset for ack in sent]
    finally:
        await producer.stop()
    assert offsets == list(range(RECORD_COUNT))
    return name


async def test_the_end_offset_counts_every_record_of_a_batch_and_an_empty_partition_ends_at_0(
    kafka_bootstrap: str,
) -> None:
    name = await batched_topic(kafka_bootstrap, partition_count=2)
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(name, 0), TopicPartition(name, 1)]
        ends = await end_offsets(consumer, partitions, WAIT_S)
    finally:
        await consumer.stop()
    assert ends == {partitions[0]: RECORD_COUNT, partitions[1]: 0}


async def test_source_records_inside_a_batch_are_found_and_none_past_its_end(
    kafka_bootstrap: str,
) -> None:
    name = await batched_topic(kafka_bootstrap, partition_count=1)
    found = await read_source_records(kafka_bootstrap, name, [(0, 50), (0, 99), (0, 100)])
    assert {place: record.value for place, record in found.items()} == {
        (0, 50): b"v50",
        (0, 99): b"v99",
    }
