"""The ledger's decisions alone, with no database: `decide_batch` walks a batch against running
totals, `plan_new_batch` plans new plain transfers. The same plain model of the rules as the
database property test (`tests/test_ledger_properties.py`) judges random batches here, many
more of them, since nothing is written."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.decide import Walk, accepted_as_stored, decide_batch, plan_new_batch
from ledger.model import (
    AccountFlags,
    AccountTotals,
    NewTransfers,
    NotNewBatchError,
    PostResult,
    StoredTransfer,
    Transfer,
    TransferCode,
    TransferFlags,
)
from tests.test_ledger_properties import ACCOUNT_COUNT, Model, account_flags, build, op

F = TransferFlags
R = PostResult
SYN = TransferCode.SYNTHETIC
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
DIAMOND = "DIAMOND"


class Books:
    """What the store would hold between batches: account totals, stored transfers and how
    each pending one ended, all kept in memory."""

    def __init__(self, flags: list[AccountFlags], asset: str = DIAMOND) -> None:
        self.accounts = {
            index + 1: AccountTotals(index + 1, asset, int(flag))
            for index, flag in enumerate(flags)
        }
        self.stored: dict[uuid.UUID, StoredTransfer] = {}
        self.outcomes: dict[uuid.UUID, str | None] = {}

    def decide(self, batch: list[Transfer], at: datetime = NOW) -> tuple[list[R], Walk]:
        accounts = {key: value.copy() for key, value in self.accounts.items()}
        results, walk = decide_batch(
            batch,
            accounts=accounts,
            stored=self.stored,
            pending_outcomes=self.outcomes,
            decided_at=at,
        )
        self.accounts = walk.accounts
        for accepted in walk.accepted:
            self.stored[accepted.transfer.id] = accepted_as_stored(accepted, at)
            if accepted.transfer.flags & F.PENDING:
                self.outcomes[accepted.transfer.id] = None
        for pending_id, _, outcome in walk.resolutions:
            self.outcomes[pending_id] = outcome
        return results, walk

    def totals(self, account_id: int) -> list[int]:
        a = self.accounts[account_id]
        return [a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending]


def plain(debit: int, credit: int, amount: int, flags: int = 0) -> Transfer:
    return Transfer(uuid.uuid4(), debit, credit, amount, SYN, flags)


@settings(max_examples=300, deadline=None)
@given(
    flags=st.lists(account_flags, min_size=ACCOUNT_COUNT, max_size=ACCOUNT_COUNT),
    batches=st.lists(st.lists(op, min_size=1, max_size=10), min_size=1, max_size=4),
)
def test_random_batches_are_decided_as_the_plain_model_decides_them(
    flags: list[AccountFlags], batches: list[list[dict[str, object]]]
) -> None:
    books = Books(flags)
    ids = list(books.accounts)
    index = {account_id: position for position, account_id in enumerate(ids)}
    model = Model(flags)
    earlier: list[Transfer] = []
    for ops in batches:
        batch = build(ops, ids, earlier)
        earlier += batch
        results, _ = books.decide(batch)
        assert results == model.apply_batch(batch, index)
        assert [books.totals(account_id) for account_id in ids] == model.totals


def test_a_transfer_moves_both_totals_and_records_the_balances_after_it() -> None:
    books = Books([AccountFlags.NONE, AccountFlags.NONE])
    results, walk = books.decide([plain(1, 2, 700), plain(1, 2, 300)])
    assert results == [R.OK, R.OK]
    assert books.totals(1) == [1_000, 0, 0, 0]
    assert books.totals(2) == [0, 1_000, 0, 0]
    assert [(a.debit_balance_after, a.credit_balance_after) for a in walk.accepted] == [
        (-700, 700),
        (-1_000, 1_000),
    ]


def test_a_debit_beyond_the_credits_of_a_guarded_account_is_refused_and_changes_nothing() -> None:
    books = Books([AccountFlags.NONE, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS])
    results, walk = books.decide([plain(1, 2, 50), plain(2, 1, 51), plain(2, 1, 50)])
    assert results == [R.OK, R.EXCEEDS_CREDITS, R.OK]
    assert books.totals(2) == [50, 50, 0, 0]
    assert len(walk.accepted) == 2


def test_a_linked_chain_fails_whole_and_restores_the_totals() -> None:
    books = Books([AccountFlags.NONE, AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS])
    chain = [plain(1, 2, 10, F.LINKED), plain(2, 1, 11)]
    results, walk = books.decide(chain)
    assert results == [R.LINKED_EVENT_FAILED, R.EXCEEDS_CREDITS]
    assert books.totals(1) == books.totals(2) == [0, 0, 0, 0]
    assert walk.accepted == []


def test_a_failed_chain_gives_back_what_its_resolutions_moved() -> None:
    """Posting a hold names no account (0, 0) but moves the hold's; a later leg refused undoes
    it: the hold's accounts, its outcome and a hold the chain created all as before."""
    books = Books([AccountFlags.NONE] * 3 + [AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS])
    hold = plain(1, 2, 100, F.PENDING)
    books.decide([hold])
    hold_in_chain = plain(2, 3, 5, F.PENDING | F.LINKED)
    post = Transfer(uuid.uuid4(), 0, 0, 0, SYN, F.POST_PENDING | F.LINKED, hold.id)
    refused = plain(4, 3, 1)  # account 4 holds nothing to debit
    results, walk = books.decide([plain(3, 1, 7), hold_in_chain, post, refused])
    assert results == [R.OK, R.LINKED_EVENT_FAILED, R.LINKED_EVENT_FAILED, R.EXCEEDS_CREDITS]
    assert books.totals(1) == [0, 7, 100, 0]
    assert books.totals(2) == [0, 0, 0, 100]
    assert books.totals(3) == [7, 0, 0, 0]
    assert walk.pendings[hold.id].outcome is None
    assert hold_in_chain.id not in walk.pendings
    assert walk.resolutions == []
    assert len(walk.accepted) == 1
    results, _ = books.decide([Transfer(uuid.uuid4(), 0, 0, 0, SYN, F.POST_PENDING, hold.id)])
    assert results == [R.OK]  # the hold was still open
    assert books.totals(1) == [100, 7, 0, 0]


