"""Ledger rows cannot be changed or removed: the database itself refuses."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.model import AccountFlags, Transfer, TransferCode, TransferFlags
from ledger.service import Ledger
from tests.ledger_helpers import make_accounts

pytestmark = pytest.mark.server

REFUSING_STATEMENTS = [
    "UPDATE transfers SET amount = amount + 1 WHERE id = :id",
    "DELETE FROM transfers WHERE id = :id",
    "UPDATE transfer_keys SET created_at = now() WHERE id = :id",
    "DELETE FROM transfer_keys WHERE id = :id",
    "UPDATE pending_resolutions SET outcome = 'voided' WHERE pending_id = :pending_id",
    "DELETE FROM pending_resolutions WHERE pending_id = :pending_id",
    "TRUNCATE transfers",
    "TRUNCATE transfer_keys",
    "TRUNCATE pending_resolutions",
]


@pytest.mark.parametrize("statement", REFUSING_STATEMENTS)
async def test_changing_a_ledger_row_fails_in_the_database(
    engine: AsyncEngine, unique_id: str, statement: str
) -> None:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    pending = Transfer(uuid.uuid4(), a, b, 5, TransferCode.SYNTHETIC, TransferFlags.PENDING)
    post = Transfer(
        uuid.uuid4(), 0, 0, 5, TransferCode.SYNTHETIC, TransferFlags.POST_PENDING, pending.id
    )
    await ledger.post([pending, post])
    with pytest.raises(DBAPIError, match="immutable"):
        async with engine.begin() as conn:
            await conn.execute(text(statement), {"id": post.id, "pending_id": pending.id})


APPEND_ONLY_TABLES = [
    "transfers",
    "transfer_keys",
    "pending_resolutions",
    "ledger_links",
    "applied_events",
    "rate_cards",
    "fx_rates",
    "cashout_transitions",
]


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
async def test_an_append_only_table_cannot_be_truncated_even_by_its_owner(
    engine: AsyncEngine, table: str
) -> None:
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            with pytest.raises(DBAPIError, match="immutable"):
                await conn.execute(text(f"TRUNCATE {table} CASCADE"))
        finally:
            await transaction.rollback()
