"""A topic whose offsets start again: the embedded broker, which keeps its log in memory,
restarted (a topic deleted and made again does the same on any broker). The new records take
offsets that records of the topic's earlier life held, and the database still holds that life's
rows: dead letters, their re-drives, applied events. On a broker of this module's own, restarted
between lives, and a database of its own:

- a re-drive by topic takes every dead letter not re-driven yet, wherever it is, and never the
  copy of a re-drive that failed again; a copy may land where a copy of the earlier life did.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from schemas.topics import all_topics
from services.app.consumer import ConsumerService
from services.ingestion.redrive import (
    DeadLetterRedriver,
    DeadLetterSelection,
    RedriveOutcome,
    RedriveRequest,
)
from services.runtime.embedded_broker import EmbeddedBroker
from tests import event_factory as make
from tests.ingestion_fixtures import start_consumers, wait_until

WRITER_ROLE = "giftledger_writer"
# One partition a topic: every record of a life lands on partition 0, at the offsets it is sent in.
PARTITION_COUNT = 1
ASSIGNMENT_WAIT_S = 60.0


@dataclass
class Life:
    """One life of the topics: a broker started empty, the consumers and a producer on it."""

    broker: EmbeddedBroker
    service: ConsumerService
    producer: Any
    prefix: str

    @property
    def bootstrap_servers(self) -> str:
        return self.broker.bootstrap_servers

    async def publish(self, topic: str, event: dict[str, Any]) -> tuple[int, int]:
        """The event on partition 0; the partition and offset it got."""
        sent = await self.producer.send_and_wait(
            self.prefix + topic,
            value=json.dumps(event).encode(),
            key=str(event["creator_id"]).encode(),
            partition=0,
        )
        return int(sent.partition), int(sent.offset)

    async def end(self) -> None:
        await self.producer.stop()
        await self.service.stop()
        await self.broker.stop()


async def _begin_life(engine: AsyncEngine, prefix: str) -> Life:
    broker = EmbeddedBroker(all_topics(prefix), partition_count=PARTITION_COUNT)
    await broker.start()
    try:
        service, _ = await start_consumers(engine, broker.bootstrap_servers, prefix, f"g-{prefix}")

        async def assigned() -> bool:
            return service.assigned_partition_count() == len(service.topics) * PARTITION_COUNT

        await wait_until(assigned, ASSIGNMENT_WAIT_S)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
    except BaseException:
        await broker.stop()
        raise
    return Life(broker, service, producer, prefix)


@pytest_asyncio.fixture(loop_scope="session")
async def prefix() -> AsyncIterator[str]:
    yield f"s{uuid.uuid4().hex[:8]}."


def _broken_gift() -> dict[str, Any]:
    """A gift the schema refuses (no coins): dead-lettered, and dead-lettered again when
    re-driven."""
    return {**make.gift(f"creator-{uuid.uuid4().hex[:10]}"), "coins": 0}


async def _letters(engine: AsyncEngine, prefix: str, event_id: str) -> list[tuple[int, int, int]]:
    """(id, partition, offset) of the event's dead letters, in id order."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, kafka_partition, kafka_offset FROM dead_letters"
                " WHERE topic_prefix = :prefix AND event_id = :event ORDER BY id"
            ),
            {"prefix": prefix, "event": event_id},
        )
        return [(int(row.id), int(row.kafka_partition), int(row.kafka_offset)) for row in rows]


async def _until_letters(engine: AsyncEngine, prefix: str, event_id: str, count: int) -> None:
    async def recorded() -> bool:
        return len(await _letters(engine, prefix, event_id)) == count

    await wait_until(recorded)


def _redriver(engine: AsyncEngine, life: Life) -> DeadLetterRedriver:
    return DeadLetterRedriver(
        engine, life.bootstrap_servers, life.prefix, database_role=WRITER_ROLE
    )


def _request(selection: DeadLetterSelection) -> RedriveRequest:
    return RedriveRequest(f"key-{uuid.uuid4().hex}", "alice", "the cause is fixed", None, selection)