def test_a_chain_still_open_at_the_end_of_the_batch_fails() -> None:
    books = Books([AccountFlags.NONE, AccountFlags.NONE])
    results, _ = books.decide(
        [plain(1, 2, 10), plain(1, 2, 10, F.LINKED), plain(2, 1, 5, F.LINKED)]
    )
    assert results == [R.OK, R.LINKED_EVENT_FAILED, R.LINKED_EVENT_CHAIN_OPEN]


def test_the_same_id_again_exists_and_with_other_fields_is_refused() -> None:
    books = Books([AccountFlags.NONE, AccountFlags.NONE])
    first = plain(1, 2, 10)
    changed = Transfer(first.id, 1, 2, 11, SYN)
    results, _ = books.decide([first, first, changed])
    assert results == [R.OK, R.EXISTS, R.EXISTS_WITH_DIFFERENT_FIELDS]
    results, _ = books.decide([first])
    assert results == [R.EXISTS]


def test_an_unknown_account_or_another_asset_is_refused() -> None:
    books = Books([AccountFlags.NONE, AccountFlags.NONE])
    books.accounts[3] = AccountTotals(3, "USD", 0)
    results, _ = books.decide([plain(1, 9, 10), plain(1, 3, 10)])
    assert results == [R.ACCOUNT_NOT_FOUND, R.ASSET_MISMATCH]


