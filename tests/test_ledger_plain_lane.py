"""`post` of a batch of new plain transfers that can break no balance rule skips the walk: it
is written by the statement of `post_new` (`ledger.store._plain_batch`). What it stores must be
what the walk would have stored, and every batch the walk could refuse a transfer of must still
be walked, with the walk's results."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.model import BIGINT_MAX, AccountFlags, PostResult, Transfer, TransferCode, TransferFlags
from ledger.service import Ledger
from ledger.store import read_stored
from ledger.verify import verify
from tests.ledger_helpers import ledger_problems, make_accounts, new_id, one_snapshot, totals

pytestmark = pytest.mark.server

SYN = TransferCode.SYNTHETIC
ACCOUNT_COUNT = 4


@pytest.fixture(scope="module")
def engine(module_engine: AsyncEngine) -> AsyncEngine:
    """This module's own database: the full `verify` after each example reads only its data."""
    return module_engine


@contextmanager
def ledger_writes(engine: AsyncEngine) -> Iterator[list[str]]:
    """The kind of each ledger write run meanwhile: "new" (the statement of new plain
    transfers) or "general" (the walked batches' statement, which can resolve pending ones)."""
    kinds: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "INSERT INTO transfers" in statement:
            kinds.append("general" if "pending_resolutions" in statement else "new")

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        yield kinds
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)


async def post_walked(ledger: Ledger, transfers: list[Transfer]) -> list[PostResult]:
    """As `Ledger.post`, but the accounts locked and read first, so the batch is walked."""
    async for tx in ledger.transactions():
        async with tx:
            outcome = await tx.post(transfers, lock_accounts_first=True, last=True)
    return outcome.results


moves = st.lists(
    st.tuples(
        st.integers(0, ACCOUNT_COUNT - 1),
        st.integers(1, ACCOUNT_COUNT - 1),
        st.integers(1, 10**15),
        st.none() | st.integers(1, 9),
        # a note in the metadata (PostgreSQL's text holds no NUL)
        st.none() | st.text(st.characters(blacklist_characters="\x00"), max_size=4),
    ),
    min_size=1,
    max_size=20,
)


def transfers_for(
    accounts: list[int], moves: list[tuple[int, int, int, int | None, str | None]]
) -> list[Transfer]:
    return [
        Transfer(
            new_id(),
            accounts[debit],
            accounts[(debit + step) % ACCOUNT_COUNT],
            amount,
            SYN,
            rate_card_version=version,
            event_id=None if note is None else f"event-{index}",
            metadata=None if note is None else {"note": note},
        )
        for index, (debit, step, amount, version, note) in enumerate(moves)
    ]


@given(moves=moves)
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
async def test_a_plain_batch_skips_the_walk_and_stores_what_the_walk_would(
    engine: AsyncEngine, moves: list[tuple[int, int, int, int | None, str | None]]
) -> None:
    ledger = Ledger(engine)
    unflagged = [AccountFlags.NONE] * ACCOUNT_COUNT
    lane_accounts = await make_accounts(ledger, f"lane-{new_id().hex[:8]}", unflagged)
    walk_accounts = await make_accounts(ledger, f"walk-{new_id().hex[:8]}", unflagged)
    lane = transfers_for(lane_accounts, moves)
    walked = transfers_for(walk_accounts, moves)

    with ledger_writes(engine) as kinds:
        assert await ledger.post(lane) == [PostResult.OK] * len(moves)
        assert kinds == ["new"]
        assert await post_walked(ledger, walked) == [PostResult.OK] * len(moves)
        assert kinds == ["new", "general"]

    lane_totals = await totals(engine, lane_accounts)
    walk_totals = await totals(engine, walk_accounts)
    for lane_account, walk_account in zip(lane_accounts, walk_accounts, strict=True):
        ours, theirs = lane_totals[lane_account], walk_totals[walk_account]
        assert (ours.debits_posted, ours.credits_posted) == (
            theirs.debits_posted,
            theirs.credits_posted,
        )
    async with one_snapshot(engine) as conn:
        lane_rows, _ = await read_stored(conn, [t.id for t in lane])
        walk_rows, _ = await read_stored(conn, [t.id for t in walked])
        for lane_transfer, walked_transfer in zip(lane, walked, strict=True):
            a, b = lane_rows[lane_transfer.id], walk_rows[walked_transfer.id]
            assert (a.amount, a.asset, a.code, a.flags, a.pending_id, a.timeout_s) == (
                b.amount,
                b.asset,
                b.code,
                b.flags,
                b.pending_id,
                b.timeout_s,
            )
            assert (a.rate_card_version, a.event_id, a.metadata) == (
                b.rate_card_version,
                b.event_id,
                b.metadata,
            )
            assert (a.debit_balance_after, a.credit_balance_after) == (
                b.debit_balance_after,
                b.credit_balance_after,
            )
        assert await verify(conn) == []


