"""Several consumer processes in one group: SIGKILL of one mid-stream loses nothing and
double-counts nothing; a restart resumes from the committed offsets; SIGTERM stops cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from schemas.topics import all_topics
from services.runtime.embedded_broker import create_topics
from tests import event_factory as make
from tests.ingestion_fixtures import wait_until
from tests.ledger_helpers import ledger_problems

PARTITION_COUNT = 4
CREATOR_COUNT = 50
GIFT_COUNT = 6_000
PUBLISH_RATE_PER_S = 2_000
CATCH_UP_S = 120.0
STOP_TIMEOUT_S = 30.0


class ConsumerProcesses:
    """`giftledger run` child processes sharing one consumer group."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"consumer-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(STOP_TIMEOUT_S)


@pytest.fixture
def group_env(database_url: str, kafka_bootstrap: str) -> dict[str, str]:
    prefix = f"p{uuid.uuid4().hex[:8]}."
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA_TOPIC_PREFIX": prefix,
        "KAFKA_CONSUMER_GROUP": f"g-{prefix}",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "KAFKA_PARTITION_COUNT": str(PARTITION_COUNT),
        "CONSUMER_BATCH_SIZE_MAX": "500",
        "CONSUMER_BATCH_WAIT_MS": "20",
        "METRICS_PORT": "0",
    }


@pytest_asyncio.fixture(loop_scope="session")
async def processes(
    group_env: dict[str, str], kafka_bootstrap: str, tmp_path: Path
) -> AsyncIterator[ConsumerProcesses]:
    await create_topics(
        kafka_bootstrap, all_topics(group_env["KAFKA_TOPIC_PREFIX"]), PARTITION_COUNT
    )
    group = ConsumerProcesses(group_env, tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


async def _applied_count(engine: AsyncEngine, creators: list[str]) -> int:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT count(*) FROM applied_events WHERE creator_id = ANY(:c)"),
            {"c": creators},
        )
        return int(result.scalar_one())


async def _diamonds(engine: AsyncEngine, creators: list[str]) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT creator_id, credits_posted - debits_posted AS balance FROM accounts"
                " WHERE creator_id = ANY(:c) AND kind = 'creator_diamonds_available'"
            ),
            {"c": creators},
        )
        return {row.creator_id: row.balance for row in rows}


async def _publish_paced(
    producer: AIOKafkaProducer, topic: str, gifts: list[dict[str, object]]
) -> None:
    for start in range(0, len(gifts), PUBLISH_RATE_PER_S // 10):
        for gift in gifts[start : start + PUBLISH_RATE_PER_S // 10]:
            await producer.send(
                topic,
                value=make.encode(gift),
                key=str(gift["creator_id"]).encode(),
            )
        await asyncio.sleep(0.1)
    await producer.flush()


@pytest.mark.faults
async def test_sigkill_of_one_consumer_mid_stream_loses_and_doubles_nothing(
    processes: ConsumerProcesses,
    group_env: dict[str, str],
    kafka_bootstrap: str,
    engine: AsyncEngine,
) -> None:
    creators = [f"creator-{uuid.uuid4().hex[:10]}" for _ in range(CREATOR_COUNT)]
    gifts = [make.gift(creators[i % CREATOR_COUNT], coins=1 + i % 7) for i in range(GIFT_COUNT)]
    expected: dict[str, int] = {}
    for gift in gifts:
        creator = str(gift["creator_id"])
        expected[creator] = expected.get(creator, 0) + int(str(gift["coins"])) * 500
    topic = group_env["KAFKA_TOPIC_PREFIX"] + topics.GIFTS_SENT

    victim = processes.start()
    processes.start()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        publishing = asyncio.create_task(_publish_paced(producer, topic, gifts))

        async def some_applied() -> bool:
            return await _applied_count(engine, creators) > GIFT_COUNT // 5

        await wait_until(some_applied, CATCH_UP_S)
        victim.send_signal(signal.SIGKILL)
        await publishing

        async def all_applied() -> bool:
            return await _applied_count(engine, creators) == GIFT_COUNT

        await wait_until(all_applied, CATCH_UP_S)
        assert await _diamonds(engine, creators) == expected

        # Everyone stops; a new process resumes from the committed offsets.
        for process in processes.processes:
            process.send_signal(signal.SIGTERM)
        for process in processes.processes:
            assert process.wait(STOP_TIMEOUT_S) in (0, -signal.SIGKILL)
        processes.start()
        more = [make.gift(creators[0], coins=2) for _ in range(10)]
        await _publish_paced(producer, topic, more)

        async def resumed() -> bool:
            return await _applied_count(engine, creators) == GIFT_COUNT + len(more)

        await wait_until(resumed, CATCH_UP_S)
        expected[creators[0]] += 10 * 1_000
        assert await _diamonds(engine, creators) == expected
    finally:
        await producer.stop()
    assert await ledger_problems(engine) == []


@pytest.mark.faults
async def test_repeated_sigkills_under_load_lose_and_double_nothing(
    processes: ConsumerProcesses,
    group_env: dict[str, str],
    kafka_bootstrap: str,
    engine: AsyncEngine,
) -> None:
    creators = [f"creator-{uuid.uuid4().hex[:10]}" for _ in range(CREATOR_COUNT)]
    gifts = [make.gift(creators[i % CREATOR_COUNT], coins=1 + i % 3) for i in range(2 * GIFT_COUNT)]
    expected: dict[str, int] = {}
    for gift in gifts:
        creator = str(gift["creator_id"])
        expected[creator] = expected.get(creator, 0) + int(str(gift["coins"])) * 500
    topic = group_env["KAFKA_TOPIC_PREFIX"] + topics.GIFTS_SENT
    running = [processes.start(), processes.start()]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        publishing = asyncio.create_task(_publish_paced(producer, topic, gifts))
        for round_number in range(3):

            async def progressed(threshold: int = (round_number + 1) * GIFT_COUNT // 3) -> bool:
                return await _applied_count(engine, creators) >= threshold

            await wait_until(progressed, CATCH_UP_S)
            victim = running.pop(0)
            victim.send_signal(signal.SIGKILL)
            victim.wait(STOP_TIMEOUT_S)
            running.append(processes.start())
        await publishing

        async def all_applied() -> bool:
            return await _applied_count(engine, creators) == len(gifts)

        await wait_until(all_applied, CATCH_UP_S)
        assert await _diamonds(engine, creators) == expected
    finally:
        await producer.stop()
    assert await ledger_problems(engine) == []