def test_a_pending_transfer_is_posted_in_part_and_the_rest_released() -> None:
    books = Books([AccountFlags.NONE, AccountFlags.NONE])
    hold = plain(1, 2, 100, F.PENDING)
    post = Transfer(uuid.uuid4(), 0, 0, 60, SYN, F.POST_PENDING, hold.id)
    results, _ = books.decide([hold])
    assert books.totals(1) == [0, 0, 100, 0]
    results, walk = books.decide(
        [post, Transfer(uuid.uuid4(), 0, 0, 0, SYN, F.VOID_PENDING, hold.id)]
    )
    assert results == [R.OK, R.PENDING_ALREADY_POSTED]
    assert books.totals(1) == [60, 0, 0, 0]
    assert walk.resolutions == [(hold.id, post.id, "posted")]


def test_a_pending_transfer_past_its_timeout_cannot_be_posted() -> None:
    books = Books([AccountFlags.NONE, AccountFlags.NONE])
    hold = Transfer(uuid.uuid4(), 1, 2, 100, SYN, F.PENDING, timeout_s=60)
    books.decide([hold])
    post = Transfer(uuid.uuid4(), 0, 0, 0, SYN, F.POST_PENDING, hold.id)
    results, _ = books.decide([post], at=NOW + timedelta(seconds=61))
    assert results == [R.PENDING_EXPIRED]
    assert books.totals(1) == [0, 0, 100, 0]


def test_a_funded_transfer_needs_the_available_balance() -> None:
    books = Books([AccountFlags.NONE, AccountFlags.NONE, AccountFlags.NONE])
    results, _ = books.decide(
        [plain(3, 1, 100), plain(1, 2, 80, F.PENDING | F.FUNDED), plain(1, 2, 21, F.FUNDED)]
    )
    assert results == [R.OK, R.OK, R.EXCEEDS_CREDITS]


def test_totals_past_bigint_overflow() -> None:
    books = Books([AccountFlags.NONE, AccountFlags.NONE])
    books.accounts[1].debits_posted = 2**63 - 10
    results, _ = books.decide([plain(1, 2, 11)])
    assert results == [R.OVERFLOWS]


def new_transfers(*moves: tuple[int, int, int]) -> NewTransfers:
    batch = NewTransfers()
    for debit, credit, amount in moves:
        batch.add(
            transfer_id=uuid.uuid4(),
            debit_account_id=debit,
            credit_account_id=credit,
            amount=amount,
            code=int(SYN),
            rate_card_version=None,
            event_id=None,
            metadata_text=None,
        )
    return batch


def test_a_new_batch_is_planned_as_running_offsets_and_one_delta_per_account() -> None:
    facts = {1: (DIAMOND, 0), 2: (DIAMOND, 0), 3: (DIAMOND, 0)}
    plan = plan_new_batch(new_transfers((1, 2, 5), (1, 3, 7), (2, 1, 1)), facts)
    assert plan.assets == [DIAMOND] * 3
    assert plan.debit_offsets == [-5, -12, 4]
    assert plan.credit_offsets == [5, 7, -11]
    assert plan.account_ids == [1, 2, 3]
    assert plan.debits_posted == [12, 1, 0]
    assert plan.credits_posted == [1, 5, 7]


@pytest.mark.parametrize(
    ("flags", "moves", "reason"),
    [
        (AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS, ((2, 1, 5),), "debited beyond its credits"),
        (AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS, ((1, 2, 5),), "credited beyond its debits"),
        (AccountFlags.NONE, ((1, 9, 5),), "does not exist"),
    ],
)
def test_a_new_batch_that_could_break_a_rule_is_refused(
    flags: AccountFlags, moves: tuple[tuple[int, int, int], ...], reason: str
) -> None:
    facts = {1: (DIAMOND, 0), 2: (DIAMOND, int(flags))}
    with pytest.raises(NotNewBatchError, match=reason):
        plan_new_batch(new_transfers(*moves), facts)


def test_a_new_transfer_between_assets_is_refused() -> None:
    facts = {1: (DIAMOND, 0), 2: ("USD", 0)}
    with pytest.raises(NotNewBatchError, match="of one asset"):
        plan_new_batch(new_transfers((1, 2, 5)), facts)
