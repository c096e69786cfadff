"""Posting a batch of transfers: at most three statements per batch, whatever its size.

1. Read the stored transfers that the batch names (its own ids, for idempotency, and the pending
   transfers it posts or voids) with how each pending ended.
2. If a transfer of the batch could break an account's balance rule (the account is guarded),
   lock all the batch's accounts in id order and read their totals. Else lock and read none
   (but the asset and rules of accounts `AccountFacts` has not met): their running totals count
   from zero, and every lock is taken in step 4.
3. Walk the batch in Python, in order, deciding a result per transfer against running totals
   (linked chains succeed or fail whole). Only the guarded accounts' totals can change a result.
4. One statement locks every account the accepted transfers name, in id order, adds one
   aggregated delta to each, and inserts the accepted transfers (their running balances offset
   from the balances the accounts had once locked), their keys and the resolutions of pending
   transfers. The clock read once every lock is held is the batch's commit timestamp.

So in the batches most writers post (gifts guard no account), the accounts they share (the
platform's) are locked only for step 4, the hash chain link and the commit, not while the batch
is read and walked. Each batch takes its locks in one ascending pass, in step 2 or in step 4.

A concurrent writer that stored the same transfer id, or resolved the same pending transfer,
between steps 1 and 4 makes step 4 fail on a unique key; `run_with_conflict_retry` then runs the
whole unit of work again, and the second run sees what the other writer did.

Whether a stored pending transfer has expired is decided at the clock of step 2 (read for that
when step 2 read nothing); the transfers are stored with the clock of step 4, a little later.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.chain import (
    ChainEntry,
    append_link_entries,
    chain_entry,
    line_head,
    line_tail,
    metadata_json,
)
from ledger.model import (
    AccountFlags,
    AccountTotals,
    BatchOutcome,
    PostResult,
    StoredTransfer,
    Transfer,
    TransferCode,
    TransferFlags,
)

BIGINT_MAX = 2**63 - 1
DEFERRED_LINKS_KEY = "giftledger.deferred_chain_links"
TRANSFER_BATCH_SIZE_MAX = 100_000
ACCOUNT_FACTS_SIZE_MAX = 500_000

_OK_RESULTS = (PostResult.OK, PostResult.EXISTS)
# The totals of an account the batch did not read: its running totals count from zero.
_ZERO = AccountTotals(0, "", 0)

_SELECT_TRANSFERS = text(
    """
    WITH found AS MATERIALIZED (
        SELECT k.id, k.created_at
        FROM unnest(CAST(:ids AS uuid[])) AS wanted(id)
        JOIN transfer_keys k ON k.id = wanted.id
    )
    SELECT t.id, t.seq, t.debit_account_id, t.credit_account_id, t.amount, t.asset, t.code,
           t.flags, t.pending_id, t.timeout_s, t.expires_at, t.rate_card_version, t.event_id,
           t.metadata::text AS metadata, t.debit_balance_after, t.credit_balance_after,
           t.created_at, r.outcome
    FROM found k
    JOIN transfers t ON t.id = k.id AND t.created_at = k.created_at
    LEFT JOIN pending_resolutions r ON r.pending_id = t.id
    """
)

# Why an account is in the batch, as bits: debited or credited by a new transfer, or debited by
# a funded one. Accounts named only by a post or void of a pending transfer have no bits.
_ROLE_DEBITED = 1
_ROLE_CREDITED = 2
_ROLE_FUNDED_DEBIT = 4

# Step 2. An account is guarded when a transfer of the batch could break its balance rule: it is
# debited and its debits must not exceed its credits, it is credited and its credits must not
# exceed its debits, or a funded transfer debits it. A batch with a guarded account locks all
# its accounts here, in id order, and reads their totals; a batch without one reads nothing but
# the asset and rules of accounts it has not met before, and takes its locks in step 4.
_READ_FACTS = text(
    """
    SELECT a.id, a.asset, a.flags
    FROM unnest(CAST(:ids AS bigint[])) AS wanted(id)
    JOIN accounts a ON a.id = wanted.id
    """
)

_LOCK_ACCOUNTS = text(
    """
    WITH locked AS (
        SELECT a.id, a.asset, a.flags, a.debits_posted, a.credits_posted, a.debits_pending,
               a.credits_pending
        FROM unnest(CAST(:ids AS bigint[])) AS wanted(id)
        JOIN accounts a ON a.id = wanted.id
        ORDER BY a.id
        FOR NO KEY UPDATE OF a
    )
    SELECT locked.*, clock_timestamp() AS now FROM locked
    """
)

# Step 4. Every account the accepted transfers name is updated by its aggregated deltas, in id
# order (the unnest is sorted and drives the join), so writers take their locks in one order.
# Should the planner ever join the other way round, PostgreSQL detects the deadlock and
# `run_with_conflict_retry` runs the batch again. Once all are locked, the clock is the batch's
# commit timestamp, and each account's balance just before this batch is known: the transfers
# are inserted with their running balances offset from it, in batch order, with their keys and
# the resolutions of the pending transfers they post or void. The accounts' balances before,
# the timestamp and the count inserted come back.
_WRITE_BATCH = text(
    """
    WITH updated AS (
        UPDATE accounts a
        SET debits_posted = a.debits_posted + d.debits_posted,
            credits_posted = a.credits_posted + d.credits_posted,
            debits_pending = a.debits_pending + d.debits_pending,
            credits_pending = a.credits_pending + d.credits_pending
        FROM unnest(CAST(:account_ids AS bigint[]), CAST(:debits_posted AS bigint[]),
                    CAST(:credits_posted AS bigint[]), CAST(:debits_pending AS bigint[]),
                    CAST(:credits_pending AS bigint[]))
             AS d(id, debits_posted, credits_posted, debits_pending, credits_pending)
        WHERE a.id = d.id
        RETURNING a.id,
                  a.credits_posted - a.debits_posted - (d.credits_posted - d.debits_posted)
                      AS balance_before,
                  clock_timestamp() AS locked_at
    ), stamp AS (
        SELECT max(locked_at) AS at FROM updated
    ), new_keys AS (
        INSERT INTO transfer_keys (id, created_at)
        SELECT unnest(CAST(:ids AS uuid[])), stamp.at FROM stamp
    ), new_resolutions AS (
        INSERT INTO pending_resolutions (pending_id, resolved_by, outcome, created_at)
        SELECT r.pending_id, r.resolved_by, r.outcome, stamp.at
        FROM unnest(CAST(:resolved_pending_ids AS uuid[]), CAST(:resolved_by AS uuid[]),
                    CAST(:outcomes AS text[])) AS r(pending_id, resolved_by, outcome),
             stamp
    ), new_transfers AS (
        INSERT INTO transfers (
            id, debit_account_id, credit_account_id, amount, asset, code, flags, pending_id,
            timeout_s, expires_at, rate_card_version, event_id, metadata,
            debit_balance_after, credit_balance_after, created_at)
        SELECT t.id, t.debit_account_id, t.credit_account_id, t.amount, t.asset, t.code,
               t.flags, t.pending_id, t.timeout_s,
               stamp.at + make_interval(secs => t.timeout_s), t.rate_card_version, t.event_id,
               t.metadata::jsonb, debit.balance_before + t.debit_offset,
               credit.balance_before + t.credit_offset, stamp.at
        FROM unnest(
            CAST(:ids AS uuid[]), CAST(:debit_account_ids AS bigint[]),
            CAST(:credit_account_ids AS bigint[]), CAST(:amounts AS bigint[]),
            CAST(:assets AS text[]), CAST(:codes AS smallint[]), CAST(:flags AS smallint[]),
            CAST(:pending_ids AS uuid[]), CAST(:timeouts_s AS integer[]),
            CAST(:rate_card_versions AS integer[]), CAST(:event_ids AS text[]),
            CAST(:metadata AS text[]), CAST(:debit_offsets AS bigint[]),
            CAST(:credit_offsets AS bigint[])
        ) WITH ORDINALITY AS t(id, debit_account_id, credit_account_id, amount, asset, code,
                               flags, pending_id, timeout_s, rate_card_version, event_id,
                               metadata, debit_offset, credit_offset, position)
        JOIN updated debit ON debit.id = t.debit_account_id
        JOIN updated credit ON credit.id = t.credit_account_id
        CROSS JOIN stamp
        ORDER BY t.position
        RETURNING 1
    )
    SELECT u.id, u.balance_before, stamp.at, (SELECT count(*) FROM new_transfers) AS inserted
    FROM updated u, stamp
    """
)


class LedgerConflictError(Exception):
    """Another writer stored the same transfer or resolved the same pending transfer first."""


@dataclass(slots=True)
class _Pending:
    """A pending transfer as the batch walk sees it, and how it ended so far."""

    stored: StoredTransfer
    outcome: str | None


@dataclass(slots=True)
class _Accepted:
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
class _Walk:
    """Running state of one batch walk."""

    committed_at: datetime
    accounts: dict[int, AccountTotals]
    stored: dict[uuid.UUID, StoredTransfer]
    pendings: dict[uuid.UUID, _Pending]
    accepted: list[_Accepted] = field(default_factory=list)
    accepted_by_id: dict[uuid.UUID, _Accepted] = field(default_factory=dict)
    resolutions: list[tuple[uuid.UUID, uuid.UUID, str]] = field(default_factory=list)


def _row_to_stored(row: Any) -> StoredTransfer:
    return StoredTransfer(
        id=row.id,
        seq=row.seq,
        debit_account_id=row.debit_account_id,
        credit_account_id=row.credit_account_id,
        amount=row.amount,
        asset=row.asset,
        code=row.code,
        flags=row.flags,
        pending_id=row.pending_id,
        timeout_s=row.timeout_s,
        expires_at=row.expires_at,
        rate_card_version=row.rate_card_version,
        event_id=row.event_id,
        metadata=None if row.metadata is None else json.loads(row.metadata),
        debit_balance_after=row.debit_balance_after,
        credit_balance_after=row.credit_balance_after,
        created_at=row.created_at,
    )


async def read_stored(
    conn: AsyncConnection, ids: Iterable[uuid.UUID]
) -> tuple[dict[uuid.UUID, StoredTransfer], dict[uuid.UUID, str | None]]:
    """Stored transfers by id, and for pending ones how they ended (None while open)."""
    id_list = list(ids)
    if not id_list:
        return {}, {}
    rows = (await conn.execute(_SELECT_TRANSFERS, {"ids": id_list})).all()
    stored = {row.id: _row_to_stored(row) for row in rows}
    outcomes: dict[uuid.UUID, str | None] = {row.id: row.outcome for row in rows}
    return stored, outcomes


def _account_roles(
    transfers: Sequence[Transfer], stored: dict[uuid.UUID, StoredTransfer]
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
        debit_role = _ROLE_DEBITED | (_ROLE_FUNDED_DEBIT if transfer.flags & _FUNDED else 0)
        roles[transfer.debit_account_id] = roles.get(transfer.debit_account_id, 0) | debit_role
        roles[transfer.credit_account_id] = (
            roles.get(transfer.credit_account_id, 0) | _ROLE_CREDITED
        )
    roles.pop(0, None)
    return roles


class AccountFacts:
    """What never changes about an account: its asset and its balance rules (the writer role
    may update only its totals). With these known, a batch that guards no account reads none.

    One per database (the `Ledger` keeps one). Bounded: when full, it starts over.
    """

    def __init__(self, size_max: int = ACCOUNT_FACTS_SIZE_MAX) -> None:
        self._facts: dict[int, tuple[str, int]] = {}
        self._size_max = size_max

    def get(self, account_id: int) -> tuple[str, int] | None:
        return self._facts.get(account_id)

    def remember(self, account_id: int, asset: str, flags: int) -> None:
        if len(self._facts) >= self._size_max and account_id not in self._facts:
            self._facts.clear()
        self._facts[account_id] = (asset, flags)


def _is_guarded(role: int, flags: int) -> bool:
    return bool(
        (role & _ROLE_DEBITED and flags & _DEBITS_MUST_NOT_EXCEED_CREDITS)
        or (role & _ROLE_CREDITED and flags & _CREDITS_MUST_NOT_EXCEED_DEBITS)
        or role & _ROLE_FUNDED_DEBIT
    )


async def _account_facts(
    conn: AsyncConnection, account_ids: Iterable[int], facts: AccountFacts
) -> dict[int, tuple[str, int]]:
    """Asset and rules of each account, read from the database only for those new to `facts`;
    an account that does not exist is left out."""
    known: dict[int, tuple[str, int]] = {}
    unknown: list[int] = []
    for account_id in account_ids:
        fact = facts.get(account_id)
        if fact is None:
            unknown.append(account_id)
        else:
            known[account_id] = fact
    if unknown:
        rows = (await conn.execute(_READ_FACTS, {"ids": sorted(unknown)})).all()
        for account_id, asset, flags in rows:
            known[account_id] = (asset, flags)
            facts.remember(account_id, asset, flags)
    return known


async def _read_accounts(
    conn: AsyncConnection, roles: dict[int, int], facts: AccountFacts | None
) -> tuple[dict[int, AccountTotals], dict[int, AccountTotals], datetime | None]:
    """The batch's accounts, a copy of the totals read, and the clock when they were locked.

    When the batch guards an account, all its accounts are locked in id order and read. Else
    none is locked or read (but for the asset and rules of accounts new to `facts`): their
    running totals start at zero, and they have no entry in the copy."""
    if facts is None:  # nothing known: lock and read them all, as a guarded batch does
        return await _lock_accounts(conn, roles)
    known = await _account_facts(conn, roles, facts)
    if not any(_is_guarded(roles[i], flags) for i, (_, flags) in known.items()):
        accounts = {i: AccountTotals(i, asset, flags) for i, (asset, flags) in known.items()}
        return accounts, {}, None
    return await _lock_accounts(conn, roles)


async def _lock_accounts(
    conn: AsyncConnection, roles: dict[int, int]
) -> tuple[dict[int, AccountTotals], dict[int, AccountTotals], datetime | None]:
    rows = (await conn.execute(_LOCK_ACCOUNTS, {"ids": sorted(roles)})).all()
    accounts = {row[0]: AccountTotals(*row[:7]) for row in rows}
    originals = {row[0]: AccountTotals(*row[:7]) for row in rows}
    return accounts, originals, max((row[7] for row in rows), default=None)


async def _clock(conn: AsyncConnection) -> datetime:
    now = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    assert isinstance(now, datetime)
    return now


def _same_fields(transfer: Transfer, stored: StoredTransfer) -> bool:
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


def _accepted_as_stored(accepted: _Accepted, committed_at: datetime) -> StoredTransfer:
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


_DEBITS_MUST_NOT_EXCEED_CREDITS = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_CREDITS_MUST_NOT_EXCEED_DEBITS = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
_LINKED = int(TransferFlags.LINKED)
_PENDING = int(TransferFlags.PENDING)
_POST_PENDING = int(TransferFlags.POST_PENDING)
_FUNDED = int(TransferFlags.FUNDED)


def _check_rules(debit: AccountTotals, credit: AccountTotals, funded: bool) -> PostResult:
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


def _apply(walk: _Walk, transfer: Transfer) -> PostResult:
    """Decide one transfer against the running totals; on OK, apply it to them."""
    previous = walk.stored.get(transfer.id)
    if previous is None and transfer.id in walk.accepted_by_id:
        previous = _accepted_as_stored(walk.accepted_by_id[transfer.id], walk.committed_at)
    if previous is not None:
        if _same_fields(transfer, previous):
            return PostResult.EXISTS
        return PostResult.EXISTS_WITH_DIFFERENT_FIELDS
    if transfer.resolves_pending:
        return _apply_resolution(walk, transfer)
    return _apply_plain_or_pending(walk, transfer)


def _apply_plain_or_pending(walk: _Walk, transfer: Transfer) -> PostResult:
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
    result = _check_rules(debit, credit, bool(transfer.flags & _FUNDED))
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
    accepted = _Accepted(
        transfer,
        debit.id,
        credit.id,
        amount,
        debit.asset,
        debit.credits_posted - debit.debits_posted,
        credit.credits_posted - credit.debits_posted,
        expires_at,
    )
    _record(walk, accepted)
    if pending:
        walk.pendings[transfer.id] = _Pending(
            _accepted_as_stored(accepted, walk.committed_at), None
        )
    return PostResult.OK


_OUTCOME_RESULTS = {
    "posted": PostResult.PENDING_ALREADY_POSTED,
    "voided": PostResult.PENDING_ALREADY_VOIDED,
    "expired": PostResult.PENDING_EXPIRED,
}


def _apply_resolution(walk: _Walk, transfer: Transfer) -> PostResult:
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
    result = _check_rules(new_debit, new_credit, funded=False)
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
    accepted = _Accepted(
        transfer,
        debit.id,
        credit.id,
        amount,
        pending.asset,
        new_debit.posted_balance,
        new_credit.posted_balance,
        None,
    )
    _record(walk, accepted)
    return PostResult.OK


def _record(walk: _Walk, accepted: _Accepted) -> None:
    walk.accepted.append(accepted)
    walk.accepted_by_id[accepted.transfer.id] = accepted


def _chains(transfers: Sequence[Transfer]) -> list[range]:
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


def _walk_chain(walk: _Walk, transfers: Sequence[Transfer], chain: range) -> list[PostResult]:
    """Apply a chain all or nothing. A chain still open at the end of the batch fails."""
    if transfers[chain[-1]].flags & _LINKED:
        failed_results = [PostResult.LINKED_EVENT_FAILED] * len(chain)
        failed_results[-1] = PostResult.LINKED_EVENT_CHAIN_OPEN
        return failed_results
    if len(chain) == 1:
        return [_apply(walk, transfers[chain[0]])]
    saved_accounts = {key: value.copy() for key, value in walk.accounts.items()}
    saved_outcomes = {key: value.outcome for key, value in walk.pendings.items()}
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
    walk.accounts = saved_accounts
    for key in list(walk.pendings):
        if key in saved_outcomes:
            walk.pendings[key].outcome = saved_outcomes[key]
        else:
            del walk.pendings[key]
    for accepted in walk.accepted[saved_accepted_count:]:
        del walk.accepted_by_id[accepted.transfer.id]
    del walk.accepted[saved_accepted_count:]
    del walk.resolutions[saved_resolution_count:]
    failure = results[-1]
    final = [PostResult.LINKED_EVENT_FAILED] * len(chain)
    final[len(results) - 1] = failure
    return final


def _write_parameters(
    walk: _Walk, originals: dict[int, AccountTotals], metadata_texts: list[str | None]
) -> dict[str, Any]:
    """The accounts' aggregated deltas, in id order, and the accepted transfers in batch order,
    with their running balances as offsets from their accounts' balances before the batch."""
    accepted = walk.accepted
    named = {a.debit_account_id for a in accepted}
    named.update(a.credit_account_id for a in accepted)
    account_ids = sorted(named)
    deltas: dict[str, list[int]] = {
        "debits_posted": [],
        "credits_posted": [],
        "debits_pending": [],
        "credits_pending": [],
    }
    for account_id in account_ids:
        now, before = walk.accounts[account_id], originals.get(account_id, _ZERO)
        deltas["debits_posted"].append(now.debits_posted - before.debits_posted)
        deltas["credits_posted"].append(now.credits_posted - before.credits_posted)
        deltas["debits_pending"].append(now.debits_pending - before.debits_pending)
        deltas["credits_pending"].append(now.credits_pending - before.credits_pending)
    transfers = [a.transfer for a in accepted]
    return {
        "account_ids": account_ids,
        **deltas,
        "ids": [t.id for t in transfers],
        "debit_account_ids": [a.debit_account_id for a in accepted],
        "credit_account_ids": [a.credit_account_id for a in accepted],
        "amounts": [a.amount for a in accepted],
        "assets": [a.asset for a in accepted],
        "codes": [int(t.code) for t in transfers],
        "flags": [t.flags for t in transfers],
        "pending_ids": [t.pending_id for t in transfers],
        "timeouts_s": [t.timeout_s for t in transfers],
        "rate_card_versions": [t.rate_card_version for t in transfers],
        "event_ids": [t.event_id for t in transfers],
        "metadata": metadata_texts,
        "debit_offsets": [
            a.debit_balance_after - originals.get(a.debit_account_id, _ZERO).posted_balance
            for a in accepted
        ],
        "credit_offsets": [
            a.credit_balance_after - originals.get(a.credit_account_id, _ZERO).posted_balance
            for a in accepted
        ],
        "resolved_pending_ids": [r[0] for r in walk.resolutions],
        "resolved_by": [r[1] for r in walk.resolutions],
        "outcomes": [r[2] for r in walk.resolutions],
    }


