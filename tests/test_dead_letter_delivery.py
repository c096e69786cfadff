"""A dead letter reaches its topic or stays pending: while the dead-letter producer cannot
publish, the batch's offsets do not move past it and a parked reversal stays parked; a service
that starts afterwards in the same group publishes them. Nothing is applied twice meanwhile."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.queries import creator_balances
from schemas import topics
from schemas.topics import all_topics
from services.app.consumer import ConsumerService
from services.ingestion.ingestor import Ingestor
from services.runtime import metrics
from services.runtime.embedded_broker import create_topics
from tests import event_factory as make
from tests.ingestion_fixtures import (
    PARK_RETRY_S,
    RunningConsumers,
    start_consumers,
    wait_until,
)

PARTITIONS = 2
DIAMONDS_PER_COIN_MILLI = 500


class Deployment:
    """Consumers on topics of their own, that a test can stop and start again in one group."""

    def __init__(self, engine: AsyncEngine, bootstrap: str) -> None:
        self.engine = engine
        self.bootstrap = bootstrap
        self.prefix = f"d{uuid.uuid4().hex[:8]}."
        self.group = f"g-{self.prefix}"
        self.service: ConsumerService | None = None
        self.ingestor: Ingestor | None = None

    async def start(self) -> tuple[ConsumerService, Ingestor]:
        service, ingestor = await start_consumers(
            self.engine, self.bootstrap, self.prefix, self.group
        )
        self.service, self.ingestor = service, ingestor

        async def assigned() -> bool:
            return service.assigned_partition_count() == len(service.topics) * PARTITIONS

        await wait_until(assigned)
        return service, ingestor

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None


@pytest_asyncio.fixture(loop_scope="session")
async def deployment(engine: AsyncEngine, kafka_bootstrap: str) -> AsyncIterator[Deployment]:
    created = Deployment(engine, kafka_bootstrap)
    await create_topics(kafka_bootstrap, all_topics(created.prefix), PARTITIONS)
    try:
        yield created
    finally:
        await created.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    started = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


async def _cut_dead_letter_producer(service: ConsumerService) -> None:
    """Stop the producer the service publishes dead letters with: every send fails from now."""
    await service.dead_letter_producer.stop()


def _reader(deployment: Deployment, producer: AIOKafkaProducer) -> RunningConsumers:
    assert deployment.service is not None
    assert deployment.ingestor is not None
    return RunningConsumers(
        deployment.service, deployment.ingestor, producer, deployment.prefix, deployment.bootstrap
    )


@pytest.mark.faults
async def test_a_batch_whose_dead_letter_cannot_be_published_is_not_committed_past(
    deployment: Deployment, producer: AIOKafkaProducer, engine: AsyncEngine
) -> None:
    service, ingestor = await deployment.start()
    creator = f"creator-{uuid.uuid4().hex[:10]}"
    gift = make.gift(creator, coins=3)
    failures_before = metrics.DEAD_LETTER_PUBLISH_FAILURES.labels(topics.GIFTS_SENT)._value.get()
    counted_before = _dead_lettered_metric()
    await _cut_dead_letter_producer(service)
    gifts_topic = deployment.prefix + topics.GIFTS_SENT
    await producer.send_and_wait(gifts_topic, value=b"{not json", key=creator.encode())
    await producer.send_and_wait(gifts_topic, value=make.encode(gift), key=creator.encode())

    async def rewound_and_came_again() -> bool:
        # The two records may come in one batch or in two: either way the gift's batch is
        # rewound (its dead letter unpublished), so the gift comes again as a duplicate; a
        # commit past it would never bring it back.
        failures = metrics.DEAD_LETTER_PUBLISH_FAILURES.labels(topics.GIFTS_SENT)._value.get()
        return bool(failures - failures_before >= 2 and ingestor.counts.duplicates >= 1)

    await wait_until(rewound_and_came_again)
    async with engine.connect() as conn:
        [balance] = await creator_balances(conn, creator)
    assert balance.posted == 3 * DIAMONDS_PER_COIN_MILLI, "applied once, however often rewound"
    # Counted once, as its one row: each time the batch came again its dead letter was given
    # again, a redelivered record that changed nothing (a duplicate).
    assert await _dead_letter_rows(engine, deployment.prefix) == 1
    assert (ingestor.counts.dead_lettered, ingestor.counts.dead_letter_errors) == (
        1,
        {"malformed_json": 1},
    )
    assert _dead_lettered_metric() - counted_before == 1
    assert ingestor.counts.balanced()
    await deployment.stop()

    _, restarted = await deployment.start()
    reader = _reader(deployment, producer)
    letters = await reader.read_topic_until(
        topics.dead_letter_topic(topics.GIFTS_SENT), lambda records: len(records) >= 1
    )
    assert [record.value for record in letters] == [b"{not json"]
    assert dict(letters[0].headers)["dlq.error"] == b"malformed_json"
    async with engine.connect() as conn:
        [balance] = await creator_balances(conn, creator)
    assert balance.posted == 3 * DIAMONDS_PER_COIN_MILLI
    assert restarted.counts.balanced()
    assert restarted.counts.dead_lettered == 0
    assert _dead_lettered_metric() - counted_before == 1
    assert await _dead_letter_rows(engine, deployment.prefix) == 1


def _dead_lettered_metric() -> float:
    """`giftledger_events_dead_lettered_total` of gifts refused as malformed JSON."""
    counter = metrics.EVENTS_DEAD_LETTERED.labels(topics.GIFTS_SENT, "malformed_json")
    return float(counter._value.get())


async def _dead_letter_rows(engine: AsyncEngine, prefix: str) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT count(*) FROM dead_letters WHERE topic_prefix = :prefix"),
            {"prefix": prefix},
        )
        return int(found.scalar_one())


@pytest.mark.faults
async def test_a_parked_reversal_stays_parked_until_its_dead_letter_is_published(
    deployment: Deployment, producer: AIOKafkaProducer, engine: AsyncEngine
) -> None:
    service, _ = await deployment.start()
    reversal = make.reversal(f"creator-{uuid.uuid4().hex[:10]}", f"gift-{uuid.uuid4().hex}")
    event_id = str(reversal["event_id"])
    await _cut_dead_letter_producer(service)
    await producer.send_and_wait(
        deployment.prefix + topics.GIFTS_REVERSED,
        value=make.encode(reversal),
        key=str(reversal["creator_id"]).encode(),
    )

    async def parked_count() -> int:
        async with engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT count(*) FROM parked_events"
                    " WHERE topic_prefix = :prefix AND event_id = :id"
                ),
                {"prefix": deployment.prefix, "id": event_id},
            )
            return int(result.scalar_one())

    async def parked() -> bool:
        return await parked_count() == 1

    await wait_until(parked)
    # past the parking deadline, every sweep tries to dead-letter it and cannot publish
    await asyncio.sleep(PARK_RETRY_S + 4.0)
    assert await parked_count() == 1, "the parked row stays while its dead letter is unsent"
    await deployment.stop()

    await deployment.start()
    reader = _reader(deployment, producer)
    letters = await reader.read_topic_until(
        topics.dead_letter_topic(topics.GIFTS_REVERSED), lambda records: len(records) >= 1
    )
    assert [json.loads(record.value)["event_id"] for record in letters] == [event_id]
    assert dict(letters[0].headers)["dlq.error"] == b"gift_not_found"

    async def unparked() -> bool:
        return await parked_count() == 0

    await wait_until(unparked)
