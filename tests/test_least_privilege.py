"""Least privilege: the role the services write as cannot change or remove ledger rows; the
database itself refuses (permission denied, before any trigger)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from ledger.model import AccountFlags, Transfer, TransferCode
from ledger.service import Ledger
from tests.ledger_helpers import make_accounts

pytestmark = pytest.mark.server

WRITER = "giftledger_writer"
REFUSED_FOR_THE_WRITER = [
    "UPDATE transfers SET amount = amount WHERE id = :id",
    "DELETE FROM transfers WHERE id = :id",
    "TRUNCATE transfers",
    "UPDATE transfer_keys SET created_at = created_at WHERE id = :id",
    "DELETE FROM transfer_keys WHERE id = :id",
    "UPDATE ledger_links SET linked_at = linked_at",
    "DELETE FROM ledger_links",
    "UPDATE applied_events SET applied_at = applied_at",
    "DELETE FROM applied_events",
    "UPDATE rate_cards SET note = note",
    "DELETE FROM cashout_transitions",
    "UPDATE accounts SET asset = 'USD' WHERE id = 0",
    "UPDATE accounts SET flags = 1 WHERE id = 0",
    "UPDATE accounts SET name = name || 'x' WHERE id = 0",
    "DROP TABLE transfers",
    "ALTER TABLE transfers DISABLE TRIGGER ALL",
    "SET session_replication_role = replica",
    # Rows only migrations write, and transfers written past `transfers` (migration 0043).
    "INSERT INTO assets (code, scale) VALUES ('XAU', 0)",
    "INSERT INTO transfer_codes (code, name) VALUES (999, 'forged')",
    "INSERT INTO account_kinds (kind, account_type, normal_side, description)"
    " VALUES ('forged', 'asset', 'debit', 'forged')",
    "INSERT INTO alembic_version VALUES ('9999')",
    "INSERT INTO cashout_catch_ups (cashout_id, status_migrated) VALUES ('forged', 'paid')",
    "INSERT INTO transfers_default (id) SELECT id FROM transfers WHERE false",
]


@pytest_asyncio.fixture(loop_scope="session")
async def writer_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=1, role=WRITER)
    yield engine
    await engine.dispose()


async def test_the_writer_posts_transfers_and_moves_account_totals(
    engine: AsyncEngine, writer_engine: AsyncEngine, unique_id: str
) -> None:
    a, b = await make_accounts(Ledger(engine), unique_id, [AccountFlags.NONE] * 2)
    ledger = Ledger(writer_engine)
    assert await ledger.post([Transfer(uuid.uuid4(), a, b, 5, TransferCode.SYNTHETIC)]) == ["ok"]
    async with writer_engine.connect() as conn:
        assert (await conn.execute(text("SELECT current_user"))).scalar_one() == WRITER


@pytest.mark.parametrize("statement", REFUSED_FOR_THE_WRITER)
async def test_the_writer_cannot_change_or_remove_ledger_rows(
    engine: AsyncEngine, writer_engine: AsyncEngine, unique_id: str, statement: str
) -> None:
    a, b = await make_accounts(Ledger(engine), unique_id, [AccountFlags.NONE] * 2)
    transfer = Transfer(uuid.uuid4(), a, b, 5, TransferCode.SYNTHETIC)
    await Ledger(engine).post([transfer])
    with pytest.raises(DBAPIError, match=r"permission denied|must be owner"):
        async with writer_engine.begin() as conn:
            await conn.execute(text(statement), {"id": transfer.id})


async def test_the_reader_cannot_write_at_all(engine: AsyncEngine, database_url: str) -> None:
    reader = create_engine(database_url, pool_size=1, role="giftledger_reader")
    try:
        for statement in (
            "INSERT INTO rate_cards (version, effective_from, milli_diamonds_per_coin,"
            " diamonds_per_usd) VALUES (999, now() + interval '1 day', 1, 1)",
            "UPDATE accounts SET flags = flags",
            "DELETE FROM outbox",
        ):
            with pytest.raises(DBAPIError, match="permission denied"):
                async with reader.begin() as conn:
                    await conn.execute(text(statement))
    finally:
        await reader.dispose()
