"""The ledger's decisions, with no I/O: what each transfer of a batch comes to.

`decide_batch` walks a batch in order against running account totals and decides a result per
transfer (linked chains succeed or fail whole), as TigerBeetle's state machine does; the store
(`ledger.store`) reads what the walk needs before it and writes what it accepted after it.
`plan_new_batch` does the same for a batch of new plain transfers, which needs no walk. Both take
values and return values, so they are tested directly (`tests/test_ledger_decide.py`) and against
a plain model of the rules (`tests/test_ledger_properties.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ledger.model import (
    BIGINT_MAX,
    TRANSFER_BATCH_SIZE_MAX,
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

_OK_RESULTS = (PostResult.OK, PostResult.EXISTS)

# Why an account is in the batch, as bits: debited or credited by a new transfer, or debited by
# a funded one. Accounts named only by a post or void of a pending transfer have no bits.
ROLE_DEBITED = 1
ROLE_CREDITED = 2
ROLE_FUNDED_DEBIT = 4

_DEBITS_MUST_NOT_EXCEED_CREDITS = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_CREDITS_MUST_NOT_EXCEED_DEBITS = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
_LINKED = int(TransferFlags.LINKED)
_PENDING = int(TransferFlags.PENDING)
_POST_PENDING = int(TransferFlags.POST_PENDING)
_FUNDED = int(TransferFlags.FUNDED)


@dataclass(slots=True)
class PendingState:
    """A pending transfer as the batch walk sees it, and how it ended so far."""

    stored: StoredTransfer
    outcome: str | None


@dataclass(slots=True)
class Accepted:
    """A transfer accepted by the walk, with the accounts and amounts it will be stored with."""

    transfer: Transfer
    debit_account_id: int
    credit_account_id: int
    amount: int
    asset: str
    debit_balance_after: int
    credit_balance_after: int
    expires_at: datetime | None


@dataclass(slots=True)
class Walk:
    """Running state of one batch walk."""

    committed_at: datetime
    accounts: dict[int, AccountTotals]
    stored: Mapping[uuid.UUID, StoredTransfer]
    pendings: dict[uuid.UUID, PendingState]
    accepted: list[Accepted] = field(default_factory=list)
    accepted_by_id: dict[uuid.UUID, Accepted] = field(default_factory=dict)
    resolutions: list[tuple[uuid.UUID, uuid.UUID, str]] = field(default_factory=list)


def account_roles(
    transfers: Sequence[Transfer], stored: Mapping[uuid.UUID, StoredTransfer]
) -> dict[int, int]:
    """Every account the batch names (account id 0 means "as the pending transfer"), with why."""
    roles: dict[int, int] = {}
    for transfer in transfers:
        if transfer.resolves_pending:
            pending = stored.get(transfer.pending_id) if transfer.pending_id else None
            named = [transfer.debit_account_id, transfer.credit_account_id]
            if pending is not None:
                named += [pending.debit_account_id, pending.credit_account_id]
            for account_id in named:
                roles.setdefault(account_id, 0)
            continue
        debit_role = ROLE_DEBITED | (ROLE_FUNDED_DEBIT if transfer.flags & _FUNDED else 0)
        roles[transfer.debit_account_id] = roles.get(transfer.debit_account_id, 0) | debit_role
        roles[transfer.credit_account_id] = roles.get(transfer.credit_account_id, 0) | ROLE_CREDITED
    roles.pop(0, None)
    return roles


def is_guarded(role: int, flags: int) -> bool:
    return bool(
        (role & ROLE_DEBITED and flags & _DEBITS_MUST_NOT_EXCEED_CREDITS)
        or (role & ROLE_CREDITED and flags & _CREDITS_MUST_NOT_EXCEED_DEBITS)
        or role & ROLE_FUNDED_DEBIT
    )


def same_fields(transfer: Transfer, stored: StoredTransfer) -> bool:
    """Whether re-posting `transfer` asks for exactly what `stored` already is."""
    if transfer.resolves_pending:
        accounts_match = transfer.debit_account_id in (0, stored.debit_account_id) and (
            transfer.credit_account_id in (0, stored.credit_account_id)
        )
        amount_matches = transfer.amount in (0, stored.amount)
    else:
        accounts_match = (transfer.debit_account_id, transfer.credit_account_id) == (
            stored.debit_account_id,
            stored.credit_account_id,
        )
        amount_matches = transfer.amount == stored.amount
    return (
        accounts_match
        and amount_matches
        and int(transfer.code) == stored.code
        and int(transfer.flags) == stored.flags
        and transfer.pending_id == stored.pending_id
        and transfer.timeout_s == stored.timeout_s
        and transfer.rate_card_version == stored.rate_card_version
        and transfer.event_id == stored.event_id
        and (transfer.metadata or None) == (stored.metadata or None)
    )


def accepted_as_stored(accepted: Accepted, committed_at: datetime) -> StoredTransfer:
    transfer = accepted.transfer
    return StoredTransfer(
        id=transfer.id,
        seq=0,
        debit_account_id=accepted.debit_account_id,
        credit_account_id=accepted.credit_account_id,
        amount=accepted.amount,
        asset=accepted.asset,
        code=int(transfer.code),
        flags=int(transfer.flags),
        pending_id=transfer.pending_id,
        timeout_s=transfer.timeout_s,
        expires_at=accepted.expires_at,
        rate_card_version=transfer.rate_card_version,
        event_id=transfer.event_id,
        metadata=transfer.metadata,
        debit_balance_after=accepted.debit_balance_after,
        credit_balance_after=accepted.credit_balance_after,
        created_at=committed_at,
    )


def check_rules(debit: AccountTotals, credit: AccountTotals, funded: bool) -> PostResult:
    """Balance rules for the totals as they stand (after the transfer was applied to them)."""
    if (
        debit.debits_posted > BIGINT_MAX
        or debit.debits_pending > BIGINT_MAX
        or credit.credits_posted > BIGINT_MAX
        or credit.credits_pending > BIGINT_MAX
    ):
        return PostResult.OVERFLOWS
    if debit.flags & _DEBITS_MUST_NOT_EXCEED_CREDITS and (
        debit.debits_posted + debit.debits_pending > debit.credits_posted
    ):
        return PostResult.EXCEEDS_CREDITS
    if funded and debit.credits_posted - debit.debits_posted - debit.debits_pending < 0:
        return PostResult.EXCEEDS_CREDITS
    if credit.flags & _CREDITS_MUST_NOT_EXCEED_DEBITS and (
        credit.credits_posted + credit.credits_pending > credit.debits_posted
    ):
        return PostResult.EXCEEDS_DEBITS
    return PostResult.OK


def _apply(walk: Walk, transfer: Transfer) -> PostResult:
    """Decide one transfer against the running totals; on OK, apply it to them."""
    previous = walk.stored.get(transfer.id)
    if previous is None and transfer.id in walk.accepted_by_id:
        previous = accepted_as_stored(walk.accepted_by_id[transfer.id], walk.committed_at)
    if previous is not None:
        if same_fields(transfer, previous):
            return PostResult.EXISTS
        return PostResult.EXISTS_WITH_DIFFERENT_FIELDS
    if transfer.resolves_pending:
        return _apply_resolution(walk, transfer)
    return _apply_plain_or_pending(walk, transfer)


def _apply_plain_or_pending(walk: Walk, transfer: Transfer) -> PostResult:
    debit = walk.accounts.get(transfer.debit_account_id)
    credit = walk.accounts.get(transfer.credit_account_id)
    if debit is None or credit is None:
        return PostResult.ACCOUNT_NOT_FOUND
    if debit.asset != credit.asset:
        return PostResult.ASSET_MISMATCH
    amount = transfer.amount
    pending = bool(transfer.flags & _PENDING)
    # Applied in place, then taken back if a rule refuses it.
    if pending:
        debit.debits_pending += amount
        credit.credits_pending += amount
    else:
        debit.debits_posted += amount
        credit.credits_posted += amount
    result = check_rules(debit, credit, bool(transfer.flags & _FUNDED))
    if result is not PostResult.OK:
        if pending:
            debit.debits_pending -= amount
            credit.credits_pending -= amount
        else:
            debit.debits_posted -= amount
            credit.credits_posted -= amount
        return result
    expires_at = None
    if transfer.timeout_s is not None:
        expires_at = walk.committed_at + timedelta(seconds=transfer.timeout_s)
    accepted = Accepted(
        transfer,
        debit.id,
        credit.id,
        amount,
        debit.asset,
        debit.credits_posted - debit.debits_posted,
        credit.credits_posted - credit.debits_posted,
        expires_at,
    )
    _record_accepted(walk, accepted)
    if pending:
        walk.pendings[transfer.id] = PendingState(
            accepted_as_stored(accepted, walk.committed_at), None
        )
    return PostResult.OK


_OUTCOME_RESULTS = {
    "posted": PostResult.PENDING_ALREADY_POSTED,
    "voided": PostResult.PENDING_ALREADY_VOIDED,
    "expired": PostResult.PENDING_EXPIRED,
}


def _apply_resolution(walk: Walk, transfer: Transfer) -> PostResult:
    assert transfer.pending_id is not None
    entry = walk.pendings.get(transfer.pending_id)
    if entry is None:
        return PostResult.PENDING_NOT_FOUND
    pending = entry.stored
    if not pending.flags & _PENDING:
        return PostResult.PENDING_NOT_PENDING
    if entry.outcome is not None:
        return _OUTCOME_RESULTS[entry.outcome]
    if transfer.debit_account_id not in (0, pending.debit_account_id) or (
        transfer.credit_account_id not in (0, pending.credit_account_id)
    ):
        return PostResult.PENDING_ACCOUNTS_DIFFER
    posting = bool(transfer.flags & _POST_PENDING)
    timed_out = pending.expires_at is not None and pending.expires_at <= walk.committed_at
    if posting and timed_out:
        return PostResult.PENDING_EXPIRED
    if posting:
        amount = transfer.amount or pending.amount
        if amount > pending.amount:
            return PostResult.AMOUNT_EXCEEDS_PENDING
    else:
        amount = pending.amount
        if transfer.amount not in (0, pending.amount):
            return PostResult.AMOUNT_DIFFERS_FROM_PENDING
    debit = walk.accounts.get(pending.debit_account_id)
    credit = walk.accounts.get(pending.credit_account_id)
    if debit is None or credit is None:
        return PostResult.ACCOUNT_NOT_FOUND
    new_debit, new_credit = debit.copy(), credit.copy()
    new_debit.debits_pending -= pending.amount
    new_credit.credits_pending -= pending.amount
    if posting:
        new_debit.debits_posted += amount
        new_credit.credits_posted += amount
    result = check_rules(new_debit, new_credit, funded=False)
    if result is not PostResult.OK:
        return result
    walk.accounts[debit.id], walk.accounts[credit.id] = new_debit, new_credit
    if posting:
        outcome = "posted"
    elif transfer.code == TransferCode.PENDING_EXPIRED:
        outcome = "expired"
    else:
        outcome = "voided"
    entry.outcome = outcome
    walk.resolutions.append((pending.id, transfer.id, outcome))
    accepted = Accepted(
        transfer,
        debit.id,
        credit.id,
        amount,
        pending.asset,
        new_debit.posted_balance,
        new_credit.posted_balance,
        None,
    )
    _record_accepted(walk, accepted)
    return PostResult.OK


def _record_accepted(walk: Walk, accepted: Accepted) -> None:
    walk.accepted.append(accepted)
    walk.accepted_by_id[accepted.transfer.id] = accepted


def chains(transfers: Sequence[Transfer]) -> list[range]:
    """Index ranges of linked chains: a chain runs to the first transfer without LINKED."""
    chains: list[range] = []
    start = 0
    for index, transfer in enumerate(transfers):
        if not transfer.flags & _LINKED:
            chains.append(range(start, index + 1))
            start = index + 1
    if start < len(transfers):
        chains.append(range(start, len(transfers)))
    return chains


def _chain_accounts(walk: Walk, transfers: Sequence[Transfer], chain: range) -> set[int]:
    """The accounts a chain's transfers can move: each one's debit and credit account, and for
    a resolution its pending transfer's (one the chain itself creates is among the first)."""
    named: set[int] = set()
    for index in chain:
        transfer = transfers[index]
        named.add(transfer.debit_account_id)
        named.add(transfer.credit_account_id)
        entry = walk.pendings.get(transfer.pending_id) if transfer.pending_id else None
        if entry is not None:
            named.add(entry.stored.debit_account_id)
            named.add(entry.stored.credit_account_id)
    return named


