"""Published outbox rows past the retention are deleted, as the writer the services run as; no
other row is, and no role can delete a row not yet published (on a database of the module's own,
since no role can remove the unpublished rows these tests leave)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from ledger.service import Ledger
from services.cashout.outbox_retention import prune_published

pytestmark = pytest.mark.server

WRITER = "giftledger_writer"
RETENTION_HOURS = 24

_INSERT = text(
    """
    INSERT INTO outbox (topic_prefix, topic, message_key, payload, created_at, published_at)
    VALUES (:prefix, 'cashouts.updated', :key, CAST('{}' AS bytea),
            now() - make_interval(hours => :age_hours),
            CASE WHEN :published THEN now() END)
    RETURNING id
    """
)


@pytest_asyncio.fixture(loop_scope="session")
async def writer_engine(module_engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(
        module_engine.url.render_as_string(hide_password=False), pool_size=1, role=WRITER
    )
    yield engine
    await engine.dispose()


async def add_row(engine: AsyncEngine, prefix: str, *, age_hours: int, published: bool) -> int:
    async with engine.begin() as conn:
        row_id = (
            await conn.execute(
                _INSERT,
                {
                    "prefix": prefix,
                    "key": f"creator-{uuid.uuid4().hex[:8]}",
                    "age_hours": age_hours,
                    "published": published,
                },
            )
        ).scalar_one()
    return int(row_id)


async def ids_of(engine: AsyncEngine, prefix: str) -> set[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id FROM outbox WHERE topic_prefix = :prefix"), {"prefix": prefix}
        )
        return {int(row.id) for row in rows}


async def test_published_rows_past_the_retention_go_and_every_other_row_stays(
    module_engine: AsyncEngine, writer_engine: AsyncEngine
) -> None:
    prefix, other = f"p{uuid.uuid4().hex[:8]}.", f"q{uuid.uuid4().hex[:8]}."
    old_published = [
        await add_row(module_engine, prefix, age_hours=RETENTION_HOURS + 1 + n, published=True)
        for n in range(3)
    ]
    old_unpublished = await add_row(
        module_engine, prefix, age_hours=RETENTION_HOURS + 5, published=False
    )
    other_prefix = await add_row(
        module_engine, other, age_hours=RETENTION_HOURS + 5, published=True
    )
    fresh = await add_row(module_engine, prefix, age_hours=RETENTION_HOURS - 1, published=True)

    deleted = await prune_published(Ledger(writer_engine), prefix, RETENTION_HOURS)

    assert deleted == len(old_published)
    assert await ids_of(module_engine, prefix) == {old_unpublished, fresh}
    assert await ids_of(module_engine, other) == {other_prefix}


async def test_a_long_history_goes_in_bounded_batches_over_several_rounds(
    module_engine: AsyncEngine, writer_engine: AsyncEngine
) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}."
    for _ in range(25):
        await add_row(module_engine, prefix, age_hours=RETENTION_HOURS + 2, published=True)
    fresh = await add_row(module_engine, prefix, age_hours=0, published=True)
    writer = Ledger(writer_engine)

    rounds = [
        await prune_published(writer, prefix, RETENTION_HOURS, batch_max=10, batches_max=2)
        for _ in range(3)
    ]

    assert rounds == [20, 5, 0]
    assert await ids_of(module_engine, prefix) == {fresh}


@pytest.mark.parametrize("role", ["owner", WRITER])
async def test_no_role_deletes_a_row_not_yet_published_nor_empties_the_table(
    module_engine: AsyncEngine, writer_engine: AsyncEngine, role: str
) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}."
    unpublished = await add_row(
        module_engine, prefix, age_hours=RETENTION_HOURS + 1, published=False
    )
    engine = module_engine if role == "owner" else writer_engine
    with pytest.raises(DBAPIError, match="not published yet"):
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM outbox WHERE id = :id"), {"id": unpublished})
    with pytest.raises(DBAPIError, match=r"unpublished messages would be lost|permission denied"):
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE outbox"))
    assert await ids_of(module_engine, prefix) == {unpublished}


async def test_the_retention_and_the_batches_have_bounds(writer_engine: AsyncEngine) -> None:
    writer = Ledger(writer_engine)
    with pytest.raises(ValueError, match="retention_hours"):
        await prune_published(writer, "", 0)
    with pytest.raises(ValueError, match="batch_max"):
        await prune_published(writer, "", RETENTION_HOURS, batch_max=0)
    with pytest.raises(ValueError, match="batches_max"):
        await prune_published(writer, "", RETENTION_HOURS, batches_max=0)
