"""A unit of work's first attempt assumes its transfers' ids are new instead of reading them
(`ledger.store`, step 1): a stored one fails the write on its unique key and the unit of work
runs again, reading them; a batch whose walk refuses a transfer reads them at once, since a
stored transfer's result comes before any other. The results are those a read would give."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.model import AccountFlags, PostResult, Transfer, TransferCode
from ledger.service import Ledger
from ledger.verify import verify
from tests.ledger_helpers import make_accounts, new_id, totals

pytestmark = pytest.mark.server

SYN = TransferCode.SYNTHETIC


async def post_counting_attempts(
    ledger: Ledger, transfers: list[Transfer], retry_count_max: int | None = None
) -> tuple[list[PostResult], int]:
    attempts = 0
    async for tx in ledger.transactions(retry_count_max=retry_count_max):
        async with tx:
            attempts += 1
            outcome = await tx.post(transfers, last=True)
    return outcome.results, attempts


async def a_stored_transfer(
    engine: AsyncEngine, unique_id: str, retry_count_max: int | None = None
) -> tuple[Ledger, Transfer]:
    """A ledger and a transfer of 10 it has stored, between two new accounts."""
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    stored = Transfer(new_id(), a, b, 10, SYN)
    assert await post_counting_attempts(ledger, [stored], retry_count_max) == ([PostResult.OK], 1)
    return ledger, stored


async def test_a_batch_that_repeats_a_stored_transfer_runs_again_and_stores_the_rest_once(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger, stored = await a_stored_transfer(engine, unique_id)
    b = stored.credit_account_id

    fresh = Transfer(new_id(), stored.debit_account_id, b, 7, SYN)
    results, attempts = await post_counting_attempts(ledger, [stored, fresh])

    assert results == [PostResult.EXISTS, PostResult.OK]
    assert attempts == 2
    assert (await totals(engine, [b]))[b].credits_posted == 17
    async with engine.connect() as conn:
        assert await verify(conn) == []


async def test_a_stored_transfer_the_walk_would_refuse_is_told_exists_in_one_attempt(
    engine: AsyncEngine, unique_id: str
) -> None:
    """Assumed new, the repeated debit would take the limited account past its credits."""
    ledger = Ledger(engine)
    funding, limited, target = await make_accounts(
        ledger,
        unique_id,
        [AccountFlags.NONE, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS, AccountFlags.NONE],
    )
    spend = Transfer(new_id(), limited, target, 100, SYN)
    first = [Transfer(new_id(), funding, limited, 100, SYN), spend]
    assert await post_counting_attempts(ledger, first) == ([PostResult.OK] * 2, 1)

    results, attempts = await post_counting_attempts(ledger, [spend])

    assert (results, attempts) == ([PostResult.EXISTS], 1)
    assert (await totals(engine, [target]))[target].credits_posted == 100


async def test_a_unit_of_work_that_may_not_run_again_reads_its_ids_first(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger, stored = await a_stored_transfer(engine, unique_id, retry_count_max=0)

    results, attempts = await post_counting_attempts(ledger, [stored], retry_count_max=0)

    assert (results, attempts) == ([PostResult.EXISTS], 1)


async def test_an_attempt_after_a_duplicate_key_runs_at_once(
    engine: AsyncEngine, unique_id: str
) -> None:
    """The writer that took the key has committed (the key's check waited for it), so no
    backoff: it is for deadlocks, whose writers could meet again."""
    ledger, stored = await a_stored_transfer(engine, unique_id)

    waits: list[float] = []
    attempts = ledger.transactions()
    async for tx in attempts:
        async with tx:
            waits.append(attempts.waited_s)
            outcome = await tx.post([stored], last=True)

    assert outcome.results == [PostResult.EXISTS]
    assert waits == [0.0, 0.0]
