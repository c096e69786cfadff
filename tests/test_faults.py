"""Faults under load (gifts at thousands a second), each ending with `verify` passing and the
ledger equal to what was sent: PostgreSQL restarted mid-load, and the payout rail down for a
while then back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from ledger.migrate import upgrade_to_head
from ledger.verify import verify
from schemas import topics
from schemas.topics import all_topics
from services.payout_rail.rail import RailSettings, simulated_rail
from services.runtime.embedded_broker import create_topics
from services.runtime.embedded_postgres import EmbeddedPostgres
from tests import event_factory as make
from tests.ingestion_fixtures import RunningConsumers, start_consumers, wait_until
from tests.ledger_helpers import ledger_problems, one_snapshot

pytestmark = pytest.mark.faults

GIFT_COUNT = 6_000
PUBLISH_RATE_PER_S = 3_000
CATCH_UP_S = 120.0
CASHOUT_COUNT = 10  # 10 x 2,000 diamonds: the creator's whole balance, within the daily limit


@pytest_asyncio.fixture(loop_scope="session")
async def own_postgres() -> AsyncIterator[tuple[EmbeddedPostgres, AsyncEngine]]:
    """A PostgreSQL server of this test's own, so that restarting it disturbs no other test."""
    async with EmbeddedPostgres() as server:
        engine = create_engine(server.url("postgres"), pool_size=4, statement_timeout_ms=10_000)
        await upgrade_to_head(engine)
        yield server, engine
        await engine.dispose()


async def _publish_paced(
    producer: AIOKafkaProducer, topic: str, gifts: list[dict[str, object]]
) -> None:
    step = PUBLISH_RATE_PER_S // 10
    for start in range(0, len(gifts), step):
        for gift in gifts[start : start + step]:
            await producer.send(
                topic, value=make.encode(gift), key=str(gift["creator_id"]).encode()
            )
        await asyncio.sleep(0.1)
    await producer.flush()


async def _restart_under_a_waiting_batch(server: EmbeddedPostgres) -> None:
    """Restart the server while a consumer's batch is in its transaction: a lock on
    `applied_events`, which every batch of gifts writes, holds the next batch there until the
    restart cuts it. A restart that fell between two batches went unseen (the pool replaced its
    connections quietly), and the test then saw no outage at all."""
    side_engine = create_engine(server.url("postgres"), pool_size=2)
    blocker = await side_engine.connect()
    try:
        await blocker.execute(text("LOCK TABLE applied_events IN SHARE MODE"))

        async def a_batch_waits() -> bool:
            async with side_engine.connect() as conn:
                waiting = await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
                return bool(waiting.scalar_one())

        await wait_until(a_batch_waits, CATCH_UP_S)
        await server.restart()
    finally:
        with contextlib.suppress(Exception):  # its server process is gone with the restart
            await blocker.close()
        await side_engine.dispose()


