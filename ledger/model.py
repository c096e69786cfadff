"""The ledger's vocabulary: account and transfer flags, transfer codes, result codes, and the
records passed to and from the posting engine. Mirrors the SQL in ledger/sql/0001_ledger.sql."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# PostgreSQL's bigint: no account total may pass it.
BIGINT_MAX = 2**63 - 1
TRANSFER_BATCH_SIZE_MAX = 100_000


class AccountFlags(enum.IntFlag):
    NONE = 0
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1
    CREDITS_MUST_NOT_EXCEED_DEBITS = 2


class TransferFlags(enum.IntFlag):
    NONE = 0
    LINKED = 1
    PENDING = 2
    POST_PENDING = 4
    VOID_PENDING = 8
    FUNDED = 16


class TransferCode(enum.IntEnum):
    """Why a transfer happened (the `transfer_codes` table holds the same names)."""

    GIFT_DIAMONDS = 1
    GIFT_COINS = 2
    GIFT_REVERSAL_DIAMONDS = 3
    GIFT_REVERSAL_COINS = 4
    TIP = 10
    TIP_FAN_FEE = 11
    TIP_PROCESSOR_FEE = 12
    FUND_REWARD = 20
    MARKETPLACE_PAYMENT = 30
    MARKETPLACE_FEE = 31
    CASHOUT_HOLD = 40
    CASHOUT_PAID = 41
    CASHOUT_RELEASED = 42
    CASHOUT_RETURNED = 43
    CASHOUT_CONVERSION = 44
    CASHOUT_SUBMITTED = 45
    CASHOUT_SETTLED = 46
    CASHOUT_SETTLED_CATCH_UP = 47
    OPERATOR_ADJUSTMENT = 50
    ROUNDING = 90
    PENDING_EXPIRED = 98
    ADJUSTMENT = 99
    SYNTHETIC = 100


class PostResult(enum.StrEnum):
    """Outcome of one transfer in a posted batch."""

    OK = "ok"
    EXISTS = "exists"
    EXISTS_WITH_DIFFERENT_FIELDS = "exists_with_different_fields"
    EXCEEDS_CREDITS = "exceeds_credits"
    EXCEEDS_DEBITS = "exceeds_debits"
    ACCOUNT_NOT_FOUND = "account_not_found"
    ASSET_MISMATCH = "asset_mismatch"
    PENDING_NOT_FOUND = "pending_not_found"
    PENDING_NOT_PENDING = "pending_transfer_not_pending"
    PENDING_ALREADY_POSTED = "pending_already_posted"
    PENDING_ALREADY_VOIDED = "pending_already_voided"
    PENDING_EXPIRED = "pending_expired"
    PENDING_ACCOUNTS_DIFFER = "pending_accounts_differ"
    AMOUNT_EXCEEDS_PENDING = "amount_exceeds_pending"
    AMOUNT_DIFFERS_FROM_PENDING = "amount_differs_from_pending"
    OVERFLOWS = "overflows"
    LINKED_EVENT_FAILED = "linked_event_failed"
    LINKED_EVENT_CHAIN_OPEN = "linked_event_chain_open"


_RESOLVING_FLAGS = int(TransferFlags.POST_PENDING | TransferFlags.VOID_PENDING)
_PHASE_FLAGS = int(TransferFlags.PENDING) | _RESOLVING_FLAGS


@dataclass(frozen=True, slots=True)
class Transfer:
    """A transfer to post. `id` is the idempotency key.

    For post/void of a pending transfer, the accounts may be left as 0: they are taken from the
    pending transfer. A void always releases the whole pending amount; a post may be partial
    (`amount` at most the pending amount; the rest is released).
    """

    id: uuid.UUID
    debit_account_id: int
    credit_account_id: int
    amount: int
    code: TransferCode
    flags: int = 0  # TransferFlags; kept as a plain int (IntFlag arithmetic is slow in a loop)
    pending_id: uuid.UUID | None = None
    timeout_s: int | None = None
    rate_card_version: int | None = None
    event_id: str | None = None
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "flags", int(self.flags))
        phase_flags = self.flags & _PHASE_FLAGS
        if phase_flags not in (
            0,
            TransferFlags.PENDING,
            TransferFlags.POST_PENDING,
            TransferFlags.VOID_PENDING,
        ):
            raise ValueError(f"transfer {self.id}: at most one of pending, post, void")
        resolves = bool(self.flags & _RESOLVING_FLAGS)
        if resolves != (self.pending_id is not None):
            raise ValueError(f"transfer {self.id}: pending_id goes with post or void, only")
        if self.timeout_s is not None and not self.flags & TransferFlags.PENDING:
            raise ValueError(f"transfer {self.id}: timeout_s applies to pending transfers only")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError(f"transfer {self.id}: timeout_s must be positive")
        if not resolves and self.amount <= 0:
            raise ValueError(f"transfer {self.id}: amount must be positive")
        if resolves and self.amount < 0:
            raise ValueError(f"transfer {self.id}: amount must not be negative")
        if not resolves and self.debit_account_id == self.credit_account_id:
            raise ValueError(f"transfer {self.id}: debit and credit accounts must differ")

    @property
    def resolves_pending(self) -> bool:
        return bool(self.flags & _RESOLVING_FLAGS)


@dataclass(frozen=True, slots=True)
class StoredTransfer:
    """A transfer as it stands in the ledger."""

    id: uuid.UUID
    seq: int
    debit_account_id: int
    credit_account_id: int
    amount: int
    asset: str
    code: int
    flags: int
    pending_id: uuid.UUID | None
    timeout_s: int | None
    expires_at: datetime | None
    rate_card_version: int | None
    event_id: str | None
    metadata: dict[str, Any] | None
    debit_balance_after: int
    credit_balance_after: int
    created_at: datetime


@dataclass(slots=True)
class AccountTotals:
    id: int
    asset: str
    flags: int
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    def copy(self) -> AccountTotals:
        return AccountTotals(
            self.id,
            self.asset,
            self.flags,
            self.debits_posted,
            self.credits_posted,
            self.debits_pending,
            self.credits_pending,
        )

    @property
    def posted_balance(self) -> int:
        """Credits minus debits, posted only."""
        return self.credits_posted - self.debits_posted

    @property
    def available_balance(self) -> int:
        """Credits posted minus debits posted and pending: what may still be spent."""
        return self.credits_posted - self.debits_posted - self.debits_pending


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """Result code per transfer, in the order given, and the number newly stored."""

    results: list[PostResult]
    committed_at: datetime | None = None
    accepted_count: int = field(default=0)

    @property
    def all_ok_or_exist(self) -> bool:
        return all(r in (PostResult.OK, PostResult.EXISTS) for r in self.results)


@dataclass(slots=True)
class NewTransfers:
    """Plain transfers (no flags, no pending, no timeout) that the caller knows are not stored
    yet, as columns, one entry per transfer. A caller that keeps its own idempotency record in
    the same transaction (the ingestion's applied events) posts them with `Ledger`'s `post_new`,
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
        *,
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
    """The batch is not one `post_new` takes: post it with `post`."""