async def _execute_write(
    conn: AsyncConnection, parameters: dict[str, Any], accepted_count: int
) -> Sequence[Any]:
    """Run step 4; rows are (account id, balance before, commit timestamp, count inserted)."""
    try:
        rows = (await conn.execute(_WRITE_BATCH, parameters)).all()
    except IntegrityError as error:
        if _is_unique_violation(error):
            raise LedgerConflictError(str(error.orig)) from error
        raise
    inserted = rows[0][3] if rows else 0
    if inserted != accepted_count:
        raise AssertionError(f"stored {inserted} of {accepted_count} accepted transfers")
    return rows


async def _write(
    conn: AsyncConnection,
    walk: _Walk,
    originals: dict[int, AccountTotals],
    metadata_texts: list[str | None],
) -> datetime:
    """Step 4. Moves the accepted transfers onto the balances their accounts had once
    locked, as the database stored them, and onto the commit timestamp, which it returns.

    Accounts the batch did not lock in step 2 were walked from zero: their running balances
    shift by the balance the write found them at.
    """
    rows = await _execute_write(
        conn, _write_parameters(walk, originals, metadata_texts), len(walk.accepted)
    )
    shifts = {
        row[0]: row[1] - originals.get(row[0], _ZERO).posted_balance
        for row in rows
        if row[1] != originals.get(row[0], _ZERO).posted_balance
    }
    committed_at: datetime = rows[0][2]
    for accepted in walk.accepted:
        if shifts:
            accepted.debit_balance_after += shifts.get(accepted.debit_account_id, 0)
            accepted.credit_balance_after += shifts.get(accepted.credit_account_id, 0)
        if accepted.expires_at is not None:
            timeout_s = accepted.transfer.timeout_s
            assert timeout_s is not None
            accepted.expires_at = committed_at + timedelta(seconds=timeout_s)
    return committed_at


