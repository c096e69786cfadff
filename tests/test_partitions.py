"""Transfer partitions kept by the running service: rows that landed in the default partition
move to their month unchanged, `migrate` works afterwards, `migrate` and `giftledger run` keep
the coming months that `TRANSFER_PARTITION_MONTHS_AHEAD` asks for (`run` reports them), and no
partition can be truncated."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import httpx
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from sqlalchemy import Executable, column, delete, func, select, table, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from ledger.model import AccountFlags, Transfer, TransferCode, TransferFlags
from ledger.service import Ledger
from services.app.partition_upkeep import PartitionUpkeep
from services.runtime.metrics import TRANSFER_PARTITION_MONTHS_AHEAD
from tests.api_server import free_port
from tests.fresh_database import fresh_database
from tests.ingestion_fixtures import wait_until
from tests.ledger_helpers import make_accounts

pytestmark = pytest.mark.server

WRITER = "giftledger_writer"
READER = "giftledger_reader"
GAUGE = "giftledger_transfer_partition_months_ahead"
GAUGE_UNSET = -99.0
COMMAND_TIMEOUT_S = 120.0
RUN_STOP_TIMEOUT_S = 60.0
BATCH_COUNT = 3
TRANSFERS_PER_BATCH = 4
PARTITIONS_OF_TRANSFERS = (
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
    " WHERE i.inhparent = 'transfers'::regclass ORDER BY 1"
)
LEDGER_DUMPS = {
    "transfers": "SELECT t::text FROM transfers t ORDER BY seq",
    "transfer_keys": "SELECT k::text FROM transfer_keys k ORDER BY id",
    "pending_resolutions": "SELECT r::text FROM pending_resolutions r ORDER BY pending_id",
    "ledger_links": "SELECT l::text FROM ledger_links l ORDER BY id",
    "ledger_chain_head": "SELECT h::text FROM ledger_chain_head h",
    "accounts": "SELECT a::text FROM accounts a ORDER BY id",
}
INTERNAL_FUNCTIONS = [
    "SELECT move_default_transfers()",
    "SELECT create_transfer_partitions(3)",
    "SELECT create_transfer_month(date '2031-01-01')",
]


def month_partition(months_after_current: int = 0) -> str:
    now = datetime.now(UTC)
    month_index = now.year * 12 + now.month - 1 + months_after_current
    return f"transfers_{month_index // 12:04d}_{month_index % 12 + 1:02d}"


@pytest_asyncio.fixture(loop_scope="session")
async def own_database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A database of this test's own, migrated to head: its partitions are changed on purpose."""
    async with fresh_database(postgres_admin_url, prefix="giftledger_partitions") as url:
        yield url


@pytest_asyncio.fixture(loop_scope="session")
async def owner(own_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(own_database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(loop_scope="session")
async def writer(own_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(own_database_url, pool_size=2, role=WRITER)
    yield engine
    await engine.dispose()


async def partitions(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(PARTITIONS_OF_TRANSFERS))).scalars())


async def rows_by_partition(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT tableoid::regclass::text AS partition, count(*) AS transfer_count"
                " FROM transfers GROUP BY 1"
            )
        )
        return {row.partition: row.transfer_count for row in rows}


async def ledger_dump(engine: AsyncEngine) -> dict[str, list[str]]:
    async with engine.connect() as conn:
        return {
            table: list((await conn.execute(text(query))).scalars())
            for table, query in LEDGER_DUMPS.items()
        }


async def lose_the_current_month(owner: AsyncEngine) -> str:
    """The state of a service that ran past the months `migrate` made: this month has no
    partition (it held nothing yet in this fresh database)."""
    current = month_partition()
    async with owner.begin() as conn:
        assert (await conn.scalar(select(func.count()).select_from(table(current)))) == 0
        await conn.execute(text(f"DROP TABLE {current}"))
    return current


