"""The schema comes from the Alembic migrations, and running them again changes nothing."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import migrations
from ledger.migrate import current_revision, head_revision, upgrade_to_head
from schemas.assets import ASSET_SCALES

pytestmark = pytest.mark.server


def test_the_migrations_are_one_chain_in_file_order() -> None:
    """Each migration revises the one before it (numbered files, no branches), so the head is
    the highest-numbered file."""
    versions = Path(migrations.__file__).parent / "versions"
    files = sorted(path for path in versions.glob("[0-9][0-9][0-9][0-9]_*.py"))
    modules = [runpy.run_path(str(path)) for path in files]
    chain = [(module["revision"], module["down_revision"]) for module in modules]
    expected = [
        (path.name[:4], None if index == 0 else files[index - 1].name[:4])
        for index, path in enumerate(files)
    ]
    assert chain == expected
    assert head_revision() == files[-1].name[:4]


async def test_migrations_reach_head_and_are_idempotent(engine: AsyncEngine) -> None:
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


async def test_a_dead_letter_is_keyed_by_its_id(engine: AsyncEngine) -> None:
    """Its id is the primary key (migration 0044; 0040 had left the table without one), the key
    its re-drives name; several re-drives' copies may share a place (offsets that started
    again)."""
    async with engine.connect() as conn:
        keys = await conn.execute(
            text(
                "SELECT c.conrelid::regclass::text AS on_table, c.contype::text AS kind,"
                " pg_get_constraintdef(c.oid) AS definition"
                " FROM pg_constraint c"
                " WHERE c.conrelid IN ('dead_letters'::regclass, 'dead_letter_redrives'::regclass)"
                " AND c.contype IN ('p', 'u', 'f') ORDER BY 1, 2, 3"
            )
        )
        found = [(row.on_table, row.kind, row.definition) for row in keys]
        copy_index_unique = (
            await conn.execute(
                text(
                    "SELECT indisunique FROM pg_index"
                    " WHERE indexrelid = 'dead_letter_redrives_copy'::regclass"
                )
            )
        ).scalar_one()
    assert found == [
        (
            "dead_letter_redrives",
            "f",
            "FOREIGN KEY (dead_letter_id) REFERENCES dead_letters(id)",
        ),
        (
            "dead_letter_redrives",
            "f",
            "FOREIGN KEY (operator_action_id) REFERENCES operator_actions(id)",
        ),
        ("dead_letter_redrives", "p", "PRIMARY KEY (dead_letter_id)"),
        ("dead_letters", "p", "PRIMARY KEY (id)"),
    ]
    assert copy_index_unique is False
