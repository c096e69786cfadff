"""A database restored from a backup, and `giftledger offsets rewind-to-database`: on the real
broker and PostgreSQL, consumers apply N gifts, the database is copied (the backup), M more gifts
are applied, the copy replaces the database (the restore). The groups' committed offsets would
then skip the M gifts for good; the command rewinds them to what the database holds, refusing
while consumers run, and the consumers started again apply every gift once.

The backup is `CREATE DATABASE ... TEMPLATE` of the live database with no connection open to it
(the consumers stopped, their engine disposed), the restore `DROP DATABASE` and `CREATE
DATABASE ... TEMPLATE` of the backup: the same files PostgreSQL would have after `pg_restore` of a
dump taken at that moment, without depending on the client tools' version.
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
from services.ingestion.ingestor import Ingestor
from services.operator.offset_rewind import DatabasePosition, group_id, plan_partition
from services.runtime import settings as runtime_settings
from services.runtime.embedded_broker import create_topics
from tests import event_factory as make
from tests.fresh_database import fresh_database
from tests.ingestion_fixtures import PARTITION_COUNT, start_consumers, wait_until

# Short: the rewind waits about a session timeout for the consumers that stopped to be dropped.
SESSION_TIMEOUT_MS = 3_000
ASSIGNMENT_WAIT_S = 60.0
APPLY_WAIT_S = 60.0
CLI_TIMEOUT_S = 180.0
GIFTS_BEFORE_BACKUP = 12
GIFTS_AFTER_BACKUP = 9
CREATORS = 4
COINS = 10
MILLI_DIAMONDS_PER_COIN = 500


# The plan, partition by partition ------------------------------------------------------------


def test_a_partition_behind_the_group_is_rewound_to_one_past_the_database() -> None:
    plan = plan_partition(0, 130, DatabasePosition(101), 0, unknown_to_beginning=False)
    assert (plan.target, plan.records_again) == (101, 29)


def test_the_group_is_never_moved_forward() -> None:
    assert (
        plan_partition(0, 100, DatabasePosition(101), 0, unknown_to_beginning=False).target is None
    )
    assert (
        plan_partition(0, 100, DatabasePosition(100), 0, unknown_to_beginning=False).target is None
    )
    assert plan_partition(0, None, DatabasePosition(5), 0, unknown_to_beginning=True).target is None


def test_a_partition_the_database_knows_nothing_of_moves_only_when_asked() -> None:
    assert plan_partition(1, 40, None, 0, unknown_to_beginning=False).target is None
    assert plan_partition(1, 40, None, 0, unknown_to_beginning=True).target == 0
    assert plan_partition(1, 40, None, 40, unknown_to_beginning=True).target is None


def test_records_gone_from_the_log_are_named() -> None:
    plan = plan_partition(2, 90, DatabasePosition(10), 50, unknown_to_beginning=False)
    assert plan.target == 50
    assert "10 to 49 are no longer in the log" in plan.note


def test_rows_of_an_earlier_life_of_the_topic_are_counted_and_never_move_the_group_forward() -> (
    None
):
    """The topic's offsets started again: 3 rows at or past the log's end (3), and below it,
    rows of other records than the log's."""
    partly = DatabasePosition(1, highest=2, past_end=3, end=3)
    plan = plan_partition(0, 3, partly, 0, unknown_to_beginning=False)
    assert (plan.target, plan.records_again, plan.past_end) == (1, 2, 3)
    assert "3 database rows at or past the log's end (3) ignored" in plan.note
    assert "rows at offsets 1 to 2 are of other records than the log's" in plan.note
    assert plan_partition(0, 1, partly, 0, unknown_to_beginning=False).target is None

    none_held = DatabasePosition(None, highest=2, past_end=3, end=3, checked_from=0)
    plan = plan_partition(0, 3, none_held, 0, unknown_to_beginning=False)
    assert (plan.target, plan.past_end) == (None, 3)
    assert "no record of the log at offsets 0 to 2 is the one the database has" in plan.note
    assert "--unknown-to-beginning" in plan.note
    assert plan_partition(0, 3, none_held, 0, unknown_to_beginning=True).target == 0

    past_end_only = DatabasePosition(None, past_end=4, end=0)
    plan = plan_partition(0, 5, past_end_only, 0, unknown_to_beginning=False)
    assert (plan.target, plan.past_end) == (None, 4)


