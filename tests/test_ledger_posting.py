"""Posting transfers: results per transfer, two-phase transfers, linked chains, idempotency."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.model import AccountFlags, PostResult, Transfer, TransferCode, TransferFlags
from ledger.service import Ledger
from tests.ledger_helpers import ledger_problems, make_accounts, new_id, totals

pytestmark = pytest.mark.server

F = TransferFlags
FUNDED_LIMIT = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
SYN = TransferCode.SYNTHETIC


@pytest.fixture
def ledger(engine: AsyncEngine) -> Ledger:
    return Ledger(engine, batch_size_max=50)


def plain(debit: int, credit: int, amount: int, flags: F = F.NONE) -> Transfer:
    return Transfer(new_id(), debit, credit, amount, SYN, flags)


async def test_a_transfer_moves_the_amount_between_both_totals(
    ledger: Ledger, engine: AsyncEngine, unique_id: str
) -> None:
    source, target = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    assert await ledger.post([plain(source, target, 1_500)]) == [PostResult.OK]
    stored = await totals(engine, [source, target])
    assert (stored[source].debits_posted, stored[source].credits_posted) == (1_500, 0)
    assert (stored[target].debits_posted, stored[target].credits_posted) == (0, 1_500)


async def test_reposting_a_batch_changes_nothing(
    ledger: Ledger, engine: AsyncEngine, unique_id: str
) -> None:
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    batch = [plain(a, b, 10), plain(b, a, 3), plain(a, b, 7)]
    assert await ledger.post(batch) == [PostResult.OK] * 3
    before = await totals(engine, [a, b])
    assert await ledger.post(batch) == [PostResult.EXISTS] * 3
    assert await totals(engine, [a, b]) == before


async def test_same_id_with_different_fields_is_refused(
    ledger: Ledger, engine: AsyncEngine, unique_id: str
) -> None:
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    first = plain(a, b, 10)
    await ledger.post([first])
    changed = Transfer(first.id, a, b, 11, SYN)
    assert await ledger.post([changed]) == [PostResult.EXISTS_WITH_DIFFERENT_FIELDS]
    assert (await totals(engine, [b]))[b].credits_posted == 10


async def test_same_id_twice_in_one_batch_is_stored_once(
    ledger: Ledger, engine: AsyncEngine, unique_id: str
) -> None:
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    transfer = plain(a, b, 5)
    results = await ledger.post([transfer, transfer, Transfer(transfer.id, a, b, 6, SYN)])
    assert results == [PostResult.OK, PostResult.EXISTS, PostResult.EXISTS_WITH_DIFFERENT_FIELDS]
    assert (await totals(engine, [b]))[b].credits_posted == 5


async def test_debit_beyond_credits_is_refused_on_a_limited_account(
    ledger: Ledger, engine: AsyncEngine, unique_id: str
) -> None:
    funder, limited, sink = await make_accounts(
        ledger, unique_id, [AccountFlags.NONE, FUNDED_LIMIT, AccountFlags.NONE]
    )
    results = await ledger.post(
        [plain(funder, limited, 100), plain(limited, sink, 60), plain(limited, sink, 41)]
    )
    assert results == [PostResult.OK, PostResult.OK, PostResult.EXCEEDS_CREDITS]
    stored = (await totals(engine, [limited]))[limited]
    assert stored.credits_posted - stored.debits_posted == 40


async def test_credit_beyond_debits_is_refused_on_a_limited_account(
    ledger: Ledger, unique_id: str
) -> None:
    limited, other = await make_accounts(
        ledger, unique_id, [AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS, AccountFlags.NONE]
    )
    assert await ledger.post([plain(other, limited, 1)]) == [PostResult.EXCEEDS_DEBITS]


async def test_funded_transfer_cannot_take_an_unlimited_account_below_zero(
    ledger: Ledger, unique_id: str
) -> None:
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    results = await ledger.post(
        [plain(b, a, 50), plain(a, b, 51, F.FUNDED), plain(a, b, 50, F.FUNDED)]
    )
    assert results == [PostResult.OK, PostResult.EXCEEDS_CREDITS, PostResult.OK]


async def test_accounts_of_different_assets_cannot_meet(ledger: Ledger, unique_id: str) -> None:
    diamonds = (await make_accounts(ledger, unique_id + "d", [AccountFlags.NONE]))[0]
    dollars = (await make_accounts(ledger, unique_id + "u", [AccountFlags.NONE], "USD"))[0]
    assert await ledger.post([plain(diamonds, dollars, 1)]) == [PostResult.ASSET_MISMATCH]


async def test_unknown_account_is_reported(ledger: Ledger, unique_id: str) -> None:
    a = (await make_accounts(ledger, unique_id, [AccountFlags.NONE]))[0]
    assert await ledger.post([plain(a, 2**62, 1)]) == [PostResult.ACCOUNT_NOT_FOUND]


async def test_pending_then_partial_post_releases_the_rest(
    ledger: Ledger, engine: AsyncEngine, unique_id: str
) -> None:
    funder, creator, held = await make_accounts(
        ledger, unique_id, [AccountFlags.NONE, FUNDED_LIMIT, AccountFlags.NONE]
    )
    hold = Transfer(new_id(), creator, held, 700, SYN, F.PENDING)
    assert await ledger.post([plain(funder, creator, 1_000), hold]) == [PostResult.OK] * 2
    stored = (await totals(engine, [creator]))[creator]
    assert (stored.debits_pending, stored.available_balance) == (700, 300)
    post = Transfer(new_id(), 0, 0, 500, SYN, F.POST_PENDING, pending_id=hold.id)
    assert await ledger.post([post]) == [PostResult.OK]
    stored = (await totals(engine, [creator]))[creator]
    assert (stored.debits_pending, stored.debits_posted, stored.available_balance) == (0, 500, 500)
    again = Transfer(new_id(), 0, 0, 0, SYN, F.VOID_PENDING, pending_id=hold.id)
    assert await ledger.post([again]) == [PostResult.PENDING_ALREADY_POSTED]


async def test_void_restores_the_available_balance_exactly(
    ledger: Ledger, engine: AsyncEngine, unique_id: str
) -> None:
    funder, creator, held = await make_accounts(
        ledger, unique_id, [AccountFlags.NONE, FUNDED_LIMIT, AccountFlags.NONE]
    )
    await ledger.post([plain(funder, creator, 1_000)])
    before = (await totals(engine, [creator]))[creator]
    hold = Transfer(new_id(), creator, held, 1_000, SYN, F.PENDING)
    void = Transfer(new_id(), 0, 0, 0, SYN, F.VOID_PENDING, pending_id=hold.id)
    assert await ledger.post([hold, void]) == [PostResult.OK, PostResult.OK]
    assert (await totals(engine, [creator]))[creator] == before
    post_after_void = Transfer(new_id(), 0, 0, 0, SYN, F.POST_PENDING, pending_id=hold.id)
    assert await ledger.post([post_after_void]) == [PostResult.PENDING_ALREADY_VOIDED]


async def test_pending_holds_count_against_a_limited_account(
    ledger: Ledger, unique_id: str
) -> None:
    funder, creator, held = await make_accounts(
        ledger, unique_id, [AccountFlags.NONE, FUNDED_LIMIT, AccountFlags.NONE]
    )
    results = await ledger.post(
        [
            plain(funder, creator, 100),
            Transfer(new_id(), creator, held, 80, SYN, F.PENDING),
            Transfer(new_id(), creator, held, 21, SYN, F.PENDING),
        ]
    )
    assert results == [PostResult.OK, PostResult.OK, PostResult.EXCEEDS_CREDITS]


async def test_resolving_an_unknown_or_plain_transfer_is_refused(
    ledger: Ledger, unique_id: str
) -> None:
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    not_pending = plain(a, b, 5)
    await ledger.post([not_pending])
    results = await ledger.post(
        [
            Transfer(new_id(), 0, 0, 0, SYN, F.POST_PENDING, pending_id=uuid.uuid4()),
            Transfer(new_id(), 0, 0, 0, SYN, F.POST_PENDING, pending_id=not_pending.id),
        ]
    )
    assert results == [PostResult.PENDING_NOT_FOUND, PostResult.PENDING_NOT_PENDING]


async def test_post_above_the_pending_amount_is_refused(ledger: Ledger, unique_id: str) -> None:
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    hold = Transfer(new_id(), a, b, 10, SYN, F.PENDING)
    results = await ledger.post(
        [hold, Transfer(new_id(), 0, 0, 11, SYN, F.POST_PENDING, pending_id=hold.id)]
    )
    assert results == [PostResult.OK, PostResult.AMOUNT_EXCEEDS_PENDING]


async def test_linked_chain_fails_whole_when_one_member_fails(
    ledger: Ledger, engine: AsyncEngine, unique_id: str
) -> None:
    funder, limited, sink = await make_accounts(
        ledger, unique_id, [AccountFlags.NONE, FUNDED_LIMIT, AccountFlags.NONE]
    )
    results = await ledger.post(
        [
            plain(funder, limited, 100, F.LINKED),
            plain(limited, sink, 100, F.LINKED),
            plain(limited, sink, 1),
            plain(funder, sink, 9),
        ]
    )
    assert results == [
        PostResult.LINKED_EVENT_FAILED,
        PostResult.LINKED_EVENT_FAILED,
        PostResult.EXCEEDS_CREDITS,
        PostResult.OK,
    ]
    stored = await totals(engine, [limited, sink])
    assert stored[limited].credits_posted == 0
    assert stored[sink].credits_posted == 9


async def test_chain_left_open_at_the_end_of_a_batch_fails(ledger: Ledger, unique_id: str) -> None:
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    results = await ledger.post([plain(a, b, 1), plain(a, b, 1, F.LINKED)])
    assert results == [PostResult.OK, PostResult.LINKED_EVENT_CHAIN_OPEN]


async def test_expired_pending_is_voided_and_cannot_be_posted(
    ledger: Ledger, engine: AsyncEngine, unique_id: str
) -> None:
    funder, creator, held = await make_accounts(
        ledger, unique_id, [AccountFlags.NONE, FUNDED_LIMIT, AccountFlags.NONE]
    )
    hold = Transfer(new_id(), creator, held, 10, SYN, F.PENDING, timeout_s=1)
    await ledger.post([plain(funder, creator, 10), hold])
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_sleep(1.1)"))
    post = Transfer(new_id(), 0, 0, 0, SYN, F.POST_PENDING, pending_id=hold.id)
    assert await ledger.post([post]) == [PostResult.PENDING_EXPIRED]
    assert await ledger.expire_pending() >= 1
    stored = (await totals(engine, [creator]))[creator]
    assert (stored.debits_pending, stored.available_balance) == (0, 10)
    assert await ledger.post([post]) == [PostResult.PENDING_EXPIRED]


async def test_batches_larger_than_the_limit_are_split_without_breaking_chains(
    engine: AsyncEngine, unique_id: str
) -> None:
    ledger = Ledger(engine, batch_size_max=3)
    a, b = await make_accounts(ledger, unique_id, [AccountFlags.NONE] * 2)
    batch = [plain(a, b, 1), plain(a, b, 1, F.LINKED), plain(a, b, 1, F.LINKED), plain(a, b, 1)]
    batch += [plain(a, b, 1) for _ in range(4)]
    assert await ledger.post(batch) == [PostResult.OK] * 8
    assert (await totals(engine, [b]))[b].credits_posted == 8


async def test_the_ledger_verifies_clean_after_the_posting_tests(engine: AsyncEngine) -> None:
    assert await ledger_problems(engine) == []
