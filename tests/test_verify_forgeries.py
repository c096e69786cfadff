"""Forgeries the writer role's grants allow (insert transfers, keys, links and resolutions, move
account totals) that `verify --full` must find, each written here the way the ledger's own write
would (totals moved, balances after consistent, the transfer's key, a correctly hashed link):
a transfer in no link while another link names an old one again, a pending transfer posted
twice, a post of more than its pending reserved, and a transfer stamped before the one before it
on its account."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.chain import append_link
from ledger.database import create_engine
from ledger.model import (
    AccountFlags,
    PostResult,
    StoredTransfer,
    Transfer,
    TransferCode,
    TransferFlags,
)
from ledger.service import Ledger
from ledger.verify import verify
from tests.fresh_database import fresh_database
from tests.ledger_helpers import make_accounts

pytestmark = pytest.mark.server

SYN = TransferCode.SYNTHETIC


@pytest_asyncio.fixture(loop_scope="session")
async def engine(postgres_admin_url: str) -> AsyncIterator[AsyncEngine]:
    """A ledger of its own for each forgery: what one leaves does not mask another."""
    async with fresh_database(postgres_admin_url) as url:
        engine = create_engine(url, pool_size=2)
        try:
            yield engine
        finally:
            await engine.dispose()


async def _details(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="REPEATABLE READ")
        return [problem.detail for problem in await verify(conn)]


async def _stored(conn: AsyncConnection, transfer_id: uuid.UUID) -> StoredTransfer:
    row = (
        await conn.execute(
            text(
                "SELECT id, seq, debit_account_id, credit_account_id, amount, asset, code, flags,"
                " pending_id, timeout_s, expires_at, rate_card_version, event_id, metadata,"
                " debit_balance_after, credit_balance_after, created_at"
                " FROM transfers WHERE id = :id"
            ),
            {"id": transfer_id},
        )
    ).one()
    return StoredTransfer(**row._mapping)


async def _forge(
    conn: AsyncConnection,
    debit: int,
    credit: int,
    amount: int,
    *,
    flags: int = 0,
    pending_id: uuid.UUID | None = None,
    pending_released: int = 0,
    created_at: datetime | None = None,
) -> uuid.UUID:
    """A transfer inserted as the ledger's write would store it, past its checks: the accounts'
    totals moved, its balances after from them, its key; not linked."""
    forged = uuid.uuid4()
    posted = 0 if flags & (TransferFlags.PENDING | TransferFlags.VOID_PENDING) else amount
    move = (
        "UPDATE accounts SET {side}_posted = {side}_posted + :posted,"
        " {side}_pending = {side}_pending - :released WHERE id = :id"
    )
    for side, account in (("debits", debit), ("credits", credit)):
        await conn.execute(
            text(move.format(side=side)),
            {"posted": posted, "released": pending_released, "id": account},
        )
    balance = "SELECT credits_posted - debits_posted FROM accounts WHERE id = :id"
    debit_after = (await conn.execute(text(balance), {"id": debit})).scalar_one()
    credit_after = (await conn.execute(text(balance), {"id": credit})).scalar_one()
    stamp = created_at or (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    await conn.execute(
        text(
            "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, asset, code,"
            " flags, pending_id, debit_balance_after, credit_balance_after, created_at)"
            " VALUES (:id, :debit, :credit, :amount, 'DIAMOND', :code, :flags, :pending,"
            " :debit_after, :credit_after, :at)"
        ),
        {
            "id": forged,
            "debit": debit,
            "credit": credit,
            "amount": amount,
            "code": int(SYN),
            "flags": flags,
            "pending": pending_id,
            "debit_after": debit_after,
            "credit_after": credit_after,
            "at": stamp,
        },
    )
    await conn.execute(
        text("INSERT INTO transfer_keys (id, created_at) VALUES (:id, :at)"),
        {"id": forged, "at": stamp},
    )
    return forged


async def _accounts_with_a_transfer(engine: AsyncEngine) -> tuple[list[int], uuid.UUID]:
    accounts = await make_accounts(Ledger(engine), "forged", [AccountFlags.NONE] * 2)
    first = Transfer(uuid.uuid4(), accounts[0], accounts[1], 40, SYN)
    assert await Ledger(engine).post([first]) == [PostResult.OK]
    assert await _details(engine) == []
    return accounts, first.id


async def test_a_transfer_in_no_link_beside_a_link_naming_an_old_one_again_is_found(
    engine: AsyncEngine,
) -> None:
    accounts, linked = await _accounts_with_a_transfer(engine)
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL ROLE giftledger_writer"))
        await _forge(conn, accounts[0], accounts[1], 7)
        await append_link(conn, [await _stored(conn, linked)])  # the counts stay equal
    assert f"transfer {linked} is named by 2 links" in await _details(engine)


async def test_a_pending_transfer_posted_twice_is_found(engine: AsyncEngine) -> None:
    accounts, _ = await _accounts_with_a_transfer(engine)
    ledger = Ledger(engine)
    pending = Transfer(uuid.uuid4(), accounts[0], accounts[1], 10, SYN, TransferFlags.PENDING)
    post = Transfer(uuid.uuid4(), 0, 0, 0, SYN, TransferFlags.POST_PENDING, pending.id)
    assert await ledger.post([pending]) == [PostResult.OK]
    assert await ledger.post([post]) == [PostResult.OK]
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL ROLE giftledger_writer"))
        again = await _forge(
            conn,
            accounts[0],
            accounts[1],
            10,
            flags=TransferFlags.POST_PENDING,
            pending_id=pending.id,
        )
        await append_link(conn, [await _stored(conn, again)])
    assert f"transfer {again} resolves {pending.id} but no resolution names it" in (
        await _details(engine)
    )


async def test_a_post_of_more_than_its_pending_reserved_is_found(engine: AsyncEngine) -> None:
    accounts, _ = await _accounts_with_a_transfer(engine)
    pending = Transfer(uuid.uuid4(), accounts[0], accounts[1], 10, SYN, TransferFlags.PENDING)
    assert await Ledger(engine).post([pending]) == [PostResult.OK]
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL ROLE giftledger_writer"))
        post = await _forge(
            conn,
            accounts[0],
            accounts[1],
            5_000,
            flags=TransferFlags.POST_PENDING,
            pending_id=pending.id,
            pending_released=10,
        )
        await conn.execute(
            text(
                "INSERT INTO pending_resolutions (pending_id, resolved_by, outcome, created_at)"
                " SELECT :pending, id, 'posted', created_at FROM transfers WHERE id = :post"
            ),
            {"pending": pending.id, "post": post},
        )
        await append_link(conn, [await _stored(conn, post)])
    assert f"transfer {post} resolves {pending.id} but posts 5000 of 10" in (await _details(engine))


async def test_a_transfer_stamped_before_the_one_before_it_on_its_account_is_found(
    engine: AsyncEngine,
) -> None:
    accounts, linked = await _accounts_with_a_transfer(engine)
    async with engine.begin() as conn:
        await conn.execute(text("SET LOCAL ROLE giftledger_writer"))
        before = (await _stored(conn, linked)).created_at - timedelta(milliseconds=1)
        backdated = await _forge(conn, accounts[0], accounts[1], 3, created_at=before)
        await append_link(conn, [await _stored(conn, backdated)])
    found = await _details(engine)
    assert any(
        detail.startswith(f"transfer {backdated}: committed at ")
        and "before the transfer" in detail
        for detail in found
    ), found