def _by_topic() -> DeadLetterSelection:
    return DeadLetterSelection(topic=topics.GIFTS_SENT, error="schema_violation")


def _outcomes(outcomes: list[RedriveOutcome]) -> list[tuple[int, str, int | None]]:
    return [(outcome.dead_letter_id, outcome.outcome, outcome.copy_offset) for outcome in outcomes]


# Re-drive ------------------------------------------------------------------------------------


async def test_a_redrive_by_topic_takes_every_new_dead_letter_after_offsets_start_again(
    engine: AsyncEngine, prefix: str
) -> None:
    # The first life: a dead letter at 0/0, re-driven; its copy, at 0/1, fails again.
    life = await _begin_life(engine, prefix)
    try:
        first = _broken_gift()
        assert await life.publish(topics.GIFTS_SENT, first) == (0, 0)
        await _until_letters(engine, prefix, first["event_id"], 1)
        [(first_id, _, _)] = await _letters(engine, prefix, first["event_id"])
        redriven = await _redriver(engine, life).redrive(_request(_by_topic()))
        assert _outcomes(redriven) == [(first_id, "redriven", 1)]
        await _until_letters(engine, prefix, first["event_id"], 2)
    finally:
        await life.end()

    # The broker restarted: two new records dead-lettered at 0/0 and 0/1, the places the first
    # life's dead letter and its copy held.
    life = await _begin_life(engine, prefix)
    try:
        news = [_broken_gift(), _broken_gift()]
        for offset, event in enumerate(news):
            assert await life.publish(topics.GIFTS_SENT, event) == (0, offset)
        for event in news:
            await _until_letters(engine, prefix, event["event_id"], 1)
        new_ids = [(await _letters(engine, prefix, e["event_id"]))[0][0] for e in news]
        redriver = _redriver(engine, life)
        redriven = await redriver.redrive(_request(_by_topic()))
        assert _outcomes(redriven) == [
            (new_ids[0], "redriven", 2),
            (new_ids[1], "redriven", 3),
        ]
        # Their copies fail again; no re-drive by topic takes a copy, of either life.
        for event in news:
            await _until_letters(engine, prefix, event["event_id"], 2)
        assert await redriver.redrive(_request(_by_topic())) == []
    finally:
        await life.end()


async def test_a_copy_lands_where_a_copy_of_the_earlier_life_landed(
    engine: AsyncEngine, prefix: str
) -> None:
    life = await _begin_life(engine, prefix)
    try:
        first = _broken_gift()
        await life.publish(topics.GIFTS_SENT, first)
        await _until_letters(engine, prefix, first["event_id"], 1)
        [(first_id, _, _)] = await _letters(engine, prefix, first["event_id"])
        selection = DeadLetterSelection(dead_letter_ids=(first_id,))
        redriven = await _redriver(engine, life).redrive(_request(selection))
        assert _outcomes(redriven) == [(first_id, "redriven", 1)]
        await _until_letters(engine, prefix, first["event_id"], 2)
    finally:
        await life.end()

    life = await _begin_life(engine, prefix)
    try:
        new = _broken_gift()
        assert await life.publish(topics.GIFTS_SENT, new) == (0, 0)
        await _until_letters(engine, prefix, new["event_id"], 1)
        [(new_id, _, _)] = await _letters(engine, prefix, new["event_id"])
        redriver = _redriver(engine, life)
        selection = DeadLetterSelection(dead_letter_ids=(new_id,))
        # Its copy takes 0/1, where the first life's copy was: recorded as any.
        redriven = await redriver.redrive(_request(selection))
        assert _outcomes(redriven) == [(new_id, "redriven", 1)]
        again = await redriver.redrive(_request(selection))
        assert _outcomes(again) == [(new_id, "already_redriven", 1)]
        await _until_letters(engine, prefix, new["event_id"], 2)
        assert await redriver.redrive(_request(_by_topic())) == []
    finally:
        await life.end()