def _chain_line_head(accepted: _Accepted, metadata_text: str | None) -> str | None:
    """The start of the transfer's line in the hash chain, made before the accounts are locked;
    None for a pending transfer with a timeout, whose expiry is known only once written."""
    if accepted.expires_at is not None:
        return None
    transfer = accepted.transfer
    return line_head(
        transfer.id,
        accepted.debit_account_id,
        accepted.credit_account_id,
        accepted.amount,
        accepted.asset,
        int(transfer.code),
        transfer.flags,
        transfer.pending_id,
        transfer.timeout_s,
        None,
        transfer.rate_card_version,
        transfer.event_id,
        metadata_text,
    )


def _chain_entries(
    accepted: Sequence[_Accepted], heads: Sequence[str | None], committed_at: datetime
) -> list[ChainEntry]:
    entries: list[ChainEntry] = []
    for item, head in zip(accepted, heads, strict=True):
        if head is None:
            entries.append(chain_entry(_accepted_as_stored(item, committed_at)))
            continue
        tail = line_tail(item.debit_balance_after, item.credit_balance_after, committed_at)
        transfer_id = item.transfer.id
        entries.append((transfer_id.int, transfer_id, (head + tail).encode("utf-8")))
    return entries


async def post_batch(
    conn: AsyncConnection, transfers: Sequence[Transfer], facts: AccountFacts | None = None
) -> BatchOutcome:
    """Post `transfers` inside the caller's transaction on `conn`. `facts` (the database's
    `AccountFacts`) spares locking and reading the accounts of a batch that guards none; without
    it, every batch locks and reads its accounts first.

    Returns a result per transfer. Transfers that are not OK change nothing. The caller commits
    (or rolls back); a `LedgerConflictError` means the unit of work should be run again.
    """
    if len(transfers) > TRANSFER_BATCH_SIZE_MAX:
        raise ValueError(f"batch of {len(transfers)} exceeds {TRANSFER_BATCH_SIZE_MAX}")
    if not transfers:
        return BatchOutcome(results=[])
    pending_ids = {t.pending_id for t in transfers if t.pending_id is not None}
    stored, outcomes = await read_stored(conn, {t.id for t in transfers} | pending_ids)
    roles = _account_roles(transfers, stored)
    accounts, originals, clock = await _read_accounts(conn, roles, facts)
    pendings = {
        pending_id: _Pending(stored[pending_id], outcomes[pending_id])
        for pending_id in pending_ids
        if pending_id in stored
    }
    # The walk's clock decides whether a stored pending transfer has expired. Without one to
    # resolve, it is only a placeholder: transfers are stored with the clock of the write.
    if clock is None and pendings:
        clock = await _clock(conn)
    decided_at = clock or datetime.now(UTC)
    walk = _Walk(decided_at, accounts, stored, pendings)
    results: list[PostResult] = []
    for chain in _chains(transfers):
        results.extend(_walk_chain(walk, transfers, chain))
    if not walk.accepted:
        return BatchOutcome(results, None, 0)
    metadata_texts = [metadata_json(accepted.transfer.metadata) for accepted in walk.accepted]
    heads = [
        _chain_line_head(accepted, text)
        for accepted, text in zip(walk.accepted, metadata_texts, strict=True)
    ]
    committed_at = await _write(conn, walk, originals, metadata_texts)
    entries = _chain_entries(walk.accepted, heads, committed_at)
    deferred = conn.info.get(DEFERRED_LINKS_KEY)
    if deferred is None:
        await append_link_entries(conn, entries)
    else:  # run_with_conflict_retry links everything just before the commit
        deferred.extend(entries)
    return BatchOutcome(results, committed_at, len(walk.accepted))