async def test_postgres_restarted_mid_load_loses_and_doubles_nothing(
    own_postgres: tuple[EmbeddedPostgres, AsyncEngine],
    kafka_bootstrap: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The restart is an outage: retried, reported as a warning, never as an unexpected error."""
    server, engine = own_postgres
    caplog.set_level(logging.WARNING)
    prefix = f"r{uuid.uuid4().hex[:8]}."
    await create_topics(kafka_bootstrap, all_topics(prefix), 4)
    service, ingestor = await start_consumers(engine, kafka_bootstrap, prefix, f"g-{prefix}")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    creators = [f"creator-{uuid.uuid4().hex[:8]}" for _ in range(40)]
    gifts = [make.gift(creators[i % 40], coins=1 + i % 5) for i in range(GIFT_COUNT)]
    expected: dict[str, int] = {}
    for gift in gifts:
        creator = str(gift["creator_id"])
        expected[creator] = expected.get(creator, 0) + int(str(gift["coins"])) * 500
    try:
        publishing = asyncio.create_task(
            _publish_paced(producer, prefix + topics.GIFTS_SENT, gifts)
        )

        async def some_applied() -> bool:
            return ingestor.counts.applied > GIFT_COUNT // 5

        await wait_until(some_applied, CATCH_UP_S)
        await _restart_under_a_waiting_batch(server)
        await publishing

        async def all_applied() -> bool:
            async with engine.connect() as conn:
                count = await conn.execute(text("SELECT count(*) FROM applied_events"))
                return bool(count.scalar_one() == GIFT_COUNT)

        await wait_until(all_applied, CATCH_UP_S)
    finally:
        await producer.stop()
        await service.stop()
    async with one_snapshot(engine) as conn:
        rows = await conn.execute(
            text(
                "SELECT creator_id, credits_posted - debits_posted AS balance FROM accounts"
                " WHERE kind = 'creator_diamonds_available'"
            )
        )
        assert {row.creator_id: row.balance for row in rows} == expected
        assert await verify(conn) == []
    assert ingestor.counts.balanced()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("database unavailable" in r.getMessage() for r in caplog.records)


async def test_cash_outs_wait_while_the_payout_rail_is_down_and_finish_when_it_is_back(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = f"creator-{uuid.uuid4().hex[:10]}"
    await consumers.publish(topics.CREATORS_UPDATED, make.creator_update(creator))
    for _ in range(2):  # 20,000 diamonds: ten cash-outs of 2,000
        await consumers.publish(topics.GIFTS_SENT, make.gift(creator, coins=2, count=10_000))
    requests = [make.cashout_request(creator, 2_000) for _ in range(CASHOUT_COUNT)]

    async def status_counts() -> dict[str, int]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT status, count(*) FROM cashouts WHERE creator_id = :c GROUP BY 1"),
                {"c": creator},
            )
            return {row[0]: row[1] for row in rows}

    async def funded() -> bool:
        async with engine.connect() as conn:
            known = await conn.execute(
                text(
                    "SELECT count(*) FROM accounts WHERE creator_id = :c"
                    " AND credits_posted = 20000000"
                ),
                {"c": creator},
            )
            profile = await conn.execute(
                text("SELECT count(*) FROM creators WHERE creator_id = :c"), {"c": creator}
            )
            return bool(known.scalar_one() and profile.scalar_one())

    await wait_until(funded)
    others = [f"creator-{uuid.uuid4().hex[:8]}" for _ in range(20)]
    load = [make.gift(others[i % 20], coins=1) for i in range(GIFT_COUNT)]
    gifts_topic = consumers.prefix + topics.GIFTS_SENT
    loading = asyncio.create_task(_publish_paced(consumers.producer, gifts_topic, load))
    for request in requests:
        await consumers.publish(topics.CASHOUTS_REQUESTED, request)

    async def all_submitted() -> bool:
        return await status_counts() == {"submitted": CASHOUT_COUNT}

    await wait_until(all_submitted)
    await asyncio.sleep(2)  # the bank is down: nothing moves
    assert await status_counts() == {"submitted": CASHOUT_COUNT}
    rail = simulated_rail(
        RailSettings(seed=3, paid_delay_ms=20, failure_rate=0, return_rate=0),
        consumers.bootstrap_servers,
        topic_prefix=consumers.prefix,
        consumer_group=f"rail-{consumers.prefix}",
        session_timeout_ms=6_000,
    )
    await rail.start()
    try:

        async def all_paid() -> bool:
            return await status_counts() == {"paid": CASHOUT_COUNT}

        await wait_until(all_paid)
        await loading
    finally:
        await rail.stop()

    async def load_applied() -> bool:
        async with engine.connect() as conn:
            count = await conn.execute(
                text("SELECT count(*) FROM applied_events WHERE creator_id = ANY(:c)"),
                {"c": others},
            )
            return bool(count.scalar_one() == GIFT_COUNT)

    await wait_until(load_applied, CATCH_UP_S)
    assert await ledger_problems(engine) == []
