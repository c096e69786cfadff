"""The Kafka cluster the tests talk to, one per test session.

With `KAFKA_BOOTSTRAP_SERVERS` set, the tests use that cluster and create every giftledger topic
that is missing there. Without it, they start the embedded Tansu broker with every topic at
`TEST_PARTITION_COUNT` partitions. `KAFKA_TOPIC_PREFIX` puts a prefix in front of the topic names,
as it does in the service's settings.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest_asyncio

from schemas.topics import all_topics
from services.runtime.embedded_broker import EmbeddedBroker, create_topics, wait_for_broker

TEST_PARTITION_COUNT = 4
EXTERNAL_BROKER_WAIT_S = 30.0


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def kafka_bootstrap() -> AsyncIterator[str]:
    """A bootstrap servers string for a cluster that holds every giftledger topic."""
    topics = all_topics(os.environ.get("KAFKA_TOPIC_PREFIX", ""))
    external_servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external_servers:
        await wait_for_broker(external_servers, EXTERNAL_BROKER_WAIT_S)
        await create_topics(external_servers, topics, TEST_PARTITION_COUNT)
        yield external_servers
        return
    async with EmbeddedBroker(topics, partition_count=TEST_PARTITION_COUNT) as broker:
        yield broker.bootstrap_servers