def walk_chain(walk: Walk, transfers: Sequence[Transfer], chain: range) -> list[PostResult]:
    """Apply a chain all or nothing. A chain still open at the end of the batch fails."""
    if transfers[chain[-1]].flags & _LINKED:
        failed_results = [PostResult.LINKED_EVENT_FAILED] * len(chain)
        failed_results[-1] = PostResult.LINKED_EVENT_CHAIN_OPEN
        return failed_results
    if len(chain) == 1:
        return [_apply(walk, transfers[chain[0]])]
    # What the chain can change, saved before it runs: the totals of the accounts its transfers
    # name (a resolution moves its pending transfer's accounts) and the outcomes of the pending
    # transfers it resolves. Only those, so a batch of many chains stays linear in its size.
    saved_accounts = {
        account_id: walk.accounts[account_id].copy()
        for account_id in _chain_accounts(walk, transfers, chain)
        if account_id in walk.accounts
    }
    saved_outcomes = {
        pending_id: walk.pendings[pending_id].outcome
        for pending_id in {transfers[index].pending_id for index in chain}
        if pending_id is not None and pending_id in walk.pendings
    }
    saved_accepted_count = len(walk.accepted)
    saved_resolution_count = len(walk.resolutions)
    results: list[PostResult] = []
    for index in chain:
        result = _apply(walk, transfers[index])
        results.append(result)
        if result not in _OK_RESULTS:
            break
    if all(result in _OK_RESULTS for result in results):
        return results
    walk.accounts.update(saved_accounts)
    for pending_id, outcome in saved_outcomes.items():
        walk.pendings[pending_id].outcome = outcome
    for accepted in walk.accepted[saved_accepted_count:]:
        walk.pendings.pop(accepted.transfer.id, None)  # a pending transfer the chain created
        del walk.accepted_by_id[accepted.transfer.id]
    del walk.accepted[saved_accepted_count:]
    del walk.resolutions[saved_resolution_count:]
    failure = results[-1]
    final = [PostResult.LINKED_EVENT_FAILED] * len(chain)
    final[len(results) - 1] = failure
    return final