# The restore, end to end ---------------------------------------------------------------------


@dataclass
class Deployment:
    admin_url: str
    live_url: str
    backup_name: str
    bootstrap_servers: str
    prefix: str
    group: str

    @property
    def live_name(self) -> str:
        return str(make_url(self.live_url).database)

    def engine(self) -> AsyncEngine:
        return create_engine(self.live_url, pool_size=8, pool_overflow_max=8)

    async def start(self, engine: AsyncEngine) -> tuple[ConsumerService, Ingestor]:
        service, ingestor = await start_consumers(
            engine,
            self.bootstrap_servers,
            self.prefix,
            self.group,
            session_timeout_ms=SESSION_TIMEOUT_MS,
        )

        async def assigned() -> bool:
            return service.assigned_partition_count() == len(service.topics) * PARTITION_COUNT

        await wait_until(assigned, ASSIGNMENT_WAIT_S)
        return service, ingestor

    async def as_admin(self, statement: str) -> None:
        admin = create_async_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with admin.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await admin.dispose()

    async def back_up(self) -> None:
        await self.as_admin(f'CREATE DATABASE "{self.backup_name}" TEMPLATE "{self.live_name}"')

    async def restore(self) -> None:
        await self.as_admin(f'DROP DATABASE "{self.live_name}" WITH (FORCE)')
        await self.as_admin(f'CREATE DATABASE "{self.live_name}" TEMPLATE "{self.backup_name}"')

    async def committed(self, topic: str) -> dict[int, int]:
        kafka_topic = self.prefix + topic
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        try:
            found = await admin.list_consumer_group_offsets(
                group_id(self.group, topic),
                partitions=[TopicPartition(kafka_topic, p) for p in range(PARTITION_COUNT)],
            )
        finally:
            await admin.close()
        return {tp.partition: offset.offset for tp, offset in found.items()}


@pytest_asyncio.fixture
async def deployment(
    postgres_admin_url: str, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Deployment]:
    """A database and topics of their own; the command line's settings pointing at them."""
    prefix = f"r{uuid.uuid4().hex[:8]}."
    await create_topics(kafka_bootstrap, all_topics(prefix), PARTITION_COUNT)
    async with fresh_database(postgres_admin_url, "giftledger_restore") as live_url:
        found = Deployment(
            postgres_admin_url,
            live_url,
            f"giftledger_backup_{uuid.uuid4().hex[:12]}",
            kafka_bootstrap,
            prefix,
            f"g-{prefix}",
        )
        monkeypatch.setenv("DATABASE_URL", live_url)
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
        monkeypatch.setenv("KAFKA_TOPIC_PREFIX", prefix)
        monkeypatch.setenv("KAFKA_CONSUMER_GROUP", found.group)
        monkeypatch.setenv("KAFKA_SESSION_TIMEOUT_MS", str(SESSION_TIMEOUT_MS))
        monkeypatch.delenv("OPERATOR_NAME", raising=False)
        try:
            yield found
        finally:
            runtime_settings.get_settings.cache_clear()
            await found.as_admin(f'DROP DATABASE IF EXISTS "{found.backup_name}" WITH (FORCE)')


