"""The Kafka cluster a service runs against: `KAFKA_BOOTSTRAP_SERVERS`, or the embedded broker.

Either way every giftledger topic (with the configured prefix) exists when this yields: topics are
created with the configured partition count where they are missing, never relied on to appear.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from schemas.topics import all_topics
from services.runtime.embedded_broker import EmbeddedBroker, create_topics, wait_for_broker
from services.runtime.settings import Settings

BROKER_WAIT_S = 60.0

logger = logging.getLogger(__name__)


@asynccontextmanager
async def open_kafka(settings: Settings) -> AsyncIterator[str]:
    """Yield a bootstrap servers string for a cluster holding every giftledger topic."""
    names = all_topics(settings.kafka_topic_prefix)
    if settings.kafka_bootstrap_servers:
        servers = settings.kafka_bootstrap_servers
        await wait_for_broker(servers, BROKER_WAIT_S)
        created = await create_topics(servers, names, settings.kafka_partition_count)
        if created:
            logger.info("created topics %s", ", ".join(created))
        yield servers
        return
    async with EmbeddedBroker(
        names, partition_count=settings.kafka_partition_count, log_dir=settings.data_dir / "kafka"
    ) as broker:
        logger.info("embedded broker on %s", broker.bootstrap_servers)
        yield broker.bootstrap_servers
