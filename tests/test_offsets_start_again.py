"""A topic whose offsets start again: the embedded broker, which keeps its log in memory,
restarted (a topic deleted and made again does the same on any broker). The new records take
offsets that records of the topic's earlier life held, and the database still holds that life's
rows: dead letters, their re-drives, applied events. On a broker of each test's own, restarted
between lives:

- a re-drive by topic takes every dead letter not re-driven yet, wherever it is, and never the
  copy of a re-drive that failed again; a copy may land where a copy of the earlier life did;
- after a database restore, `giftledger offsets rewind-to-database` goes by the log as it is
  now: the rows of the earlier life (at or past the log's end, or of other records than the
  log's at their offsets) are ignored and counted, and the group is rewound to one past the last
  record of the log the database holds (on a database of its own, restored from a copy).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ledger.database import create_engine
from schemas import topics
from schemas.topics import all_topics
from services.app.consumer import ConsumerService
from services.cli import main
from services.ingestion.redrive import (
    DeadLetterRedriver,
    DeadLetterSelection,
    RedriveOutcome,
    RedriveRequest,
)
from services.operator.offset_rewind import group_id
from services.runtime import settings as runtime_settings
from services.runtime.embedded_broker import EmbeddedBroker
from tests import event_factory as make
from tests.fresh_database import fresh_database
from tests.ingestion_fixtures import start_consumers, wait_until

WRITER_ROLE = "giftledger_writer"
# One partition a topic: every record of a life lands on partition 0, at the offsets it is sent in.
PARTITION_COUNT = 1
ASSIGNMENT_WAIT_S = 60.0
# Short: the rewind waits about a session timeout for the consumers that stopped to be dropped.
SESSION_TIMEOUT_MS = 3_000
CLI_TIMEOUT_S = 180.0
COINS = 10
MILLI_DIAMONDS_PER_COIN = 500


@dataclass
class Life:
    """One life of the topics: a broker started empty, a producer and (while running) the
    consumers on it."""

    broker: EmbeddedBroker
    producer: Any
    prefix: str
    service: ConsumerService | None = None

    @property
    def bootstrap_servers(self) -> str:
        return self.broker.bootstrap_servers

    @property
    def group(self) -> str:
        return f"g-{self.prefix}"

    async def start_consumers(self, engine: AsyncEngine) -> None:
        service, _ = await start_consumers(
            engine,
            self.bootstrap_servers,
            self.prefix,
            self.group,
            session_timeout_ms=SESSION_TIMEOUT_MS,
        )
        self.service = service

        async def assigned() -> bool:
            return service.assigned_partition_count() == len(service.topics) * PARTITION_COUNT

        await wait_until(assigned, ASSIGNMENT_WAIT_S)

    async def stop_consumers(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None

    async def publish(self, topic: str, event: dict[str, Any]) -> tuple[int, int]:
        """The event on partition 0; the partition and offset it got."""
        sent = await self.producer.send_and_wait(
            self.prefix + topic,
            value=json.dumps(event).encode(),
            key=str(event["creator_id"]).encode(),
            partition=0,
        )
        return int(sent.partition), int(sent.offset)

    async def committed(self, topic: str) -> int | None:
        """The group's committed offset of the topic's partition 0."""
        place = TopicPartition(self.prefix + topic, 0)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        try:
            found = await admin.list_consumer_group_offsets(
                group_id(self.group, topic), partitions=[place]
            )
        finally:
            await admin.close()
        offset = found[place].offset if place in found else None
        return None if offset is None or offset < 0 else int(offset)

    async def end(self) -> None:
        await self.stop_consumers()
        await self.producer.stop()
        await self.broker.stop()


async def _begin_life(engine: AsyncEngine | None, prefix: str) -> Life:
    """A broker started empty, and the consumers on it reading `engine`'s database (none
    without one)."""
    broker = EmbeddedBroker(all_topics(prefix), partition_count=PARTITION_COUNT)
    await broker.start()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    life = Life(broker, producer, prefix)
    try:
        await producer.start()
        if engine is not None:
            await life.start_consumers(engine)
    except BaseException:
        await life.end()
        raise
    return life


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


# The rewind after a restore ------------------------------------------------------------------


async def _as_admin(admin_url: str, statement: str) -> None:
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await admin.dispose()


async def _applied(engine: AsyncEngine, gifts: list[dict[str, Any]]) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT count(*) FROM applied_events WHERE topic = :topic"
                " AND event_id = ANY(CAST(:ids AS text[]))"
            ),
            {"topic": topics.GIFTS_SENT, "ids": [gift["event_id"] for gift in gifts]},
        )
        return int(found.scalar_one())


async def _until_applied(engine: AsyncEngine, gifts: list[dict[str, Any]]) -> None:
    async def all_applied() -> bool:
        return await _applied(engine, gifts) == len(gifts)

    await wait_until(all_applied)


async def _available_milli_diamonds(engine: AsyncEngine, creator: str) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT COALESCE(sum(credits_posted - debits_posted), 0) FROM accounts"
                " WHERE name = :name"
            ),
            {"name": f"creator:{creator}:DIAMOND:available"},
        )
        return int(found.scalar_one())


async def _giftledger(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command line, in a thread of its own (it runs its own event loop)."""
    runtime_settings.get_settings.cache_clear()
    async with asyncio.timeout(CLI_TIMEOUT_S):
        code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _partition_line(printed: str, kafka_topic: str) -> list[str]:
    """The words of partition 0's line in the plan of `kafka_topic`."""
    lines = printed.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(kafka_topic + " "))
    [line] = [line for line in lines[start + 2 : start + 3]]
    return line.split()


