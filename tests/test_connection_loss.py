"""A connection the server ends (pg_terminate_backend, as a restart or an administrator does) is
an outage like any other: the batch is retried with backoff, logged as a warning, the broken
connection is discarded, and nothing is logged as an unexpected error."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import ARRAY_ELEMENT_TYPES, create_engine
from schemas import topics
from schemas.topics import all_topics
from services.app.consumer import is_database_outage
from services.runtime.embedded_broker import create_topics
from tests import event_factory as make
from tests.ingestion_fixtures import RunningConsumers, start_consumers, wait_until
from tests.ledger_helpers import ledger_problems
from tests.tcp_proxy import CuttableProxy

pytestmark = pytest.mark.server

GIFTS_PER_STEP = 100
STEP_PAUSE_S = 0.05
TERMINATION_PAUSE_S = 0.07
# Connections are ended until a gift batch has met one mid-transaction (a cut between batches only
# costs the pool a pre-ping): at least this many rounds, at most the limit, while gifts flow.
TERMINATION_ROUND_COUNT_MIN = 40
TERMINATION_ROUND_COUNT_MAX = 600


@pytest_asyncio.fixture(loop_scope="session")
async def running(
    database_url: str, kafka_bootstrap: str
) -> AsyncIterator[tuple[RunningConsumers, AsyncEngine]]:
    engine = create_engine(database_url, pool_size=2, statement_timeout_ms=5_000)
    prefix = f"k{uuid.uuid4().hex[:8]}."
    await create_topics(kafka_bootstrap, all_topics(prefix), 2)
    service, ingestor = await start_consumers(engine, kafka_bootstrap, prefix, f"g-{prefix}")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:

        async def assigned() -> bool:
            return service.assigned_partition_count() == len(service.topics) * 2

        await wait_until(assigned)
        yield RunningConsumers(service, ingestor, producer, prefix, kafka_bootstrap), engine
    finally:
        await producer.stop()
        await service.stop()
        await engine.dispose()


async def _terminate_consumer_connections(engine: AsyncEngine, database: str) -> int:
    """End every other giftledger connection to `database`, as the server's administrator."""
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = :database AND pid <> pg_backend_pid()"
                " AND application_name = 'giftledger' AND backend_type = 'client backend'"
            ),
            {"database": database},
        )
        return int(result.scalar_one())


async def test_terminated_connections_are_an_outage_not_an_unexpected_error(
    running: tuple[RunningConsumers, AsyncEngine],
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumers, consumer_engine = running
    database = consumer_engine.url.database
    assert database is not None
    creators = [f"creator-{uuid.uuid4().hex[:10]}" for _ in range(20)]
    caplog.set_level(logging.WARNING)
    published = 0
    terminating = True

    def outage_logged() -> bool:
        return any("database unavailable" in r.getMessage() for r in caplog.records)

    async def publish_paced() -> None:
        nonlocal published
        while terminating:
            for _ in range(GIFTS_PER_STEP):
                gift = make.gift(creators[published % len(creators)], coins=1)
                await consumers.producer.send(
                    consumers.prefix + topics.GIFTS_SENT,
                    value=make.encode(gift),
                    key=str(gift["creator_id"]).encode(),
                )
                published += 1
            await asyncio.sleep(STEP_PAUSE_S)
        await consumers.producer.flush()

    async def applied_count() -> int:
        async with engine.connect() as conn:
            result = await conn.execute(
                text("SELECT count(*) FROM applied_events WHERE creator_id = ANY(:c)"),
                {"c": creators},
            )
            return int(result.scalar_one())

    publishing = asyncio.create_task(publish_paced())
    terminated = 0
    rounds = 0
    while rounds < TERMINATION_ROUND_COUNT_MIN or (
        rounds < TERMINATION_ROUND_COUNT_MAX and not outage_logged()
    ):
        await asyncio.sleep(TERMINATION_PAUSE_S)
        terminated += await _terminate_consumer_connections(engine, database)
        rounds += 1
    terminating = False
    await publishing

    async def all_applied() -> bool:
        return await applied_count() == published

    await wait_until(all_applied, 120)
    assert terminated > 0, "the test ended no connection: it proves nothing"
    assert await ledger_problems(engine) == []
    assert consumers.ingestor.counts.balanced()
    errors = [
        f"{record.name}: {record.getMessage()}"
        for record in caplog.records
        if record.levelno >= logging.ERROR
    ]
    assert errors == []
    outage_warnings = [
        r.getMessage() for r in caplog.records if "database unavailable" in r.getMessage()
    ]
    assert outage_warnings, "a terminated connection is reported as an outage"
    assert all(" retry 1 " in message for message in outage_warnings), (
        "an outage is logged once when it starts, not at every retry"
    )
    assert all("\n" not in message and "[SQL" not in message for message in outage_warnings), (
        "a warning is one line, without the statement that met the outage"
    )
    assert any("database back" in r.getMessage() for r in caplog.records)
    failed = [r.getMessage() for r in caplog.records if "trying it again" in r.getMessage()]
    assert failed == [], "a terminated connection is an outage, never a failing batch"


async def test_a_connection_lost_while_it_learns_the_array_types_fails_as_an_outage(
    database_url: str,
) -> None:
    """A new connection first learns the array types' codecs (`ledger.database`). Lost right
    then (as when the server ends connections while the pool replaces the ones it ended), it
    must fail as SQLAlchemy's disconnect, which the consumers wait out, not as the driver's own
    error, which they took for a poison record: CI once saw valid gifts dead-lettered as
    `processing_failed` so."""
    learning = f"CAST($1 AS {ARRAY_ELEMENT_TYPES[0]}[])".encode()
    proxy = CuttableProxy(database_url, cut_on=learning)
    await proxy.start()
    engine = create_engine(proxy.url_through(database_url), pool_size=1)
    try:
        with pytest.raises(DBAPIError) as raised:
            async with engine.connect():
                pass
        assert is_database_outage(raised.value), raised.value
    finally:
        await engine.dispose()
        await proxy.cut()


async def test_a_connection_the_server_ends_before_it_learns_the_array_types_fails_as_an_outage(
    database_url: str,
) -> None:
    """The server ends a new connection right after its start, before it learns the array
    types (an administrator or a restart ending every connection while the pool replaces the
    ones it ended): the server's last message, FATAL, comes while the connection is idle, and
    asyncpg then refuses the next statement with its own error ("another operation (2) is in
    progress") instead of a lost connection's. It must still fail as a lost connection, which
    the consumers wait out, not as an error they take for a poison record: seen in the test
    above, a batch's retry after an outage failing so (`database unavailable` with no
    `database back`), the poison isolation silently trying the batch again."""
    proxy = CuttableProxy(database_url)
    await proxy.start()
    engine = create_engine(proxy.url_through(database_url), pool_size=1)
    try:
        async with engine.connect():  # the engine's first connection, which meets the server
            pass
        await engine.dispose()  # the pool empties; the engine stays
        proxy.end_after_start = True
        with pytest.raises(DBAPIError) as raised:
            async with engine.connect():
                pass
        assert "another operation (2) is in progress" in str(raised.value)
        assert raised.value.connection_invalidated, raised.value
        assert is_database_outage(raised.value), raised.value
    finally:
        await engine.dispose()
        await proxy.cut()