@dataclass(slots=True)
class NewTransfers:
    """Plain transfers (no flags, no pending, no timeout) that the caller knows are not stored
    yet, as columns, one entry per transfer. A caller that keeps its own idempotency record in
    the same transaction (the ingestion's applied events) posts them with `post_new_batch`,
    without a `Transfer` object and a lookup of stored ids per transfer."""

    ids: list[uuid.UUID] = field(default_factory=list)
    debit_account_ids: list[int] = field(default_factory=list)
    credit_account_ids: list[int] = field(default_factory=list)
    amounts: list[int] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)
    rate_card_versions: list[int | None] = field(default_factory=list)
    event_ids: list[str | None] = field(default_factory=list)
    metadata_texts: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def add(
        self,
        transfer_id: uuid.UUID,
        debit_account_id: int,
        credit_account_id: int,
        amount: int,
        code: int,
        rate_card_version: int | None,
        event_id: str | None,
        metadata_text: str | None,
    ) -> None:
        self.ids.append(transfer_id)
        self.debit_account_ids.append(debit_account_id)
        self.credit_account_ids.append(credit_account_id)
        self.amounts.append(amount)
        self.codes.append(code)
        self.rate_card_versions.append(rate_card_version)
        self.event_ids.append(event_id)
        self.metadata_texts.append(metadata_text)