async def post_through_the_ledger(owner: AsyncEngine, writer: AsyncEngine) -> list[uuid.UUID]:
    """Several batches as the service posts them (as the writer role): plain transfers, and a
    pending transfer posted later."""
    prefix = uuid.uuid4().hex[:12]
    a, b, c = await make_accounts(Ledger(owner), prefix, [AccountFlags.NONE] * 3)
    ledger = Ledger(writer)
    posted: list[uuid.UUID] = []
    for batch in range(BATCH_COUNT):
        transfers = [
            Transfer(uuid.uuid4(), a, b, 1 + batch * 10 + i, TransferCode.SYNTHETIC)
            for i in range(TRANSFERS_PER_BATCH)
        ]
        pending = Transfer(uuid.uuid4(), b, c, 7, TransferCode.SYNTHETIC, TransferFlags.PENDING)
        assert await ledger.post([*transfers, pending]) == ["ok"] * (TRANSFERS_PER_BATCH + 1)
        post = Transfer(
            uuid.uuid4(), 0, 0, 5, TransferCode.SYNTHETIC, TransferFlags.POST_PENDING, pending.id
        )
        assert await ledger.post([post]) == ["ok"]
        posted += [transfer.id for transfer in transfers] + [pending.id, post.id]
    return posted


async def giftledger(
    database_url: str, *arguments: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """`giftledger ARGUMENTS...` against `database_url` (with `env` set besides): exit code and
    output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *arguments,
        env={**os.environ, **(env or {}), "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_S)
    assert process.returncode is not None
    return process.returncode, output.decode()


def gauge() -> float | None:
    return REGISTRY.get_sample_value(GAUGE)


async def keep_as_the_running_service(writer: AsyncEngine, database_url: str) -> None:
    TRANSFER_PARTITION_MONTHS_AHEAD.set(GAUGE_UNSET)
    assert await PartitionUpkeep(writer, months_ahead=3).keep_once()
    assert gauge() == 3


async def keep_by_migrate(writer: AsyncEngine, database_url: str) -> None:
    exit_code, output = await giftledger(database_url, "migrate")
    assert exit_code == 0, output


@pytest.mark.parametrize(
    "keep", [keep_as_the_running_service, keep_by_migrate], ids=["run upkeep", "migrate"]
)
async def test_transfers_in_the_default_partition_move_to_their_month_unchanged(
    own_database_url: str,
    owner: AsyncEngine,
    writer: AsyncEngine,
    keep: Callable[[AsyncEngine, str], Awaitable[None]],
) -> None:
    current = await lose_the_current_month(owner)
    posted = await post_through_the_ledger(owner, writer)
    assert await rows_by_partition(owner) == {"transfers_default": len(posted)}
    before = await ledger_dump(owner)
    # The trap: this month's partition cannot be created while the default partition holds
    # rows of it.
    with pytest.raises(DBAPIError, match="would be violated"):
        async with owner.begin() as conn:
            await conn.execute(
                text(
                    f"CREATE TABLE {current} PARTITION OF transfers FOR VALUES"
                    " FROM (date_trunc('month', now())) TO (date_trunc('month', now())"
                    " + interval '1 month')"
                )
            )

    await keep(writer, own_database_url)

    assert await rows_by_partition(owner) == {current: len(posted)}
    assert await ledger_dump(owner) == before
    assert current in await partitions(owner)
    exit_code, output = await giftledger(own_database_url, "verify")
    assert exit_code == 0, output
    assert "ledger verified" in output
    exit_code, output = await giftledger(own_database_url, "migrate")
    assert exit_code == 0, output
    assert await ledger_dump(owner) == before


async def test_moved_transfers_stay_immutable_and_new_ones_go_to_their_month(
    owner: AsyncEngine, writer: AsyncEngine
) -> None:
    current = await lose_the_current_month(owner)
    posted = await post_through_the_ledger(owner, writer)
    assert await PartitionUpkeep(writer, months_ahead=3).keep_once()

    partition = table(current, column("id"), column("amount"))
    refused: list[Executable] = [
        delete(partition).where(partition.c.id == posted[0]),
        update(partition).where(partition.c.id == posted[0]).values(amount=partition.c.amount + 1),
        text("DELETE FROM transfers WHERE id = :id").bindparams(id=posted[0]),
        text(f"TRUNCATE {current}"),
        text("TRUNCATE transfers_default"),
    ]
    for statement in refused:
        with pytest.raises(DBAPIError, match="immutable"):
            async with owner.begin() as conn:
                await conn.execute(statement)
    more = await post_through_the_ledger(owner, writer)
    assert await rows_by_partition(owner) == {current: len(posted) + len(more)}


async def test_the_run_task_keeps_the_coming_months_and_reports_them(
    owner: AsyncEngine, writer: AsyncEngine
) -> None:
    months_ahead = 6
    TRANSFER_PARTITION_MONTHS_AHEAD.set(GAUGE_UNSET)
    upkeep = PartitionUpkeep(writer, months_ahead, interval_s=0.1, retry_interval_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(upkeep.run_until(stop))
    try:

        async def reported() -> bool:
            return gauge() == months_ahead

        await wait_until(reported)
        found = await partitions(owner)
        assert all(month_partition(month) in found for month in range(months_ahead + 1))

        # A month lost between rounds is back at a later round.
        farthest = month_partition(months_ahead)
        async with owner.begin() as conn:
            await conn.execute(text(f"DROP TABLE {farthest}"))

        async def restored() -> bool:
            return farthest in await partitions(owner)

        await wait_until(restored)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert task.done()
    assert gauge() == months_ahead


async def test_migrate_keeps_the_months_of_the_setting(
    own_database_url: str, owner: AsyncEngine
) -> None:
    months_ahead = 7
    assert month_partition(months_ahead) not in await partitions(owner)
    exit_code, output = await giftledger(
        own_database_url,
        "migrate",
        env={"TRANSFER_PARTITION_MONTHS_AHEAD": str(months_ahead)},
    )
    assert exit_code == 0, output
    found = await partitions(owner)
    assert all(month_partition(month) in found for month in range(months_ahead + 1))
    assert month_partition(months_ahead + 1) not in found


async def test_a_failed_upkeep_still_reports_the_months_ready(own_database_url: str) -> None:
    reader = create_engine(own_database_url, pool_size=1, role=READER)
    try:
        TRANSFER_PARTITION_MONTHS_AHEAD.set(GAUGE_UNSET)
        assert not await PartitionUpkeep(reader, months_ahead=5).keep_once()
    finally:
        await reader.dispose()
    assert gauge() == 3  # what `migrate` made; the reader may not make more


@pytest.mark.parametrize("statement", INTERNAL_FUNCTIONS)
async def test_only_the_owner_may_move_transfers_or_create_partitions(
    database_url: str, statement: str
) -> None:
    writer = create_engine(database_url, pool_size=1, role=WRITER)
    try:
        with pytest.raises(DBAPIError, match="permission denied"):
            async with writer.begin() as conn:
                await conn.execute(text(statement))
    finally:
        await writer.dispose()


async def test_every_partition_refuses_truncate_even_for_its_owner(engine: AsyncEngine) -> None:
    found = await partitions(engine)
    assert "transfers_default" in found
    assert month_partition() in found
    for partition in found:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            try:
                with pytest.raises(DBAPIError, match="immutable"):
                    await conn.execute(text(f"TRUNCATE {partition}"))
            finally:
                await transaction.rollback()


async def test_giftledger_run_keeps_the_coming_months_and_serves_the_gauge(
    own_database_url: str, owner: AsyncEngine, kafka_bootstrap: str
) -> None:
    months_ahead = 5
    metrics_port = free_port()
    prefix = f"p{uuid.uuid4().hex[:8]}."
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "run",
        env={
            **os.environ,
            "DATABASE_URL": own_database_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPIC_PREFIX": prefix,
            "KAFKA_CONSUMER_GROUP": f"g-{prefix}",
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "METRICS_PORT": str(metrics_port),
            "TRANSFER_PARTITION_MONTHS_AHEAD": str(months_ahead),
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient() as client:

            async def served() -> bool:
                try:
                    response = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
                except httpx.TransportError:
                    return False
                return f"{GAUGE} {float(months_ahead)}" in response.text

            await wait_until(served)
        found = await partitions(owner)
        assert all(month_partition(month) in found for month in range(months_ahead + 1))
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), RUN_STOP_TIMEOUT_S) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), RUN_STOP_TIMEOUT_S)
