"""The embedded Tansu broker, and the Kafka behaviour giftledger relies on, against a real broker.

Tests that start their own broker use `EmbeddedBroker` directly; the message tests use the
session's `kafka_bootstrap`, so they also run against a cluster named by `KAFKA_BOOTSTRAP_SERVERS`.
Each of those uses its own topic and consumer group. On Tansu a consumer that leaves its group
is only dropped when its session times out, so the test that restarts a consumer takes about two
session timeouts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.client import AIOKafkaClient  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from schemas.topics import all_topics
from services.runtime.embedded_broker import (
    BrokerUnavailableError,
    EmbeddedBroker,
    EmbeddedBrokerError,
    create_topics,
    wait_for_broker,
)

# Real Kafka refuses sessions shorter than its group.min.session.timeout.ms (6 s by default).
SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_INTERVAL_MS = 1_000
RECEIVE_TIMEOUT_S = 30.0
TOPIC_PARTITION_COUNT = 3


def unique_name(purpose: str) -> str:
    return f"test.{purpose}.{uuid.uuid4().hex[:12]}"


async def partition_counts(bootstrap_servers: str) -> dict[str, int]:
    """Partitions per topic, from a metadata request for all topics (which creates none)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers)
    await client.bootstrap()
    try:
        cluster = await client.fetch_all_metadata()
        return {topic: len(cluster.partitions_for_topic(topic)) for topic in cluster.topics()}
    finally:
        await client.close()


def group_consumer(bootstrap_servers: str, topic: str, group_id: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
    )


async def produce(
    bootstrap_servers: str,
    topic: str,
    messages: list[tuple[bytes, bytes, list[tuple[str, bytes]]]],
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    try:
        for key, value, headers in messages:
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


async def test_broker_creates_every_topic_with_the_requested_partition_count() -> None:
    async with EmbeddedBroker(partition_count=3) as broker:
        counts = await partition_counts(broker.bootstrap_servers)

    assert {topic: counts.get(topic) for topic in all_topics()} == dict.fromkeys(all_topics(), 3)


async def test_creating_topics_again_leaves_existing_ones_as_they_are() -> None:
    async with EmbeddedBroker(["gifts.sent"], partition_count=2) as broker:
        created = await create_topics(broker.bootstrap_servers, ["gifts.sent", "tips.received"], 5)
        counts = await partition_counts(broker.bootstrap_servers)

    assert created == ["tips.received"]
    assert counts == {"gifts.sent": 2, "tips.received": 5}


async def test_keyed_message_with_headers_comes_back_unchanged(kafka_bootstrap: str) -> None:
    topic = unique_name("round-trip")
    await create_topics(kafka_bootstrap, [topic], TOPIC_PARTITION_COUNT)
    headers = [("event-type", b"gift.sent"), ("source", b"test")]
    await produce(kafka_bootstrap, topic, [(b"creator-1", b'{"coins": 5}', headers)])

    consumer = group_consumer(kafka_bootstrap, topic, unique_name("group"))
    await consumer.start()
    try:
        async with asyncio.timeout(RECEIVE_TIMEOUT_S):
            record = await consumer.getone()
        await consumer.commit()
    finally:
        await consumer.stop()

    assert (record.key, record.value, list(record.headers)) == (
        b"creator-1",
        b'{"coins": 5}',
        headers,
    )


async def test_second_consumer_in_group_resumes_after_the_committed_offset(
    kafka_bootstrap: str,
) -> None:
    topic = unique_name("resume")
    group_id = unique_name("group")
    await create_topics(kafka_bootstrap, [topic], TOPIC_PARTITION_COUNT)
    values = [b"first", b"second", b"third"]
    await produce(kafka_bootstrap, topic, [(b"creator-7", value, []) for value in values])

    first = group_consumer(kafka_bootstrap, topic, group_id)
    await first.start()
    try:
        async with asyncio.timeout(RECEIVE_TIMEOUT_S):
            consumed = [await first.getone(), await first.getone()]
        await first.commit()
    finally:
        await first.stop()

    second = group_consumer(kafka_bootstrap, topic, group_id)
    await second.start()
    try:
        async with asyncio.timeout(RECEIVE_TIMEOUT_S):
            resumed = await second.getone()
        partition = TopicPartition(topic, resumed.partition)
        committed_offset = await second.committed(partition)
    finally:
        await second.stop()

    assert [record.value for record in consumed] == [b"first", b"second"]
    assert (resumed.value, resumed.offset, committed_offset) == (b"third", 2, 2)


async def test_stop_leaves_no_broker_process_running() -> None:
    broker = EmbeddedBroker([])
    await broker.start()
    pid = broker.pid
    log_path = broker.log_path
    host, port = broker.bootstrap_servers.split(":")

    await broker.stop()

    assert pid is not None
    assert log_path is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(host, int(port))
    assert not log_path.exists()
    with pytest.raises(RuntimeError, match="not running"):
        _ = broker.bootstrap_servers


async def test_broker_refuses_a_port_that_is_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken_port = listener.getsockname()[1]

        with pytest.raises(EmbeddedBrokerError, match="taken"):
            await EmbeddedBroker([], port=taken_port).start()


async def test_waiting_for_a_silent_port_gives_up_after_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts connections but never answers a Kafka request
        silent_servers = f"127.0.0.1:{listener.getsockname()[1]}"
        loop = asyncio.get_running_loop()
        started_s = loop.time()

        with pytest.raises(BrokerUnavailableError, match=r"within 0\.5 s"):
            await wait_for_broker(silent_servers, 0.5)

        assert loop.time() - started_s < 2.0
