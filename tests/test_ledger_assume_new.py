"""A unit of work's first attempt assumes its transfers' ids are new instead of reading them
(`ledger.store`, step 1): a stored one fails the write on its unique key and the unit of work
runs again, reading them; a batch whose walk refuses a transfer reads them at once, since a
stored transfer's result comes before any other. The results are those a read would give.
Every run again after a lost race is told to the ledger's `on_conflict` with its kind, and the
services count it in `giftledger_ledger_conflicts_retried_total`."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.model import AccountFlags, PostResult, Transfer, TransferCode
from ledger.service import CONFLICT_KINDS, Ledger
from ledger.store import LedgerConflictError, conflict_kind
from services.runtime.ledger_setup import build_ledger
from services.runtime.settings import Settings
from tests.ledger_helpers import ledger_problems, make_accounts, new_id, totals

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
    assert await ledger_problems(engine) == []


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


async def test_a_run_again_is_told_to_on_conflict_with_its_kind(
    engine: AsyncEngine, unique_id: str
) -> None:
    _, stored = await a_stored_transfer(engine, unique_id)
    kinds: list[str] = []
    ledger = Ledger(engine, on_conflict=kinds.append)

    results, attempts = await post_counting_attempts(ledger, [stored])

    assert (results, attempts) == ([PostResult.EXISTS], 2)
    assert kinds == ["unique_key"]


async def lock_in_order(
    ledger: Ledger, account_ids: tuple[int, int], holding: asyncio.Event, other: asyncio.Event
) -> int:
    """A unit of work that locks two accounts one after the other, the second only once the
    other unit of work holds its first; returns its attempts."""
    attempts = 0
    async for tx in ledger.transactions():
        async with tx:
            attempts += 1
            for position, account_id in enumerate(account_ids):
                if position == 1:
                    holding.set()
                    await asyncio.wait_for(other.wait(), timeout=30)
                await tx.connection.execute(
                    text("SELECT id FROM accounts WHERE id = :id FOR NO KEY UPDATE"),
                    {"id": account_id},
                )
    return attempts


async def test_a_deadlock_runs_the_loser_again_and_each_run_again_is_counted(
    engine: AsyncEngine, unique_id: str
) -> None:
    """Two units of work locking two accounts in opposite orders: PostgreSQL ends one of them
    (after its `deadlock_timeout`), which runs again, and both commit. Usually once more: but
    the loser's new attempt can lock its first row before the survivor, woken by the loser's
    end, has marked that row as its own, and then the two deadlock again (seen on a loaded
    machine); so the test holds every run again to one deadlock counted, not to a count."""
    kinds: list[str] = []
    ledger = Ledger(engine, on_conflict=kinds.append)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    first_holds, second_holds = asyncio.Event(), asyncio.Event()

    attempts = await asyncio.gather(
        lock_in_order(ledger, (a, b), first_holds, second_holds),
        lock_in_order(ledger, (b, a), second_holds, first_holds),
    )

    runs_again = sum(attempts) - len(attempts)
    assert runs_again >= 1
    assert kinds == ["deadlock"] * runs_again


async def test_the_services_ledger_counts_what_it_runs_again_by_kind(
    engine: AsyncEngine, unique_id: str
) -> None:
    _, stored = await a_stored_transfer(engine, unique_id)
    ledger = build_ledger(Settings(), engine)

    def counted(kind: str) -> float:
        value = REGISTRY.get_sample_value(
            "giftledger_ledger_conflicts_retried_total", {"kind": kind}
        )
        assert value is not None, f"{kind} is not exported"
        return value

    before = {kind: counted(kind) for kind in CONFLICT_KINDS}
    await post_counting_attempts(ledger, [stored])

    after = {kind: counted(kind) for kind in CONFLICT_KINDS}
    assert {kind: after[kind] - before[kind] for kind in CONFLICT_KINDS} == {
        "unique_key": 1,
        "deadlock": 0,
        "serialization_failure": 0,
    }


def test_an_error_that_is_not_a_lost_race_has_no_conflict_kind() -> None:
    assert conflict_kind(ValueError("not a database error")) is None
    assert conflict_kind(LedgerConflictError("another writer stored it first")) == "unique_key"
