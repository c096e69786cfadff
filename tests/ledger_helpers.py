"""Small helpers shared by the ledger tests."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.chart import AccountKind, AccountSpec
from ledger.database import create_engine
from ledger.model import AccountFlags, AccountTotals
from ledger.service import Ledger
from ledger.verify import Problem, verify
from ledger.verify_runs import VerifyRun, latest_run


def synthetic_account(
    prefix: str, index: int, asset: str = "DIAMOND", flags: AccountFlags = AccountFlags.NONE
) -> AccountSpec:
    return AccountSpec(f"test:{prefix}:{index}", asset, AccountKind.SYNTHETIC, None, flags)


async def make_accounts(
    ledger: Ledger, prefix: str, flags: list[AccountFlags], asset: str = "DIAMOND"
) -> list[int]:
    specs = [synthetic_account(prefix, index, asset, flag) for index, flag in enumerate(flags)]
    ids = await ledger.account_ids(specs)
    return [ids[spec.name] for spec in specs]


async def totals(engine: AsyncEngine, account_ids: list[int]) -> dict[int, AccountTotals]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, asset, flags, debits_posted, credits_posted, debits_pending,"
                " credits_pending FROM accounts WHERE id = ANY(CAST(:ids AS bigint[]))"
            ),
            {"ids": account_ids},
        )
        return {row.id: AccountTotals(*row) for row in rows}


def new_id() -> uuid.UUID:
    return uuid.uuid4()


async def newest_verify_run(database_url: str) -> VerifyRun | None:
    """The newest run in `verify_runs` (None: none yet), on an engine of its own."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            return await latest_run(conn)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def one_snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection whose transactions are REPEATABLE READ: each sees one snapshot, as
    `ledger.verify.verify` requires (its statements read the ledger one after another, and a
    writer still running, a consumer or the outbox relay, that committed between two of them
    would show its transfers without their link in the chain)."""
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ")
        yield conn


async def ledger_problems(engine: AsyncEngine) -> list[Problem]:
    """What `ledger.verify.verify` finds, in one snapshot, as `giftledger verify` checks."""
    async with one_snapshot(engine) as conn:
        return await verify(conn)
