"""The schema comes from the Alembic migrations, and running them again changes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.migrate import current_revision, head_revision, upgrade_to_head
from schemas.assets import ASSET_SCALES

pytestmark = pytest.mark.server


async def test_migrations_reach_head_and_are_idempotent(engine: AsyncEngine) -> None:
    assert head_revision() == "0012"
    assert await current_revision(engine) == head_revision()
    await upgrade_to_head(engine)
    assert await current_revision(engine) == head_revision()


async def test_transfers_are_partitioned_by_month_from_the_start(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        partitions = (
            (
                await conn.execute(
                    text(
                        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                        " WHERE i.inhparent = 'transfers'::regclass ORDER BY 1"
                    )
                )
            )
            .scalars()
            .all()
        )
        current = (
            await conn.execute(text("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')"))
        ).scalar_one()
    assert "transfers_default" in partitions
    assert f"transfers_{current}" in partitions
    assert len(partitions) >= 4


async def test_every_asset_the_schemas_accept_exists_in_the_database(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT code, scale FROM assets"))
        stored = {row.code: row.scale for row in rows}
    assert {code: stored.get(code) for code in ASSET_SCALES} == ASSET_SCALES
