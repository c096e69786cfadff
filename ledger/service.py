"""`Ledger`: the one door into the ledger. Services post through it (`post`, `post_new`, or a
unit of work from `transactions()`), look up account ids through it, and read through it; its
modules below (`decide`, `store`, `unit_of_work`, `chain`) are its own business."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.accounts import ACCOUNT_CACHE_SIZE_MAX, AccountDirectory
from ledger.chart import AccountSpec
from ledger.decide import split_at_chain_boundaries
from ledger.model import (
    NewTransfers,
    PostResult,
    Transfer,
    TransferCode,
    TransferFlags,
)
from ledger.store import CONFLICT_KINDS, AccountFacts, is_duplicate_key
from ledger.unit_of_work import LedgerTransaction, TransactionAttempts

__all__ = [
    "CONFLICT_KINDS",
    "Ledger",
    "LedgerTransaction",
    "TransactionAttempts",
    "expiry_transfer_id",
    "is_duplicate_key",
]

EXPIRY_NAMESPACE = uuid.UUID("6f1d8f43-6a0b-4c34-9d44-5f0f5b7f3e61")
EXPIRY_BATCH_SIZE_MAX = 10_000
CONFLICT_BACKOFF_MS_MAX_DEFAULT = 100


def expiry_transfer_id(pending_id: uuid.UUID) -> uuid.UUID:
    """The id of the void that expires `pending_id`: the same for every process that tries."""
    return uuid.uuid5(EXPIRY_NAMESPACE, str(pending_id))


class Ledger:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_size_max: int = 8_192,
        conflict_retry_count_max: int = 5,
        conflict_backoff_ms_max: int = CONFLICT_BACKOFF_MS_MAX_DEFAULT,
        account_cache_size_max: int = ACCOUNT_CACHE_SIZE_MAX,
        on_conflict: Callable[[str], None] | None = None,
    ) -> None:
        """`on_conflict` is told the kind of every race a unit of work lost and runs again
        after (`ledger.store.CONFLICT_KINDS`)."""
        self.engine = engine
        self._accounts = AccountDirectory(engine, account_cache_size_max)
        self._account_facts = AccountFacts(account_cache_size_max)
        self._batch_size_max = batch_size_max
        self._conflict_retry_count_max = conflict_retry_count_max
        self._conflict_backoff_ms_max = conflict_backoff_ms_max
        self._on_conflict = on_conflict

    def transactions(self, *, retry_count_max: int | None = None) -> TransactionAttempts:
        """The attempts at one unit of work (`ledger.unit_of_work`): `async for tx in
        ledger.transactions(): async with tx: ...`, run again after a conflict with another
        writer, at most `retry_count_max` more times (default: the ledger's)."""
        return TransactionAttempts(
            self.engine,
            self._account_facts,
            retry_count_max=(
                self._conflict_retry_count_max if retry_count_max is None else retry_count_max
            ),
            backoff_ms_max=self._conflict_backoff_ms_max,
            on_conflict=self._on_conflict,
        )

    def connect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for reading, outside any unit of work."""
        return self.engine.connect()

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A plain transaction for rows beside the ledger (projections, the outbox); transfers
        are posted through `transactions()`, which links them into the hash chain."""
        return self.engine.begin()

    async def account_ids(self, specs: Sequence[AccountSpec]) -> dict[str, int]:
        """Ids of the accounts `specs` name, created (in a short transaction of their own) where
        missing; cached, since accounts are never deleted."""
        return await self._accounts.ids(specs)

    async def account_ids_in(
        self, conn: AsyncConnection, specs: Sequence[AccountSpec]
    ) -> dict[str, int]:
        """Ids of the accounts `specs` name, created inside the caller's transaction on `conn`
        where missing: for a transaction that already holds row locks, which must never wait for
        a second pooled connection (all of them may be waiting for its locks)."""
        return await self._accounts.ids_in(conn, specs)

    async def account_id(self, spec: AccountSpec) -> int:
        return await self._accounts.id(spec)

    async def post(self, transfers: Sequence[Transfer]) -> list[PostResult]:
        """Post transfers in batches of at most `batch_size_max`, one unit of work each.

        Linked chains are never split across batches; results come back in input order.
        """
        results: list[PostResult] = []
        for batch in split_at_chain_boundaries(transfers, self._batch_size_max):
            async for tx in self.transactions():
                async with tx:
                    outcome = await tx.post(batch, last=True)
            results.extend(outcome.results)
        return results

    async def post_new(self, batch: NewTransfers) -> datetime:
        """Post plain transfers known not to be stored yet, in one unit of work of their own;
        returns the commit timestamp (see `LedgerTransaction.post_new`)."""
        async for tx in self.transactions():
            async with tx:
                committed_at = await tx.post_new(batch, last=True)
        return committed_at

    async def expire_pending(self, limit: int = EXPIRY_BATCH_SIZE_MAX) -> int:
        """Void pending transfers whose timeout has passed; returns how many were expired."""
        if not 1 <= limit <= EXPIRY_BATCH_SIZE_MAX:
            raise ValueError(f"limit must be between 1 and {EXPIRY_BATCH_SIZE_MAX}")
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    """
                    SELECT t.id FROM transfers t
                    WHERE t.expires_at IS NOT NULL AND t.expires_at <= clock_timestamp()
                      AND NOT EXISTS (SELECT 1 FROM pending_resolutions r
                                      WHERE r.pending_id = t.id)
                    ORDER BY t.expires_at
                    LIMIT :limit
                    """
                ),
                {"limit": limit},
            )
            pending_ids = [row.id for row in rows]
        voids = [
            Transfer(
                id=expiry_transfer_id(pending_id),
                debit_account_id=0,
                credit_account_id=0,
                amount=0,
                code=TransferCode.PENDING_EXPIRED,
                flags=TransferFlags.VOID_PENDING,
                pending_id=pending_id,
            )
            for pending_id in pending_ids
        ]
        results = await self.post(voids)
        return sum(result is PostResult.OK for result in results)
