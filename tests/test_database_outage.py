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
from ledger.verify import verify
from schemas import topics
from schemas.topics import all_topics
from services.runtime.embedded_broker import create_topics
from tests import event_factory as make
from tests.ingestion_fixtures import RunningConsumers, start_consumers, wait_until
from tests.ledger_helpers import one_snapshot
from tests.tcp_proxy import CuttableProxy

pytestmark = pytest.mark.server

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


LOAD_GIFT_COUNT = 6_000
LOAD_RATE_PER_S = 2_000


@pytest.mark.faults
async def test_connections_cut_and_restored_under_load_lose_and_double_nothing(
    proxied: tuple[RunningConsumers, CuttableProxy], engine: AsyncEngine
) -> None:
    consumers, proxy = proxied
    creators = [f"creator-{uuid.uuid4().hex[:10]}" for _ in range(30)]
    gifts = [make.gift(creators[i % 30], coins=1 + i % 4) for i in range(LOAD_GIFT_COUNT)]
    expected: dict[str, int] = {}
    for gift in gifts:
        expected[str(gift["creator_id"])] = (
            expected.get(str(gift["creator_id"]), 0) + int(str(gift["coins"])) * 500
        )

    async def publish_paced() -> None:
        step = LOAD_RATE_PER_S // 10
        for start in range(0, len(gifts), step):
            for gift in gifts[start : start + step]:
                await consumers.producer.send(
                    consumers.prefix + topics.GIFTS_SENT,
                    value=make.encode(gift),
                    key=str(gift["creator_id"]).encode(),
                )
            await asyncio.sleep(0.1)
        await consumers.producer.flush()

    async def applied_count() -> int:
        async with engine.connect() as conn:
            result = await conn.execute(
                text("SELECT count(*) FROM applied_events WHERE creator_id = ANY(:c)"),
                {"c": creators},
            )
            return int(result.scalar_one())

    publishing = asyncio.create_task(publish_paced())

    async def under_way() -> bool:
        return await applied_count() > LOAD_GIFT_COUNT // 6

    await wait_until(under_way)
    for _ in range(2):  # cut twice while the load goes on
        await proxy.cut()
        await asyncio.sleep(1.5)
        await proxy.restore()
        await asyncio.sleep(1.0)
    await publishing

    async def all_applied() -> bool:
        return await applied_count() == LOAD_GIFT_COUNT

    await wait_until(all_applied, 120)
    async with one_snapshot(engine) as conn:
        rows = await conn.execute(
            text(
                "SELECT creator_id, credits_posted - debits_posted AS balance FROM accounts"
                " WHERE creator_id = ANY(:c) AND kind = 'creator_diamonds_available'"
            ),
            {"c": creators},
        )
        assert {row.creator_id: row.balance for row in rows} == expected
        assert await verify(conn) == []
    assert consumers.ingestor.counts.balanced()