def split_at_chain_boundaries(
    transfers: Sequence[Transfer], batch_size_max: int
) -> list[Sequence[Transfer]]:
    """Cut a long list into batches of at most `batch_size_max` without splitting a chain."""
    batches: list[Sequence[Transfer]] = []
    start = 0
    for chain in chains(transfers):
        if len(chain) > batch_size_max:
            raise ValueError(f"a linked chain of {len(chain)} exceeds the batch size")
        if chain.stop - start > batch_size_max:
            batches.append(transfers[start : chain.start])
            start = chain.start
    if start < len(transfers):
        batches.append(transfers[start:])
    return batches


def decide_batch(
    transfers: Sequence[Transfer],
    *,
    accounts: dict[int, AccountTotals],
    stored: Mapping[uuid.UUID, StoredTransfer],
    pending_outcomes: Mapping[uuid.UUID, str | None],
    decided_at: datetime,
) -> tuple[list[PostResult], Walk]:
    """A result per transfer, in order, and the walk: what it accepted, the account totals it
    ended with (`accounts` is updated in place) and the pending transfers it resolved.

    `accounts` holds the batch's accounts (totals counting from zero for those not read),
    `stored` the stored transfers the batch names, `pending_outcomes` how each stored pending
    transfer ended (None while open); `decided_at` decides whether a pending one has expired.
    """
    pending_ids = {t.pending_id for t in transfers if t.pending_id is not None}
    pendings = {
        pending_id: PendingState(stored[pending_id], pending_outcomes[pending_id])
        for pending_id in pending_ids
        if pending_id in stored
    }
    walk = Walk(decided_at, accounts, stored, pendings)
    results: list[PostResult] = []
    for chain in chains(transfers):
        results.extend(walk_chain(walk, transfers, chain))
    return results, walk


