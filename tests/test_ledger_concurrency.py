"""Several writers on separate connections racing on one hot account."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.model import AccountFlags, PostResult, Transfer, TransferCode, TransferFlags
from ledger.service import Ledger
from tests.ledger_helpers import ledger_problems, make_accounts, totals

pytestmark = pytest.mark.server

WRITER_COUNT = 4
BATCH_COUNT_PER_WRITER = 12
BATCH_SIZE = 200
RACE_TIMEOUT_S = 120


async def test_writers_racing_on_a_hot_account_keep_its_rule_and_exact_totals(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine, batch_size_max=BATCH_SIZE)
    flags = [AccountFlags.NONE, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS] + [
        AccountFlags.NONE
    ] * 20
    funder, hot, *others = await make_accounts(ledger, unique_id, flags)
    await ledger.post([Transfer(uuid.uuid4(), funder, hot, 5_000, TransferCode.SYNTHETIC)])

    async def writer(seed: int) -> list[tuple[Transfer, PostResult]]:
        rng = random.Random(seed)
        posted: list[tuple[Transfer, PostResult]] = []
        for _ in range(BATCH_COUNT_PER_WRITER):
            batch = []
            for _ in range(BATCH_SIZE):
                amount = rng.randint(1, 50)
                if rng.random() < 0.5:  # spend from the hot account: may exceed its credits
                    transfer = Transfer(
                        uuid.uuid4(), hot, rng.choice(others), amount, TransferCode.SYNTHETIC
                    )
                else:  # earn into it, or move between cold accounts in reverse id order
                    debit = rng.choice([funder, *others])
                    credit = hot if rng.random() < 0.7 else rng.choice([funder, *others])
                    if debit == credit:
                        credit = hot
                    flags = TransferFlags.NONE
                    transfer = Transfer(
                        uuid.uuid4(), debit, credit, amount, TransferCode.SYNTHETIC, flags
                    )
                batch.append(transfer)
            results = await ledger.post(batch)
            posted.extend(zip(batch, results, strict=True))
        return posted

    outcomes = await asyncio.wait_for(
        asyncio.gather(*(writer(seed) for seed in range(WRITER_COUNT))), RACE_TIMEOUT_S
    )
    accepted = [t for outcome in outcomes for t, r in outcome if r is PostResult.OK]
    refused = [r for outcome in outcomes for _, r in outcome if r is not PostResult.OK]
    assert set(refused) <= {PostResult.EXCEEDS_CREDITS}
    assert refused, "the race should have pushed the hot account against its rule"

    stored = await totals(engine, [funder, hot, *others])
    for account_id, account in stored.items():
        debits = sum(t.amount for t in accepted if t.debit_account_id == account_id)
        credits = sum(t.amount for t in accepted if t.credit_account_id == account_id)
        if account_id == hot:
            credits += 5_000
        if account_id == funder:
            debits += 5_000
        assert (account.debits_posted, account.credits_posted) == (debits, credits)
    assert stored[hot].debits_posted <= stored[hot].credits_posted
    assert await ledger_problems(engine) == []


async def test_two_writers_creating_the_same_new_accounts_get_the_same_ids(
    engine: AsyncEngine, unique_id: str
) -> None:
    flags = [AccountFlags.NONE] * 50
    first, second = await asyncio.gather(
        make_accounts(Ledger(engine), unique_id, flags),
        make_accounts(Ledger(engine), unique_id, flags),
    )
    assert first == second
    assert len(set(first)) == 50


async def test_two_writers_posting_the_same_transfer_store_it_once(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    batch = [Transfer(uuid.uuid4(), a, b, 1, TransferCode.SYNTHETIC) for _ in range(500)]
    first, second = await asyncio.gather(ledger.post(batch), ledger.post(batch))
    for one, other in zip(first, second, strict=True):
        assert {one, other} == {PostResult.OK, PostResult.EXISTS}
    assert (await totals(engine, [b]))[b].credits_posted == 500
