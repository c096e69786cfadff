"""`post_new`: plain transfers known to be new, posted as columns in one statement.

What it stores must be exactly what `post` would have stored: the general path, given the
same transfers afterwards, finds each one EXISTS (same fields), and `verify` recomputes the totals,
running balances and hash chain from the stored rows."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.chain import metadata_json
from ledger.model import (
    AccountFlags,
    NewTransfers,
    NotNewBatchError,
    PostResult,
    Transfer,
    TransferCode,
)
from ledger.service import Ledger
from ledger.store import LedgerConflictError
from tests.ledger_helpers import ledger_problems, make_accounts, new_id, totals


@pytest.fixture(scope="module")
def engine(module_engine: AsyncEngine) -> AsyncEngine:
    """This module's own database: the full `verify` after each example reads only its data."""
    return module_engine


pytestmark = pytest.mark.server

SYN = int(TransferCode.SYNTHETIC)
ACCOUNT_COUNT = 4


def as_transfers(batch: NewTransfers) -> list[Transfer]:
    """The same transfers as `post` takes them."""
    return [
        Transfer(
            batch.ids[index],
            batch.debit_account_ids[index],
            batch.credit_account_ids[index],
            batch.amounts[index],
            TransferCode(batch.codes[index]),
            rate_card_version=batch.rate_card_versions[index],
            event_id=batch.event_ids[index],
            metadata=None if batch.metadata_texts[index] is None else {"note": f"transfer {index}"},
        )
        for index in range(len(batch))
    ]


async def post_new(ledger: Ledger, batch: NewTransfers) -> None:
    """One unit of work, not run again on a conflict."""
    async for tx in ledger.transactions(retry_count_max=0):
        async with tx:
            await tx.post_new(batch)


def add(
    batch: NewTransfers,
    transfer_id: uuid.UUID,
    debit: int,
    credit: int,
    amount: int,
    *,
    rate_card_version: int | None = None,
    event_id: str | None = None,
    metadata_text: str | None = None,
) -> None:
    batch.add(
        transfer_id=transfer_id,
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        code=SYN,
        rate_card_version=rate_card_version,
        event_id=event_id,
        metadata_text=metadata_text,
    )


async def transfer_count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM transfers"))).scalar_one())


moves = st.lists(
    st.tuples(
        st.integers(0, ACCOUNT_COUNT - 1),
        st.integers(1, ACCOUNT_COUNT - 1),
        st.integers(1, 10**12),
        st.booleans(),
    ),
    min_size=1,
    max_size=30,
)


@given(moves=moves)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_new_transfers_are_stored_as_the_general_path_would_store_them(
    engine: AsyncEngine, moves: list[tuple[int, int, int, bool]]
) -> None:
    ledger = Ledger(engine)
    accounts = await make_accounts(
        ledger, f"new-{uuid.uuid4().hex[:8]}", [AccountFlags.NONE] * ACCOUNT_COUNT
    )
    batch = NewTransfers()
    expected = [[0, 0] for _ in accounts]  # debits, credits posted
    for index, (debit, step, amount, with_metadata) in enumerate(moves):
        credit = (debit + step) % ACCOUNT_COUNT
        metadata = metadata_json({"note": f"transfer {index}"}) if with_metadata else None
        add(
            batch,
            new_id(),
            accounts[debit],
            accounts[credit],
            amount,
            rate_card_version=3,
            event_id=f"e{index}",
            metadata_text=metadata,
        )
        expected[debit][0] += amount
        expected[credit][1] += amount

    await post_new(ledger, batch)

    stored = await totals(engine, accounts)
    assert [[stored[a].debits_posted, stored[a].credits_posted] for a in accounts] == expected
    assert await ledger.post(as_transfers(batch)) == [PostResult.EXISTS] * len(batch)
    assert await ledger_problems(engine) == []


async def test_a_stored_id_fails_the_whole_batch_as_a_conflict(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    first = NewTransfers()
    add(first, new_id(), a, b, 5)
    await post_new(ledger, first)
    again = NewTransfers()
    add(again, new_id(), a, b, 7)
    add(again, first.ids[0], a, b, 5)
    count_before = await transfer_count(engine)

    with pytest.raises(LedgerConflictError):
        await post_new(ledger, again)

    assert await transfer_count(engine) == count_before
    assert (await totals(engine, [b]))[b].credits_posted == 5


@pytest.mark.parametrize(
    ("flags", "debited", "reason"),
    [
        (AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS, True, "debited beyond its credits"),
        (AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS, False, "credited beyond its debits"),
    ],
)
async def test_an_account_whose_rule_the_batch_could_break_is_refused_before_writing(
    engine: AsyncEngine, unique_id: str, flags: AccountFlags, debited: bool, reason: str
) -> None:
    ledger = Ledger(engine)
    guarded, plain = await make_accounts(ledger, unique_id, [flags, AccountFlags.NONE])
    batch = NewTransfers()
    debit, credit = (guarded, plain) if debited else (plain, guarded)
    add(batch, new_id(), debit, credit, 5)
    count_before = await transfer_count(engine)

    with pytest.raises(NotNewBatchError, match=reason):
        await post_new(ledger, batch)

    assert await transfer_count(engine) == count_before


async def test_a_transfer_between_assets_or_without_an_amount_is_refused(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine)
    (diamonds,) = await make_accounts(ledger, f"{unique_id}-d", [AccountFlags.NONE])
    (dollars,) = await make_accounts(ledger, f"{unique_id}-u", [AccountFlags.NONE], asset="USD")
    (other,) = await make_accounts(ledger, f"{unique_id}-o", [AccountFlags.NONE])
    for debit, credit, amount in ((diamonds, dollars, 5), (diamonds, other, 0)):
        batch = NewTransfers()
        add(batch, new_id(), debit, credit, amount)
        with pytest.raises(NotNewBatchError, match="of one asset"):
            await post_new(ledger, batch)


async def test_columns_of_different_lengths_are_refused(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    batch = NewTransfers()
    add(batch, new_id(), a, b, 5)
    batch.amounts.append(6)
    with pytest.raises(ValueError, match="differ in length"):
        await post_new(ledger, batch)


async def test_an_empty_batch_is_refused(engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="holds 1 to"):
        await post_new(Ledger(engine), NewTransfers())
