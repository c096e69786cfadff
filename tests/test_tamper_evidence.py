"""Tamper evidence: with the immutability triggers bypassed (as only a superuser can), an
edited, deleted or smuggled-in transfer breaks the hash chain, and `verify` says so."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.model import AccountFlags, Transfer, TransferCode
from ledger.service import Ledger
from ledger.verify import CHAIN_CHECK
from tests.ledger_helpers import ledger_problems, make_accounts

pytestmark = pytest.mark.server


@asynccontextmanager
async def triggers_bypassed(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction in which ordinary triggers do not fire (superuser only)."""
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        yield conn


async def _chain_problems(engine: AsyncEngine) -> list[str]:
    problems = await ledger_problems(engine)
    return [problem.detail for problem in problems if problem.check == CHAIN_CHECK]


async def _posted_transfer(engine: AsyncEngine, unique_id: str) -> uuid.UUID:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    transfer = Transfer(uuid.uuid4(), a, b, 42, TransferCode.SYNTHETIC)
    await ledger.post([transfer, Transfer(uuid.uuid4(), b, a, 1, TransferCode.SYNTHETIC)])
    return transfer.id


# A field of each part a link's digest covers (the ledger's own write makes links of the form
# `LINK_FORM_HEADS_AND_BALANCES`): a line's head, its running balances, its commit timestamp.
FORGED_VALUES = {
    "event_id": "'forged'",
    "amount": "amount + 1",
    "debit_balance_after": "debit_balance_after + 1",
    "credit_balance_after": "credit_balance_after - 1",
    "created_at": "created_at + interval '1 microsecond'",
}


async def _assert_one_link_changed_then_healed(
    engine: AsyncEngine,
    tamper: str,
    undo: str,
    tamper_parameters: dict[str, Any],
    undo_parameters: dict[str, Any],
) -> int:
    """With the triggers bypassed, `tamper` makes `verify` find one link whose transfers were
    changed, and `undo` heals the chain; returns how many rows `tamper` changed."""
    async with triggers_bypassed(engine) as conn:
        changed = (await conn.execute(text(tamper), tamper_parameters)).rowcount
    try:
        problems = await _chain_problems(engine)
        assert len(problems) == 1
        assert "were changed after they were stored" in problems[0]
    finally:
        async with triggers_bypassed(engine) as conn:
            await conn.execute(text(undo), undo_parameters)
    assert await _chain_problems(engine) == []
    return changed


@pytest.mark.parametrize("column", sorted(FORGED_VALUES))
async def test_an_edited_transfer_breaks_the_chain(
    engine: AsyncEngine, unique_id: str, column: str
) -> None:
    transfer_id = await _posted_transfer(engine, unique_id)
    assert await _chain_problems(engine) == []
    async with engine.connect() as conn:
        original = (
            await conn.execute(
                text(f"SELECT {column} FROM transfers WHERE id = :id"),  # noqa: S608
                {"id": transfer_id},
            )
        ).scalar_one()
    await _assert_one_link_changed_then_healed(
        engine,
        f"UPDATE transfers SET {column} = {FORGED_VALUES[column]} WHERE id = :id",  # noqa: S608
        f"UPDATE transfers SET {column} = :value WHERE id = :id",  # noqa: S608
        {"id": transfer_id},
        {"value": original, "id": transfer_id},
    )


async def test_two_transfers_balances_swapped_break_the_chain(
    engine: AsyncEngine, unique_id: str
) -> None:
    """Each balance belongs to its own transfer: the same balances on other transfers of the
    link do not hash alike."""
    await _posted_transfer(engine, unique_id)
    swap = """
        WITH pair AS (
            SELECT unnest(transfer_ids) AS id FROM ledger_links
            WHERE id = (SELECT max(id) FROM ledger_links)
        ), edited AS (
            SELECT t.id, t.debit_balance_after, t.credit_balance_after,
                   lead(t.id) OVER (ORDER BY t.id) AS next_id,
                   lag(t.id) OVER (ORDER BY t.id) AS previous_id
            FROM transfers t JOIN pair USING (id)
        )
        UPDATE transfers t
        SET debit_balance_after = other.debit_balance_after,
            credit_balance_after = other.credit_balance_after
        FROM edited mine JOIN edited other
          ON other.id = coalesce(mine.next_id, mine.previous_id)
        WHERE t.id = mine.id
        """
    swapped = await _assert_one_link_changed_then_healed(engine, swap, swap, {}, {})
    assert swapped == 2


async def test_a_links_form_changed_breaks_the_chain(engine: AsyncEngine, unique_id: str) -> None:
    await _posted_transfer(engine, unique_id)
    flip = "UPDATE ledger_links SET form = 3 - form WHERE id = (SELECT max(id) FROM ledger_links)"
    await _assert_one_link_changed_then_healed(engine, flip, flip, {}, {})


async def test_a_deleted_transfer_breaks_the_chain(engine: AsyncEngine, unique_id: str) -> None:
    transfer_id = await _posted_transfer(engine, unique_id)
    async with triggers_bypassed(engine) as conn:
        await conn.execute(
            text(
                "CREATE TEMP TABLE saved ON COMMIT DROP AS SELECT * FROM transfers WHERE id = :id"
            ),
            {"id": transfer_id},
        )
        await conn.execute(text("DELETE FROM transfers WHERE id = :id"), {"id": transfer_id})
        await conn.execute(text("CREATE TABLE tamper_saved AS SELECT * FROM saved"))
    try:
        problems = await _chain_problems(engine)
        assert any("1 transfers are missing" in problem for problem in problems)
    finally:
        async with triggers_bypassed(engine) as conn:
            await conn.execute(
                text("INSERT INTO transfers OVERRIDING SYSTEM VALUE SELECT * FROM tamper_saved")
            )
            await conn.execute(text("DROP TABLE tamper_saved"))
    assert await _chain_problems(engine) == []


async def test_a_transfer_inserted_behind_the_ledgers_back_is_in_no_link(
    engine: AsyncEngine, unique_id: str
) -> None:
    transfer_id = await _posted_transfer(engine, unique_id)
    forged = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, asset,"
                " code, flags, debit_balance_after, credit_balance_after, created_at)"
                " SELECT :forged, credit_account_id, debit_account_id, amount, asset, code, flags,"
                " 0, 0, created_at FROM transfers WHERE id = :id"
            ),
            {"forged": forged, "id": transfer_id},
        )
    try:
        assert "1 transfers are in no link of the chain" in await _chain_problems(engine)
    finally:
        async with triggers_bypassed(engine) as conn:
            await conn.execute(text("DELETE FROM transfers WHERE id = :id"), {"id": forged})
    assert await _chain_problems(engine) == []