class NotNewBatchError(ValueError):
    """The batch is not one `post_new_batch` takes: post it with `post_batch`."""


async def post_new_batch(
    conn: AsyncConnection, batch: NewTransfers, facts: AccountFacts
) -> datetime:
    """Post plain transfers that are not stored yet, inside the caller's transaction, in one
    statement (step 4 of `post_batch`) and the chain link. Returns the commit timestamp.

    Every transfer is accepted: no account of the batch may have a balance rule its role could
    break (a `NotNewBatchError` says which, before anything is written). A transfer id that is
    stored already fails the write on its unique key with `LedgerConflictError`, as a race does
    in `post_batch`: the caller's unit of work runs again, and should then use `post_batch`.
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
    known = await _account_facts(conn, debited | credited, facts)
    for account_id in debited | credited:
        if account_id not in known:
            raise NotNewBatchError(f"account {account_id} does not exist")
    for account_id in debited:
        if known[account_id][1] & _DEBITS_MUST_NOT_EXCEED_CREDITS:
            raise NotNewBatchError(f"account {account_id} must not be debited beyond its credits")
    for account_id in credited:
        if known[account_id][1] & _CREDITS_MUST_NOT_EXCEED_DEBITS:
            raise NotNewBatchError(f"account {account_id} must not be credited beyond its debits")
    # Running totals count from zero: the write moves the balances onto those it locks.
    debits = dict.fromkeys(debited | credited, 0)
    credits = dict.fromkeys(debited | credited, 0)
    assets: list[str] = []
    debit_offsets: list[int] = []
    credit_offsets: list[int] = []
    heads: list[str] = []
    for index in range(count):
        debit_id = batch.debit_account_ids[index]
        credit_id = batch.credit_account_ids[index]
        amount = batch.amounts[index]
        asset = known[debit_id][0]
        if amount <= 0 or debit_id == credit_id or known[credit_id][0] != asset:
            raise NotNewBatchError(
                f"transfer {batch.ids[index]}: amount must be positive, between two accounts"
                " of one asset"
            )
        debits[debit_id] += amount
        credits[credit_id] += amount
        assets.append(asset)
        debit_offsets.append(credits[debit_id] - debits[debit_id])
        credit_offsets.append(credits[credit_id] - debits[credit_id])
        heads.append(
            line_head(
                batch.ids[index],
                debit_id,
                credit_id,
                amount,
                asset,
                batch.codes[index],
                0,
                None,
                None,
                None,
                batch.rate_card_versions[index],
                batch.event_ids[index],
                batch.metadata_texts[index],
            )
        )
    account_ids = sorted(debits)
    nones: list[None] = [None] * count
    parameters = {
        "account_ids": account_ids,
        "debits_posted": [debits[i] for i in account_ids],
        "credits_posted": [credits[i] for i in account_ids],
        "debits_pending": [0] * len(account_ids),
        "credits_pending": [0] * len(account_ids),
        "ids": batch.ids,
        "debit_account_ids": batch.debit_account_ids,
        "credit_account_ids": batch.credit_account_ids,
        "amounts": batch.amounts,
        "assets": assets,
        "codes": batch.codes,
        "flags": [0] * count,
        "pending_ids": nones,
        "timeouts_s": nones,
        "rate_card_versions": batch.rate_card_versions,
        "event_ids": batch.event_ids,
        "metadata": batch.metadata_texts,
        "debit_offsets": debit_offsets,
        "credit_offsets": credit_offsets,
        "resolved_pending_ids": [],
        "resolved_by": [],
        "outcomes": [],
    }
    rows = await _execute_write(conn, parameters, count)
    balances_before = {row[0]: row[1] for row in rows}
    committed_at: datetime = rows[0][2]
    entries: list[ChainEntry] = []
    for index in range(count):
        transfer_id = batch.ids[index]
        tail = line_tail(
            balances_before[batch.debit_account_ids[index]] + debit_offsets[index],
            balances_before[batch.credit_account_ids[index]] + credit_offsets[index],
            committed_at,
        )
        entries.append((transfer_id.int, transfer_id, (heads[index] + tail).encode("utf-8")))
    deferred = conn.info.get(DEFERRED_LINKS_KEY)
    if deferred is None:
        await append_link_entries(conn, entries)
    else:  # run_with_conflict_retry links everything just before the commit
        deferred.extend(entries)
    return committed_at


def _is_unique_violation(error: DBAPIError) -> bool:
    return getattr(error.orig, "sqlstate", None) == "23505"


T = TypeVar("T")


_CONFLICT_SQLSTATES = {
    "23505",  # unique_violation: another writer stored the same key first
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
}


def _is_conflict(error: BaseException) -> bool:
    if isinstance(error, LedgerConflictError):
        return True
    return isinstance(error, DBAPIError) and (
        getattr(error.orig, "sqlstate", None) in _CONFLICT_SQLSTATES
    )


async def run_with_conflict_retry(
    engine: AsyncEngine,
    unit_of_work: Callable[[AsyncConnection], Awaitable[T]],
    retry_count_max: int,
) -> T:
    """Run `unit_of_work` in a transaction; run it again (bounded) when it lost a race with
    another writer (a duplicate key, a deadlock, a serialization failure)."""
    for attempt in range(retry_count_max + 1):
        try:
            async with engine.begin() as conn:
                # The chain head is locked only for the last statement before the commit, not
                # from the first posting on: a long unit of work never holds up other writers.
                conn.info[DEFERRED_LINKS_KEY] = []
                try:
                    result = await unit_of_work(conn)
                    await append_link_entries(conn, conn.info[DEFERRED_LINKS_KEY])
                finally:
                    conn.info.pop(DEFERRED_LINKS_KEY, None)
                return result
        except (LedgerConflictError, DBAPIError) as error:
            if not _is_conflict(error) or attempt == retry_count_max:
                raise
    raise AssertionError("unreachable")


def split_at_chain_boundaries(
    transfers: Sequence[Transfer], batch_size_max: int
) -> list[Sequence[Transfer]]:
    """Cut a long list into batches of at most `batch_size_max` without splitting a chain."""
    batches: list[Sequence[Transfer]] = []
    start = 0
    for chain in _chains(transfers):
        if len(chain) > batch_size_max:
            raise ValueError(f"a linked chain of {len(chain)} exceeds the batch size")
        if chain.stop - start > batch_size_max:
            batches.append(transfers[start : chain.start])
            start = chain.start
    if start < len(transfers):
        batches.append(transfers[start:])
    return batches