async def test_amounts_past_a_bigint_together_are_walked_and_the_last_overflows(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    half = BIGINT_MAX // 2 + 1
    batch = [Transfer(new_id(), a, b, half, SYN), Transfer(new_id(), a, b, half, SYN)]

    with ledger_writes(engine) as kinds:
        assert await ledger.post(batch) == [PostResult.OK, PostResult.OVERFLOWS]

    assert kinds == ["general"]
    assert (await totals(engine, [b]))[b].credits_posted == half


async def test_a_guarded_account_is_walked_and_its_rule_refuses(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine)
    limited, target = await make_accounts(
        ledger, unique_id, [AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS, AccountFlags.NONE]
    )
    with ledger_writes(engine) as kinds:
        results = await ledger.post([Transfer(new_id(), limited, target, 5, SYN)])

    assert results == [PostResult.EXCEEDS_CREDITS]
    assert kinds == []


async def test_an_account_that_does_not_exist_is_walked_and_reported(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    missing = 2**62
    batch = [Transfer(new_id(), a, b, 3, SYN), Transfer(new_id(), a, missing, 4, SYN)]

    with ledger_writes(engine) as kinds:
        results = await ledger.post(batch)

    assert results == [PostResult.OK, PostResult.ACCOUNT_NOT_FOUND]
    assert kinds == ["general"]
    assert (await totals(engine, [b]))[b].credits_posted == 3


async def test_an_id_twice_in_a_batch_is_stored_once_and_told_exists(
    engine: AsyncEngine, unique_id: str
) -> None:
    """Assumed new, the repeated id fails the lane's write on its unique key; the unit of work
    runs again, sees the batch repeat an id, and walks it."""
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    transfer = Transfer(new_id(), a, b, 6, SYN)

    with ledger_writes(engine) as kinds:
        assert await ledger.post([transfer, transfer]) == [PostResult.OK, PostResult.EXISTS]

    assert kinds == ["new", "general"]
    assert (await totals(engine, [b]))[b].credits_posted == 6


async def test_a_batch_with_flags_is_walked(engine: AsyncEngine, unique_id: str) -> None:
    ledger = Ledger(engine)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    hold = Transfer(new_id(), a, b, 8, SYN, flags=TransferFlags.PENDING)

    with ledger_writes(engine) as kinds:
        assert await ledger.post([Transfer(new_id(), a, b, 2, SYN), hold]) == [PostResult.OK] * 2

    assert kinds == ["general"]
    after = (await totals(engine, [b]))[b]
    assert (after.credits_posted, after.credits_pending) == (2, 8)


async def test_plain_batches_before_the_last_write_are_linked_at_the_commit(
    engine: AsyncEngine, unique_id: str
) -> None:
    """A batch that is not its unit of work's last write returns its chain entries, which the
    unit of work links before its commit: `verify` recomputes the chain from the stored rows."""
    ledger = Ledger(engine)
    a, b, c = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 3)
    first = [Transfer(new_id(), a, b, 5, SYN, metadata={"n": 1}), Transfer(new_id(), b, c, 2, SYN)]
    second = [Transfer(new_id(), c, a, 1, SYN, event_id="e-2")]

    with ledger_writes(engine) as kinds:
        async for tx in ledger.transactions():
            async with tx:
                assert (await tx.post(first)).results == [PostResult.OK] * 2
                assert (await tx.post(second, last=True)).results == [PostResult.OK]

    assert kinds == ["new", "new"]
    after = await totals(engine, [a, b, c])
    assert [(after[i].debits_posted, after[i].credits_posted) for i in (a, b, c)] == [
        (5, 1),
        (2, 5),
        (1, 2),
    ]
    assert await ledger_problems(engine) == []
