"""The store's statements run with generic plans (`ledger.store._generic_plans`), and only they:
the caller's own statements in the same unit of work get their connection's custom plans back.

A generic plan does not know an array's size, so it is the same for a batch of 1 and of 8,000:
the write must update the accounts by probing their key, never by reading the whole table, even
when the table is small as it plans (a plan is kept for the connection, and the table grows).
The plans are read as JSON and held to that property, not to one server version's wording.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.model import AccountFlags, NewTransfers, PostResult, Transfer, TransferCode
from ledger.service import Ledger
from tests.ledger_helpers import make_accounts, new_id
from tests.query_plans import nodes_of, plan_root

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def engine(module_engine: AsyncEngine) -> AsyncEngine:
    """This module's own database, new: its accounts table holds only what these tests made."""
    return module_engine


WRITE_MARK = "batch_rows AS MATERIALIZED"  # in both writes' text, and in no other statement
INDEX_SCAN_TYPES = {"Index Scan", "Index Only Scan"}


def transfers_between(account_ids: list[int], count: int) -> list[Transfer]:
    return [
        Transfer(
            id=new_id(),
            debit_account_id=account_ids[index % len(account_ids)],
            credit_account_id=account_ids[(index + 1) % len(account_ids)],
            amount=index + 1,
            code=TransferCode.SYNTHETIC,
        )
        for index in range(count)
    ]


def new_transfers_between(account_ids: list[int], count: int) -> NewTransfers:
    batch = NewTransfers()
    for transfer in transfers_between(account_ids, count):
        batch.add(
            transfer_id=transfer.id,
            debit_account_id=transfer.debit_account_id,
            credit_account_id=transfer.credit_account_id,
            amount=transfer.amount,
            code=int(transfer.code),
            rate_card_version=None,
            event_id=None,
            metadata_text=None,
        )
    return batch


async def plans_made(conn: AsyncConnection) -> dict[str, tuple[int, int]]:
    """(generic plans, custom plans) of each statement this session prepared, by its text."""
    rows = await conn.execute(
        text("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
    )
    return {row.statement: (row.generic_plans, row.custom_plans) for row in rows}


async def plan_cache_mode(conn: AsyncConnection) -> str:
    mode = (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one()
    assert isinstance(mode, str)
    return mode


@pytest.mark.parametrize("path", ["post", "post_new"])
async def test_the_store_plans_generically_and_gives_the_caller_its_custom_plans_back(
    engine: AsyncEngine, unique_id: str, path: str
) -> None:
    ledger = Ledger(engine)
    account_ids = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 3)
    async for tx in ledger.transactions():
        async with tx:
            assert await plan_cache_mode(tx.connection) == "force_custom_plan"
            if path == "post":
                await tx.post(transfers_between(account_ids, 5))
            else:
                await tx.post_new(new_transfers_between(account_ids, 5))
            mode_after = await plan_cache_mode(tx.connection)
            plans = await plans_made(tx.connection)
    assert mode_after == "force_custom_plan"
    writes = [counts for statement, counts in plans.items() if WRITE_MARK in statement]
    assert writes, sorted(plans)
    assert all(generic >= 1 and custom == 0 for generic, custom in writes), writes


async def test_the_writes_generic_plan_probes_the_accounts_key_on_a_small_table(
    engine: AsyncEngine, unique_id: str
) -> None:
    """The accounts table is as small as a new ledger's (a few accounts, its statistics
    forgotten, as before autovacuum's first ANALYZE), and the plan must still find each account
    by its key."""
    ledger = Ledger(engine)
    account_ids = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 3)
    captured: list[tuple[str, Any]] = []

    def capture(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if WRITE_MARK in statement:
            captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        for path in ("post", "post_new"):
            async for tx in ledger.transactions():
                async with tx:
                    if path == "post":
                        await tx.post(transfers_between(account_ids, 4), last=True)
                    else:
                        await tx.post_new(new_transfers_between(account_ids, 4), last=True)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    assert len(captured) == 2

    async with engine.connect() as conn:
        role = text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if not (await conn.execute(role)).scalar_one():
            pytest.skip("forgetting a table's statistics needs a superuser")
        try:  # in one transaction, rolled back
            await conn.execute(
                text("DELETE FROM pg_statistic WHERE starelid = 'accounts'::regclass")
            )
            await conn.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
            plans = []
            for statement, parameters in captured:
                result = await conn.exec_driver_sql(
                    f"EXPLAIN (FORMAT JSON) {statement}", parameters
                )
                plans.append(plan_root(result.scalar_one()))
        finally:
            await conn.rollback()

    for plan in plans:
        reads = [
            node
            for node in nodes_of(plan)
            if node.get("Relation Name") == "accounts" and node["Node Type"] != "ModifyTable"
        ]
        assert reads, json.dumps(plan, indent=2)
        assert all(node["Node Type"] in INDEX_SCAN_TYPES for node in reads), json.dumps(
            plan, indent=2
        )


@pytest.mark.parametrize(
    ("path", "last", "accepted"),
    [
        ("post", False, True),
        ("post", True, True),
        ("post", True, False),
        ("post_new", False, True),
        ("post_new", True, True),
    ],
)
async def test_the_write_gives_the_caller_its_own_setting_back_and_is_the_last_statement(
    engine: AsyncEngine, unique_id: str, path: str, last: bool, accepted: bool
) -> None:
    """The caller's own setting comes back, not the connection's. A write gives it back itself,
    so nothing runs between the write and what the caller does next (a linked write holds its
    accounts' locks and the chain head until the commit); a batch with nothing to write gives
    it back with a statement of its own."""
    ledger = Ledger(engine)
    account_ids = await make_accounts(
        ledger,
        unique_id,
        [AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS, AccountFlags.NONE, AccountFlags.NONE],
    )
    # The first account may not go below zero and has no credits: a batch debiting it alone is
    # refused, and writes nothing. The other two have no rule.
    refused = [
        Transfer(
            id=new_id(),
            debit_account_id=account_ids[0],
            credit_account_id=account_ids[1],
            amount=1,
            code=TransferCode.SYNTHETIC,
        )
    ]
    statements: list[str] = []

    def record(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        statements.append(statement)

    async for tx in ledger.transactions():
        async with tx:
            await tx.connection.execute(text("SET LOCAL plan_cache_mode = auto"))
            event.listen(engine.sync_engine, "before_cursor_execute", record)
            try:
                if path == "post_new":
                    await tx.post_new(new_transfers_between(account_ids[1:], 2), last=last)
                elif accepted:
                    await tx.post(transfers_between(account_ids[1:], 2), last=last)
                else:
                    outcome = await tx.post(refused, last=last)
                    assert outcome.results == [PostResult.EXCEEDS_CREDITS]
            finally:
                event.remove(engine.sync_engine, "before_cursor_execute", record)
            mode_after = await plan_cache_mode(tx.connection)
    assert mode_after == "auto"
    assert statements, "the store ran no statement"
    if accepted:
        assert WRITE_MARK in statements[-1], statements[-1]
    else:
        assert not any(WRITE_MARK in statement for statement in statements)
