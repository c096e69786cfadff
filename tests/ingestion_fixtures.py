"""A running consumer service on topics of its own (a fresh prefix and consumer group), and
helpers to publish events and wait for their effect."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.topics import all_topics
from services.app.bootstrap import build_ingestor
from services.app.consumer import ConsumerService
from services.ingestion.ingestor import Ingestor
from services.rates.rate_cards import RateCardBook, load_rate_cards
from services.runtime.embedded_broker import create_topics
from services.runtime.settings import (
    PAYOUT_PARK_COUNT_MAX_DEFAULT,
    PAYOUT_PARK_S_DEFAULT,
    Settings,
)

PARTITION_COUNT = 4
ASSIGNMENT_WAIT_S = 60.0
EFFECT_WAIT_S = 60.0
PARK_RETRY_S = 3.0


def make_ingestor(
    engine: AsyncEngine,
    rate_cards: RateCardBook,
    *,
    topic_prefix: str = "",
    park_s: float = PARK_RETRY_S,
    payout_park_s: float = PAYOUT_PARK_S_DEFAULT,
    payout_park_count_max: int = PAYOUT_PARK_COUNT_MAX_DEFAULT,
) -> Ingestor:
    """An ingestor as the composition root builds it, with the default settings but these."""
    settings = Settings(
        kafka_topic_prefix=topic_prefix,
        reversal_park_s=park_s,
        payout_park_s=payout_park_s,
        payout_park_count_max=payout_park_count_max,
    )
    return build_ingestor(settings, engine, rate_cards)


@dataclass
class RunningConsumers:
    service: ConsumerService
    ingestor: Ingestor
    producer: Any
    prefix: str
    bootstrap_servers: str

    async def publish(
        self,
        topic: str,
        event: dict[str, Any] | bytes,
        key: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        value = event if isinstance(event, bytes) else json.dumps(event).encode()
        if key is None and isinstance(event, dict):
            key = str(event.get("creator_id", ""))
        await self.producer.send_and_wait(
            self.prefix + topic,
            value=value,
            key=None if key is None else key.encode(),
            headers=headers or [],
        )

    async def read_topic(self, topic: str, expected_count: int) -> list[Any]:
        """Every record of a topic (from the start), waiting until `expected_count` are there."""
        return await self.read_topic_until(topic, lambda records: len(records) >= expected_count)

    async def read_topic_until(self, topic: str, enough: Callable[[list[Any]], bool]) -> list[Any]:
        """The records of a topic from the start, read until `enough` of them (or a timeout)."""
        consumer = AIOKafkaConsumer(
            self.prefix + topic,
            bootstrap_servers=self.bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
        )
        await consumer.start()
        records: list[Any] = []
        try:
            deadline = time.monotonic() + EFFECT_WAIT_S
            while not enough(records) and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                for batch in batches.values():
                    records.extend(batch)
        finally:
            await consumer.stop()
        return records


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout_s: float = EFFECT_WAIT_S
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout_s} s")


async def start_consumers(
    engine: AsyncEngine,
    bootstrap_servers: str,
    prefix: str,
    group: str,
    *,
    session_timeout_ms: int = 6_000,
) -> tuple[ConsumerService, Ingestor]:
    settings = Settings(
        kafka_topic_prefix=prefix,
        kafka_consumer_group=group,
        kafka_session_timeout_ms=session_timeout_ms,
        consumer_batch_wait_ms=20,
        consumer_db_retry_backoff_ms_max=500,
    )
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    ingestor = make_ingestor(engine, rate_cards, topic_prefix=prefix, park_s=PARK_RETRY_S)
    service = ConsumerService(settings, ingestor, bootstrap_servers)
    await service.start()
    return service, ingestor


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def consumers(engine: AsyncEngine, kafka_bootstrap: str) -> AsyncIterator[RunningConsumers]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    await create_topics(kafka_bootstrap, all_topics(prefix), PARTITION_COUNT)
    service, ingestor = await start_consumers(engine, kafka_bootstrap, prefix, f"g-{prefix}")

    async def assigned() -> bool:
        return service.assigned_partition_count() == len(service.topics) * PARTITION_COUNT

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        await wait_until(assigned, ASSIGNMENT_WAIT_S)
        yield RunningConsumers(service, ingestor, producer, prefix, kafka_bootstrap)
    finally:
        await producer.stop()
        await service.stop()