@dataclass(frozen=True, slots=True)
class NewBatchPlan:
    """What a batch of new plain transfers does: per transfer its asset and its running balances
    as offsets from its accounts' balances before the batch; per account (in id order) the debits
    and credits it adds."""

    assets: list[str]
    debit_offsets: list[int]
    credit_offsets: list[int]
    account_ids: list[int]
    debits_posted: list[int]
    credits_posted: list[int]


def plan_new_batch(batch: NewTransfers, facts: Mapping[int, tuple[str, int]]) -> NewBatchPlan:
    """Plan plain transfers that are not stored yet. Every one is accepted, so no account may
    have a balance rule its role could break; `NotNewBatchError` says which, before anything is
    written. `facts` maps each account id to its asset and flags (a missing one does not exist).
    """
    count = len(batch.ids)
    if not 1 <= count <= TRANSFER_BATCH_SIZE_MAX:
        raise ValueError(
            f"a batch of new transfers holds 1 to {TRANSFER_BATCH_SIZE_MAX}, not {count}"
        )
    columns = (
        batch.debit_account_ids,
        batch.credit_account_ids,
        batch.amounts,
        batch.codes,
        batch.rate_card_versions,
        batch.event_ids,
        batch.metadata_texts,
    )
    if any(len(column) != count for column in columns):
        raise ValueError("the columns of a batch of new transfers differ in length")
    debited, credited = set(batch.debit_account_ids), set(batch.credit_account_ids)
    for account_id in debited | credited:
        if account_id not in facts:
            raise NotNewBatchError(f"account {account_id} does not exist")
    for account_id in debited:
        if facts[account_id][1] & _DEBITS_MUST_NOT_EXCEED_CREDITS:
            raise NotNewBatchError(f"account {account_id} must not be debited beyond its credits")
    for account_id in credited:
        if facts[account_id][1] & _CREDITS_MUST_NOT_EXCEED_DEBITS:
            raise NotNewBatchError(f"account {account_id} must not be credited beyond its debits")
    # Running totals count from zero: the write moves the balances onto those it locks.
    debits = dict.fromkeys(debited | credited, 0)
    credits = dict.fromkeys(debited | credited, 0)
    assets: list[str] = []
    debit_offsets: list[int] = []
    credit_offsets: list[int] = []
    for index in range(count):
        debit_id = batch.debit_account_ids[index]
        credit_id = batch.credit_account_ids[index]
        amount = batch.amounts[index]
        asset = facts[debit_id][0]
        if amount <= 0 or debit_id == credit_id or facts[credit_id][0] != asset:
            raise NotNewBatchError(
                f"transfer {batch.ids[index]}: amount must be positive, between two accounts"
                " of one asset"
            )
        debits[debit_id] += amount
        credits[credit_id] += amount
        assets.append(asset)
        debit_offsets.append(credits[debit_id] - debits[debit_id])
        credit_offsets.append(credits[credit_id] - debits[credit_id])
    account_ids = sorted(debits)
    return NewBatchPlan(
        assets=assets,
        debit_offsets=debit_offsets,
        credit_offsets=credit_offsets,
        account_ids=account_ids,
        debits_posted=[debits[i] for i in account_ids],
        credits_posted=[credits[i] for i in account_ids],
    )
