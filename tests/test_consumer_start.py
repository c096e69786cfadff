"""The consumer service starts its subscribers together, and a failed start leaves none running;
it starts the outbox's pruning with them, and a relay pass as soon as a batch that queued outbox
rows commits. A failed round of one of its background jobs is logged with its error, and the next
round runs."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from schemas.topics import all_topics
from services.app import consumer
from services.app.consumer import ConsumerService
from services.rates.rate_cards import load_rate_cards
from services.runtime.embedded_broker import create_topics
from services.runtime.settings import Settings
from tests import event_factory as make
from tests.ingestion_fixtures import ASSIGNMENT_WAIT_S, PARTITION_COUNT, make_ingestor, wait_until
from tests.test_outbox_retention import add_row


async def _new_service(engine: AsyncEngine, kafka_bootstrap: str) -> ConsumerService:
    prefix = f"s{uuid.uuid4().hex[:8]}."
    await create_topics(kafka_bootstrap, all_topics(prefix), PARTITION_COUNT)
    settings = Settings(
        kafka_topic_prefix=prefix,
        kafka_consumer_group=f"g-{prefix}",
        kafka_session_timeout_ms=6_000,
    )
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    return ConsumerService(
        settings, make_ingestor(engine, rate_cards, topic_prefix=prefix), kafka_bootstrap
    )


async def test_start_returns_with_every_subscriber_running_and_assigned(
    engine: AsyncEngine, kafka_bootstrap: str
) -> None:
    service = await _new_service(engine, kafka_bootstrap)
    try:
        await service.start()
        assert all(subscriber.running for subscriber in service.broker.subscribers)

        async def assigned() -> bool:
            return service.assigned_partition_count() == len(service.topics) * PARTITION_COUNT

        await wait_until(assigned, ASSIGNMENT_WAIT_S)
    finally:
        await service.stop()


async def test_a_subscriber_that_fails_to_start_fails_the_start_with_its_own_error(
    engine: AsyncEngine, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = await _new_service(engine, kafka_bootstrap)
    failing = service._subscribers[topics.PAYOUTS_UPDATED]

    async def refuse() -> None:
        await asyncio.sleep(0.2)  # the others are joining their groups meanwhile
        raise RuntimeError("this subscriber cannot start")

    monkeypatch.setattr(failing, "start", refuse)
    try:
        with pytest.raises(RuntimeError, match="this subscriber cannot start"):
            await service.start()
        # A join takes about half a session timeout: after a whole one, a join left going on
        # would have finished and its subscriber would be running.
        await asyncio.sleep(service.settings.kafka_session_timeout_ms / 1000)
        assert not service.broker.running
        assert not any(subscriber.running for subscriber in service.broker.subscribers)
    finally:
        await service.stop()


async def test_cash_out_topics_are_read_in_batches_of_their_own_bound(
    engine: AsyncEngine, kafka_bootstrap: str
) -> None:
    service = await _new_service(engine, kafka_bootstrap)
    bounded = service.settings.model_copy(
        update={"consumer_batch_size_max": 900, "consumer_cashout_batch_size_max": 120}
    )
    service = ConsumerService(bounded, service.ingestor, kafka_bootstrap)
    max_records = {topic: service._subscribers[topic].max_records for topic in service.topics}
    assert max_records[topics.CASHOUTS_REQUESTED] == 120
    assert max_records[topics.PAYOUTS_UPDATED] == 120
    assert max_records[topics.GIFTS_SENT] == 900
    # The cash-out bound never raises a batch above the general one.
    smaller = bounded.model_copy(update={"consumer_batch_size_max": 80})
    service = ConsumerService(smaller, service.ingestor, kafka_bootstrap)
    assert service._subscribers[topics.CASHOUTS_REQUESTED].max_records == 80


async def test_a_running_service_prunes_its_published_outbox_rows_past_the_retention(
    engine: AsyncEngine, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`giftledger run` starts the outbox's pruning with its consumers: an old published row of
    its deployment goes, a recent one and another deployment's old one stay."""
    monkeypatch.setattr(consumer, "OUTBOX_PRUNE_INTERVAL_S", 0.2)
    service = await _new_service(engine, kafka_bootstrap)
    prefix = service.settings.kafka_topic_prefix
    retention_hours = service.settings.outbox_retention_hours
    assert retention_hours > 0  # the default prunes
    old = await add_row(engine, prefix, age_hours=retention_hours + 1, published=True)
    recent = await add_row(engine, prefix, age_hours=retention_hours - 1, published=True)
    elsewhere = await add_row(
        engine, f"other-{prefix}", age_hours=retention_hours + 1, published=True
    )

    async def remaining() -> set[int]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT id FROM outbox WHERE id = ANY(CAST(:ids AS bigint[]))"),
                {"ids": [old, recent, elsewhere]},
            )
            return {int(row.id) for row in rows}

    async def old_row_gone() -> bool:
        return old not in await remaining()

    try:
        await service.start()
        await wait_until(old_row_gone, ASSIGNMENT_WAIT_S)
    finally:
        await service.stop()
    assert await remaining() == {recent, elsewhere}


async def test_a_committed_batch_of_cash_out_requests_starts_a_relay_pass_at_once(
    engine: AsyncEngine, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay's poll is far longer than the test: the rejected request's `cashouts.updated`
    row is published only if the batch's commit starts a pass."""
    monkeypatch.setattr(consumer, "OUTBOX_POLL_INTERVAL_S", 3_600.0)
    service = await _new_service(engine, kafka_bootstrap)
    prefix = service.settings.kafka_topic_prefix
    request = make.cashout_request(f"unknown-{uuid.uuid4().hex[:8]}", 2_000)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)

    async def outbox_rows() -> list[tuple[str, bool]]:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT topic, published_at IS NOT NULL AS published FROM outbox"
                    " WHERE topic_prefix = :prefix"
                ),
                {"prefix": prefix},
            )
            return [(row.topic, row.published) for row in rows]

    async def published() -> bool:
        return any(was_published for _, was_published in await outbox_rows())

    try:
        await service.start()
        await producer.start()
        await producer.send_and_wait(
            prefix + topics.CASHOUTS_REQUESTED,
            value=json.dumps(request).encode(),
            key=str(request["creator_id"]).encode(),
        )
        await wait_until(published, ASSIGNMENT_WAIT_S)
    finally:
        await producer.stop()
        await service.stop()
    # A creator with no profile is refused: its statuses, published in that pass, no payout.
    rows = await outbox_rows()
    assert rows
    assert set(rows) == {(topics.CASHOUTS_UPDATED, True)}


async def test_a_failed_round_of_a_background_job_is_logged_with_its_error_and_the_next_runs(
    engine: AsyncEngine, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    # As the relay's round failed while the database restarted: its socket file was gone.
    service = await _new_service(engine, kafka_bootstrap)
    rounds = 0

    async def job() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise FileNotFoundError(2, "No such file or directory")
        service._stopping.set()

    with caplog.at_level(logging.WARNING, logger=consumer.__name__):
        await asyncio.wait_for(service._every(0.01, "outbox not published", job), 5)
    assert rounds == 2
    assert [record.getMessage() for record in caplog.records] == [
        "outbox not published this round (FileNotFoundError: [Errno 2] No such file or directory)"
    ]
