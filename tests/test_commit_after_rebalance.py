"""A batch whose offsets cannot be committed because its consumer group rebalanced while it was
applied (here its process stalled past the session timeout, as in a long pause, while another
member joined the group, so the broker dropped it): the consumer logs one WARNING that says so,
aiokafka's own line for the refused commit is lowered to WARNING, nothing else is logged at
ERROR but the expired session, and the batch's gift is read again and counted as a duplicate,
so it is applied once."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from schemas.topics import all_topics
from services.app.bootstrap import build_ingestor_as
from services.app.consumer import ConsumerService
from services.app.rebalance_logs import (
    COORDINATOR_LOGGER,
    REJOIN_AFTER_COMMIT_FAILED,
    RebalanceCommitAsWarning,
)
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import BatchReport, InputRecord
from services.rates.rate_cards import load_rate_cards
from services.runtime.embedded_broker import create_topics
from services.runtime.settings import Settings
from tests import event_factory as make
from tests.ingestion_fixtures import wait_until

PARTITION_COUNT = 2
SESSION_TIMEOUT_MS = 6_000
STALL_S = SESSION_TIMEOUT_MS / 1000 + 3.0
WAIT_S = 60.0


class StallingIngestor(Ingestor):
    """Stalls its whole process (the event loop, heartbeats included) for longer than the
    session timeout after applying its first batch of gifts, before the consumer commits the
    batch's offsets; meanwhile `joiner` joins the gifts' consumer group from a thread."""

    joiner: Joiner
    stalled = False

    async def process(self, topic: str, records: Sequence[InputRecord]) -> BatchReport:
        report = await super().process(topic, records)
        if topic == topics.GIFTS_SENT and not self.stalled:
            self.stalled = True
            self.joiner.start()
            time.sleep(STALL_S)  # noqa: ASYNC251 (the stall is the point: no heartbeat is sent)
        return report


class Joiner(threading.Thread):
    """Another member of a consumer group, on an event loop of its own: joins, stays until
    told to leave, commits nothing."""

    def __init__(self, bootstrap_servers: str, topic: str, group: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap_servers, self.topic, self.group = bootstrap_servers, topic, group
        self.joined = threading.Event()
        self.leave = threading.Event()

    def run(self) -> None:
        asyncio.run(self._member())

    async def _member(self) -> None:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group,
            enable_auto_commit=False,
            session_timeout_ms=SESSION_TIMEOUT_MS,
        )
        await consumer.start()
        try:
            while not self.leave.is_set():
                await consumer.getmany(timeout_ms=100)
                if consumer.assignment():
                    self.joined.set()
        finally:
            await consumer.stop()


def settings_for(prefix: str) -> Settings:
    return Settings(
        kafka_topic_prefix=prefix,
        kafka_consumer_group=f"g-{prefix}",
        kafka_session_timeout_ms=SESSION_TIMEOUT_MS,
        consumer_batch_wait_ms=20,
    )


async def applied_count(engine: AsyncEngine, event_id: str) -> int:
    async with engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM applied_events WHERE event_id = :id"), {"id": event_id}
        )
    return int(found or 0)


async def test_a_rebalance_during_a_batch_is_a_warning_and_the_batch_comes_again(
    engine: AsyncEngine, kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = f"rb{uuid.uuid4().hex[:8]}."
    await create_topics(kafka_bootstrap, all_topics(prefix), PARTITION_COUNT)
    settings = settings_for(prefix)
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    ingestor = build_ingestor_as(StallingIngestor, settings, engine, rate_cards)
    service = ConsumerService(settings, ingestor, kafka_bootstrap)
    ingestor.joiner = Joiner(
        kafka_bootstrap, prefix + topics.GIFTS_SENT, service.group_id(topics.GIFTS_SENT)
    )
    gift = make.gift("creator-rebalance")
    caplog.set_level(logging.WARNING)
    await service.start()
    try:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                prefix + topics.GIFTS_SENT, json.dumps(gift).encode(), key=b"creator-rebalance"
            )
        finally:
            await producer.stop()

        async def joined() -> bool:
            return ingestor.joiner.joined.is_set()

        await wait_until(joined, WAIT_S)
        ingestor.joiner.leave.set()  # the group rebalances again: the batch comes back

        async def read_again() -> bool:
            return ingestor.counts.duplicates >= 1

        await wait_until(read_again, WAIT_S)
    finally:
        ingestor.joiner.leave.set()
        await service.stop()

    assert ingestor.stalled
    assert await applied_count(engine, gift["event_id"]) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("the group rebalanced while it was applied" in w for w in warnings), warnings
    # The stall is how this test makes the group rebalance, and a session that expired for a
    # stall is worth an ERROR: aiokafka's line for it is the one left at that level.
    errors = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and not r.msg.startswith("Heartbeat session expired")
    ]
    assert not errors, [(r.name, r.getMessage()[:200]) for r in errors]
    lowered = [r for r in caplog.records if r.msg == REJOIN_AFTER_COMMIT_FAILED]
    assert lowered, "aiokafka did not log its refused commit (has its text changed?)"
    assert all(r.levelno == logging.WARNING for r in lowered)


def test_only_aiokafka_commit_refused_by_a_rebalance_is_lowered() -> None:
    def record(msg: str, level: int) -> logging.LogRecord:
        return logging.LogRecord(COORDINATOR_LOGGER, level, __file__, 1, msg, ("g", "e"), None)

    rebalance = record(REJOIN_AFTER_COMMIT_FAILED, logging.ERROR)
    other = record("OffsetCommit failed for group %s on partition %s", logging.ERROR)
    for each in (rebalance, other):
        assert RebalanceCommitAsWarning().filter(each)

    assert (rebalance.levelno, rebalance.levelname) == (logging.WARNING, "WARNING")
    assert (other.levelno, other.levelname) == (logging.ERROR, "ERROR")
