"""A database outage pauses the consumer; it retries with bounded backoff and skips nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from ledger.queries import creator_balances
from schemas import topics
from schemas.topics import all_topics
from services.embedded_broker import create_topics
from tests import event_factory as make
from tests.ingestion_fixtures import RunningConsumers, start_consumers, wait_until
from tests.tcp_proxy import CuttableProxy

OUTAGE_S = 4.0


@pytest_asyncio.fixture(loop_scope="session")
async def proxied(
    database_url: str, kafka_bootstrap: str
) -> AsyncIterator[tuple[RunningConsumers, CuttableProxy]]:
    proxy = CuttableProxy(database_url)
    await proxy.start()
    engine = create_engine(proxy.url_through(database_url), pool_size=2, statement_timeout_ms=5_000)
    prefix = f"o{uuid.uuid4().hex[:8]}."
    await create_topics(kafka_bootstrap, all_topics(prefix), 2)
    service, ingestor = await start_consumers(engine, kafka_bootstrap, prefix, f"g-{prefix}")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:

        async def assigned() -> bool:
            return service.assigned_partition_count() == len(service.topics) * 2

        await wait_until(assigned)
        yield RunningConsumers(service, ingestor, producer, prefix, kafka_bootstrap), proxy
    finally:
        await producer.stop()
        await service.stop()
        await engine.dispose()
        await proxy.cut()


@pytest.mark.faults
async def test_gifts_sent_during_an_outage_are_applied_once_it_ends(
    proxied: tuple[RunningConsumers, CuttableProxy], engine: AsyncEngine
) -> None:
    consumers, proxy = proxied
    creator = f"creator-{uuid.uuid4().hex[:10]}"
    before = make.gift(creator, coins=2)
    await consumers.publish(topics.GIFTS_SENT, before)

    async def balance_is(expected: int) -> bool:
        async with engine.connect() as conn:
            balances = await creator_balances(conn, creator)
        return [b.posted for b in balances] == [expected]

    await wait_until(lambda: balance_is(1_000))
    await proxy.cut()
    during = [make.gift(creator, coins=1) for _ in range(20)]
    for gift in during:
        await consumers.publish(topics.GIFTS_SENT, gift)
    await asyncio.sleep(OUTAGE_S)
    assert await balance_is(1_000), "nothing can be applied while the database is away"
    await proxy.restore()
    await wait_until(lambda: balance_is(1_000 + 20 * 500))
    async with engine.connect() as conn:
        applied = await conn.execute(
            text("SELECT count(*) FROM applied_events WHERE creator_id = :c"), {"c": creator}
        )
        assert applied.scalar_one() == 21
    assert consumers.ingestor.counts.balanced()
