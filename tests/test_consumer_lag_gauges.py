"""`giftledger_consumer_lag` is reported, for each partition, by the process that holds it: a
process that gives partitions away in a rebalance removes their gauges, so the lag summed over
processes comes back to 0 once they are drained (a gauge left behind kept a lag for good)."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from schemas.topics import all_topics
from services.app.consumer import ConsumerService
from services.runtime.embedded_broker import create_topics
from tests.ingestion_fixtures import ASSIGNMENT_WAIT_S, PARTITION_COUNT, start_consumers, wait_until

LAG = "giftledger_consumer_lag"


def _gauged_partitions(topic: str) -> set[int]:
    partitions = set()
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == LAG and sample.labels.get("topic") == topic:
                partitions.add(int(sample.labels["partition"]))
    return partitions


def _held(service: ConsumerService, topic: str) -> set[int]:
    subscriber = service._subscribers[topic]
    return {partition.partition for partition in subscriber.consumer.assignment()}


async def test_a_member_drops_the_gauges_of_the_partitions_it_gave_away(
    engine: AsyncEngine, kafka_bootstrap: str
) -> None:
    prefix = f"lag{uuid.uuid4().hex[:8]}."
    gifts = f"{prefix}{topics.GIFTS_SENT}"
    await create_topics(kafka_bootstrap, all_topics(prefix), PARTITION_COUNT)
    first, _ = await start_consumers(engine, kafka_bootstrap, prefix, f"g-{prefix}")
    second = None
    try:

        async def first_holds_all() -> bool:
            return len(_held(first, topics.GIFTS_SENT)) == PARTITION_COUNT

        await wait_until(first_holds_all, ASSIGNMENT_WAIT_S)
        # A record in each partition (dead-lettered: not JSON), so each has a high watermark.
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for partition in range(PARTITION_COUNT):
                await producer.send_and_wait(gifts, b"not json", key=b"k", partition=partition)
        finally:
            await producer.stop()

        async def every_partition_gauged() -> bool:
            await first.refresh_lag_once()
            return _gauged_partitions(gifts) == set(range(PARTITION_COUNT))

        await wait_until(every_partition_gauged, ASSIGNMENT_WAIT_S)
        assert _gauged_partitions(gifts) == set(range(PARTITION_COUNT))

        second, _ = await start_consumers(engine, kafka_bootstrap, prefix, f"g-{prefix}")

        async def shared() -> bool:
            mine, theirs = _held(first, topics.GIFTS_SENT), _held(second, topics.GIFTS_SENT)
            return bool(mine) and bool(theirs) and len(mine | theirs) == PARTITION_COUNT

        await wait_until(shared, ASSIGNMENT_WAIT_S)
        await first.refresh_lag_once()
        assert _gauged_partitions(gifts) == _held(first, topics.GIFTS_SENT)

        async def each_partition_gauged_once_more() -> bool:
            await second.refresh_lag_once()
            return _gauged_partitions(gifts) == set(range(PARTITION_COUNT))

        await wait_until(each_partition_gauged_once_more, ASSIGNMENT_WAIT_S)
    finally:
        if second is not None:
            await second.stop()
        await first.stop()