async def test_after_offsets_start_again_the_rewind_goes_by_the_log_as_it_is_now(
    postgres_admin_url: str,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    creator = f"restart-{uuid.uuid4().hex[:8]}"
    earlier = [make.gift(creator, coins=COINS) for _ in range(6)]
    now = [make.gift(creator, coins=COINS) for _ in range(3)]
    backup = f"giftledger_backup_{uuid.uuid4().hex[:12]}"
    async with fresh_database(postgres_admin_url, "giftledger_restart") as live_url:
        live = str(make_url(live_url).database)
        life: Life | None = None
        try:
            # The first life: 6 gifts applied, at offsets 0 to 5.
            engine = create_engine(live_url, pool_size=4, pool_overflow_max=4)
            life = await _begin_life(engine, prefix)
            for offset, gift in enumerate(earlier):
                assert await life.publish(topics.GIFTS_SENT, gift) == (0, offset)
            await _until_applied(engine, earlier)
            await life.end()

            # The broker restarted: a gift applied at offset 0, then the backup, then 2 more
            # applied at offsets 1 and 2; then the backup restored.
            life = await _begin_life(engine, prefix)
            assert await life.publish(topics.GIFTS_SENT, now[0]) == (0, 0)
            await _until_applied(engine, now[:1])
            await life.stop_consumers()
            await engine.dispose()
            await _as_admin(postgres_admin_url, f'CREATE DATABASE "{backup}" TEMPLATE "{live}"')
            engine = create_engine(live_url, pool_size=4, pool_overflow_max=4)
            await life.start_consumers(engine)
            for offset, gift in enumerate(now[1:], start=1):
                assert await life.publish(topics.GIFTS_SENT, gift) == (0, offset)
            await _until_applied(engine, now)
            await life.stop_consumers()
            await engine.dispose()
            await _as_admin(postgres_admin_url, f'DROP DATABASE "{live}" WITH (FORCE)')
            await _as_admin(postgres_admin_url, f'CREATE DATABASE "{live}" TEMPLATE "{backup}"')
            assert await life.committed(topics.GIFTS_SENT) == 3

            # The database's highest offset is 5, of the first life, past the log's end (3):
            # by it the group would not be behind, and gifts 1 and 2 would never come again.
            monkeypatch.setenv("DATABASE_URL", live_url)
            monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", life.bootstrap_servers)
            monkeypatch.setenv("KAFKA_TOPIC_PREFIX", prefix)
            monkeypatch.setenv("KAFKA_CONSUMER_GROUP", life.group)
            monkeypatch.setenv("KAFKA_SESSION_TIMEOUT_MS", str(SESSION_TIMEOUT_MS))
            code, out, err = await _giftledger(capsys, "offsets", "rewind-to-database")
            assert code == 0, err
            words = _partition_line(out, prefix + topics.GIFTS_SENT)
            # partition, committed, database, ignored, beginning, commit, then the note
            assert words[:6] == ["0", "3", "1", "3", "0", "1"], out
            note = " ".join(words[6:])
            assert "3 database rows at or past the log's end (3) ignored" in note, note
            assert "the database's rows at offsets 1 to 2 are of other records" in note, note
            assert "rewind: 2 records again" in note, note
            assert "--apply would rewind 1 partitions (2 records come again)" in out
            assert await life.committed(topics.GIFTS_SENT) == 3

            code, out, err = await _giftledger(
                capsys,
                "offsets",
                "rewind-to-database",
                "--apply",
                "--as",
                "alice",
                "--reason",
                "database restored after the broker restarted",
            )
            assert code == 0, err
            assert await life.committed(topics.GIFTS_SENT) == 1, out + err

            # The consumers started again apply the 2 gifts; every gift of both lives once.
            engine = create_engine(live_url, pool_size=4, pool_overflow_max=4)
            await life.start_consumers(engine)
            await _until_applied(engine, [*earlier, *now])
            assert await _available_milli_diamonds(engine, creator) == (
                9 * COINS * MILLI_DIAMONDS_PER_COIN
            )
            async with engine.connect() as conn:
                details = (
                    await conn.execute(
                        text(
                            "SELECT details FROM operator_actions"
                            " WHERE action = 'consumer_offsets_rewound'"
                        )
                    )
                ).scalar_one()
            assert details["rows_past_log_end"] == {prefix + topics.GIFTS_SENT: 3}
            assert details["rewound"] == {prefix + topics.GIFTS_SENT: [[0, 3, 1]]}
            await life.stop_consumers()
            await engine.dispose()
        finally:
            runtime_settings.get_settings.cache_clear()
            if life is not None:
                await life.end()
            await _as_admin(postgres_admin_url, f'DROP DATABASE IF EXISTS "{backup}" WITH (FORCE)')
