"""A partition's end offset, right on every broker giftledger runs against.

Kafka clients ask for it with ListOffsets (`AIOKafkaConsumer.end_offsets`). The embedded broker
(Tansu) answers with less than the end once one produce request carried several records of a
partition, as every producer with a `linger_ms` sends them: for a partition of 100 records written
in one batch it answers 1. The high watermark of a fetch response is right there as on Kafka, so
the end is the larger of the two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import TopicPartition  # type: ignore[import-untyped]

# How long each fetch for a high watermark waits at most; a bound on the whole is the caller's.
HIGH_WATERMARK_FETCH_WAIT_MS = 200


async def end_offsets(
    consumer: Any, partitions: Sequence[TopicPartition], wait_s: float
) -> dict[TopicPartition, int]:
    """The end offset (the next record's offset) of each of `partitions`: the larger of what
    ListOffsets says and the high watermark of a fetch. Raises `TimeoutError` when the broker
    gives no high watermark for some partition within `wait_s`.

    `consumer` is a started consumer that subscribes to nothing: this assigns it `partitions`
    and moves its positions (the records fetched on the way are dropped), so the caller seeks
    where it wants to read afterwards."""
    wanted = list(partitions)
    listed = await consumer.end_offsets(wanted)
    consumer.assign(wanted)  # a new assignment: no high watermark is known yet
    for partition in wanted:
        # Offset 0, or where the consumer's `auto_offset_reset` moves it when retention has
        # removed offset 0: either way the fetch's answer holds the high watermark.
        consumer.seek(partition, 0)
    async with asyncio.timeout(wait_s):
        while any(consumer.highwater(partition) is None for partition in wanted):
            await consumer.getmany(*wanted, timeout_ms=HIGH_WATERMARK_FETCH_WAIT_MS, max_records=1)
    return {
        partition: max(int(listed[partition]), int(consumer.highwater(partition)))
        for partition in wanted
    }