async def _giftledger(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command line, in a thread of its own (it runs its own event loop)."""
    runtime_settings.get_settings.cache_clear()
    async with asyncio.timeout(CLI_TIMEOUT_S):
        code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def _publish(
    producer: Any, prefix: str, creators: list[str], count: int
) -> dict[str, tuple[int, int]]:
    """`count` gifts over the creators; each event_id with the partition and offset it got."""
    placed: dict[str, tuple[int, int]] = {}
    for number in range(count):
        event = make.gift(creators[number % len(creators)], coins=COINS)
        sent = await producer.send_and_wait(
            prefix + topics.GIFTS_SENT,
            value=json.dumps(event).encode(),
            key=event["creator_id"].encode(),
        )
        placed[event["event_id"]] = (sent.partition, sent.offset)
    return placed


async def _applied(engine: AsyncEngine, event_ids: list[str]) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT count(*) FROM applied_events WHERE topic = :topic"
                " AND event_id = ANY(CAST(:ids AS text[]))"
            ),
            {"topic": topics.GIFTS_SENT, "ids": event_ids},
        )
        return int(found.scalar_one())


async def _wait_applied(engine: AsyncEngine, event_ids: list[str]) -> None:
    async def all_applied() -> bool:
        return await _applied(engine, event_ids) == len(event_ids)

    await wait_until(all_applied, APPLY_WAIT_S)


async def _available_milli_diamonds(engine: AsyncEngine, creators: list[str]) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT COALESCE(sum(credits_posted - debits_posted), 0) FROM accounts"
                " WHERE name = ANY(CAST(:names AS text[]))"
            ),
            {"names": [f"creator:{creator}:DIAMOND:available" for creator in creators]},
        )
        return int(found.scalar_one())


async def _stop(service: ConsumerService, engine: AsyncEngine) -> None:
    await service.stop()
    await engine.dispose()


async def test_after_a_restore_the_rewind_brings_back_every_gift_applied_since_the_backup(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    creators = [f"restore-{uuid.uuid4().hex[:8]}-{number}" for number in range(CREATORS)]
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap_servers)
    await producer.start()
    try:
        # N gifts applied, then the backup.
        engine = deployment.engine()
        service, _ = await deployment.start(engine)
        assert all(
            service.group_id(topic) == group_id(deployment.group, topic)
            for topic in topics.CONSUMED_TOPICS
        )
        before = await _publish(producer, deployment.prefix, creators, GIFTS_BEFORE_BACKUP)
        await _wait_applied(engine, list(before))
        await _stop(service, engine)
        await deployment.back_up()

        # M more gifts applied after the backup.
        engine = deployment.engine()
        service, _ = await deployment.start(engine)
        after = await _publish(producer, deployment.prefix, creators, GIFTS_AFTER_BACKUP)
        await _wait_applied(engine, list(after))
        everything = [*before, *after]

        # While the consumers run, the rewind refuses and changes nothing.
        ahead = await deployment.committed(topics.GIFTS_SENT)
        code, _, err = await _giftledger(
            capsys,
            "offsets",
            "rewind-to-database",
            "--apply",
            "--as",
            "alice",
            "--reason",
            "restore drill",
            "--wait-s",
            "4",
        )
        assert code == 1, err
        assert "consumers still hold partitions" in err
        assert await deployment.committed(topics.GIFTS_SENT) == ahead

        # The restore: the database as the backup had it, the groups' offsets as they are.
        await _stop(service, engine)
        await deployment.restore()
        engine = deployment.engine()
        try:
            assert await _applied(engine, list(after)) == 0
            assert await _applied(engine, list(before)) == len(before)
        finally:
            await engine.dispose()
        committed = await deployment.committed(topics.GIFTS_SENT)
        # Without the rewind, the group would never deliver the M gifts again: each lies below
        # its partition's committed offset. This is what the test is for.
        assert all(offset < committed[partition] for partition, offset in after.values())

        # A dry run prints the plan and changes nothing.
        code, out, err = await _giftledger(capsys, "offsets", "rewind-to-database")
        assert code == 0, err
        assert "dry run, nothing changed" in out
        assert await deployment.committed(topics.GIFTS_SENT) == committed

        # --apply needs a name and a reason.
        code, _, err = await _giftledger(capsys, "offsets", "rewind-to-database", "--apply")
        assert code == 2, err
        assert await deployment.committed(topics.GIFTS_SENT) == committed

        code, out, err = await _giftledger(
            capsys,
            "offsets",
            "rewind-to-database",
            "--apply",
            "--as",
            "alice",
            "--reason",
            "database restored from the backup",
            "--ticket",
            "OPS-7",
        )
        assert code == 0, err
        assert "recorded as operator action" in out
        rewound = await deployment.committed(topics.GIFTS_SENT)
        backup_next: dict[int, int] = {}
        for partition, offset in before.values():
            backup_next[partition] = max(backup_next.get(partition, 0), offset + 1)
        for partition in range(PARTITION_COUNT):
            if partition in backup_next:
                assert rewound[partition] == backup_next[partition], (partition, rewound)
            else:  # the database has no record of it: left as is
                assert rewound[partition] == committed[partition], (partition, rewound)
        assert all(offset >= rewound[partition] for partition, offset in after.values())

        # Running it again changes nothing more.
        code, out, err = await _giftledger(
            capsys, "offsets", "rewind-to-database", "--apply", "--as", "alice", "--reason", "again"
        )
        assert code == 0, err
        assert "nothing to rewind" in out

        # The consumers started again apply the M gifts, and every gift once.
        engine = deployment.engine()
        service, _ = await deployment.start(engine)
        try:
            await _wait_applied(engine, everything)
            assert await _applied(engine, everything) == GIFTS_BEFORE_BACKUP + GIFTS_AFTER_BACKUP
            assert await _available_milli_diamonds(engine, creators) == (
                (GIFTS_BEFORE_BACKUP + GIFTS_AFTER_BACKUP) * COINS * MILLI_DIAMONDS_PER_COIN
            )
            async with engine.connect() as conn:
                action = (
                    await conn.execute(
                        text(
                            "SELECT actor, target, ticket, details FROM operator_actions"
                            " WHERE action = 'consumer_offsets_rewound'"
                        )
                    )
                ).one()
        finally:
            await _stop(service, engine)
        assert (action.actor, action.ticket) == ("alice", "OPS-7")
        assert action.target == f"consumer-groups:{deployment.prefix}{deployment.group}"
        moved = action.details["rewound"][deployment.prefix + topics.GIFTS_SENT]
        assert {partition for partition, _, _ in moved} == {p for p, _ in after.values()}

        code, out, err = await _giftledger(capsys, "verify", "--full")
        assert code == 0, out + err
    finally:
        await producer.stop()


async def test_the_rewind_refuses_a_database_other_deployments_share(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = deployment.engine()
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO dead_letters (topic_prefix, topic, kafka_partition, kafka_offset,"
                    " error, detail) VALUES ('other.', :topic, 0, 7, 'malformed_json', 'x')"
                ),
                {"topic": topics.GIFTS_SENT},
            )
    finally:
        await engine.dispose()
    code, out, err = await _giftledger(capsys, "offsets", "rewind-to-database")
    assert code == 1
    assert "other deployments (topic prefixes 'other.')" in err
    assert out == ""


def test_the_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["offsets", "rewind-to-database", "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: giftledger offsets rewind-to-database" in out
    assert "--apply" in out


async def test_the_rewind_needs_a_kafka_cluster_and_apply_needs_a_name(
    deployment: Deployment, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = await _giftledger(
        capsys, "offsets", "rewind-to-database", "--apply", "--reason", "restore"
    )
    assert code == 2
    assert "--as NAME" in err
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS")
    code, _, err = await _giftledger(capsys, "offsets", "rewind-to-database")
    assert code == 2
    assert "KAFKA_BOOTSTRAP_SERVERS" in err
