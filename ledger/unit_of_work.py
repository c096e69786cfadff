"""A unit of work on the ledger: one database transaction that owns its connection, posts through
the store, links what it stored into the hash chain just before its commit, and runs again
(bounded; after a deadlock or a serialization failure, with backoff) when it lost a race with
another writer.

    async for tx in ledger.transactions():
        async with tx:
            outcome = await tx.post(transfers)
            await tx.connection.execute(...)   # the caller's own rows, in the same transaction

The loop body runs once, or again after a conflict (a duplicate key, a deadlock, a
serialization failure), at most `retry_count_max` more times; anything else propagates at once.
Each run again is told to the ledger's `on_conflict` with its kind (`ledger.store.conflict_kind`),
which the services count.
While a run again is possible and none has been needed, `post` assumes its transfers' ids are
new rather than reading them (`ledger.store`, step 1): a stored one is a duplicate key, and the
runs after it read them.
The chain head is locked only by the last statement before the commit, so a long unit of work
never holds up other writers. A write posted with `last=True` (the unit of work's last ledger
write) appends the link itself: one round trip fewer while it holds its accounts' locks.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.chain import ChainEntry, append_link_entries
from ledger.model import BatchOutcome, NewTransfers, StoredTransfer, Transfer
from ledger.store import (
    AccountFacts,
    conflict_kind,
    read_stored,
    store_batch,
    store_new_batch,
)

CONFLICT_BACKOFF_MS_FIRST = 5


class LedgerTransaction:
    """One attempt at a unit of work. Use it with `async with`; see the module's docstring."""

    def __init__(self, engine: AsyncEngine, facts: AccountFacts, attempts: TransactionAttempts):
        self._engine = engine
        self._facts = facts
        self._attempts = attempts
        self._begin: AbstractAsyncContextManager[AsyncConnection] | None = None
        self._connection: AsyncConnection | None = None
        self._chain_entries: list[ChainEntry] = []
        self._last_posted = False
        # What the batches were made from and the store's working objects: dropped only after
        # the commit (or the rollback), so that freeing them is not done while the last write
        # holds its accounts' locks and the chain head (`ledger.store.store_batch`).
        self._freed_after_commit: list[object] = []

    @property
    def connection(self) -> AsyncConnection:
        """The transaction's connection, for the caller's own statements."""
        if self._connection is None:
            raise RuntimeError("the ledger transaction is used outside its `async with`")
        return self._connection

    async def post(
        self,
        transfers: Sequence[Transfer],
        *,
        lock_accounts_first: bool = False,
        last: bool = False,
    ) -> BatchOutcome:
        """Post a batch (`ledger.store.store_batch`): a result per transfer, in order.

        `lock_accounts_first` locks and reads every account of the batch before the walk, even
        when no transfer could break a balance rule (the cash-out desk posts its holds and
        settlements so). `last` says that no ledger write follows in this unit of work: see
        `post_new`."""
        self._check_not_after_last(last)
        facts = None if lock_accounts_first else self._facts
        self._freed_after_commit.append(transfers)
        outcome, entries = await store_batch(
            self.connection,
            transfers,
            facts,
            link=last,
            assume_new=self._attempts.may_assume_new(),
            freed_after_commit=self._freed_after_commit,
        )
        self._chain_entries += entries
        return outcome

    async def post_new(self, batch: NewTransfers, *, last: bool = False) -> datetime:
        """Post plain transfers known not to be stored yet (`ledger.store.store_new_batch`);
        returns the commit timestamp.

        With `last`, no ledger write may follow in this unit of work, and the write links its
        transfers into the hash chain itself: one statement fewer while it holds the accounts'
        locks. The chain head is then locked from that write to the commit, so what the caller
        still runs after it should be short."""
        self._check_not_after_last(last)
        self._freed_after_commit.append(batch)
        committed_at, entries = await store_new_batch(
            self.connection,
            batch,
            self._facts,
            link=last,
            freed_after_commit=self._freed_after_commit,
        )
        self._chain_entries += entries
        return committed_at

    def _check_not_after_last(self, last: bool) -> None:
        """A write after the last would lock accounts while holding the chain head, which
        writers lock after their accounts: the two could deadlock."""
        if self._last_posted:
            raise RuntimeError("no ledger write may follow one posted with last=True")
        self._last_posted = last

    async def read_stored(
        self, ids: Iterable[uuid.UUID]
    ) -> tuple[dict[uuid.UUID, StoredTransfer], dict[uuid.UUID, str | None]]:
        """Stored transfers by id, and how each pending one ended (None while open)."""
        return await read_stored(self.connection, ids)

    async def __aenter__(self) -> LedgerTransaction:
        self._attempts.entered()
        self._begin = self._engine.begin()
        self._connection = await self._begin.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        """Link and commit, or roll back; a conflict with attempts left is swallowed, so the
        caller's loop runs the unit of work again."""
        assert self._begin is not None, "exited without entering"
        error = exc
        if error is None:
            try:
                await append_link_entries(self.connection, self._chain_entries)
            except Exception as link_error:
                error = link_error
        try:
            if error is None:
                await self._begin.__aexit__(None, None, None)  # commits
            else:
                await self._begin.__aexit__(type(error), error, error.__traceback__)
        except Exception as commit_error:
            if error is not None:
                raise
            error = commit_error
        finally:
            self._connection = None
            self._freed_after_commit.clear()
        if error is None:
            self._attempts.finish()
            return False
        kind = conflict_kind(error) if isinstance(error, Exception) else None
        if kind is not None and self._attempts.may_run_again():
            self._attempts.conflicted(kind)
            return True
        if error is exc:
            return False
        raise error


class TransactionAttempts:
    """The attempts at one unit of work: `async for tx in attempts` yields a new
    `LedgerTransaction` until one commits, or the retries run out and the conflict propagates."""

    def __init__(
        self,
        engine: AsyncEngine,
        facts: AccountFacts,
        *,
        retry_count_max: int,
        backoff_ms_max: int,
        on_conflict: Callable[[str], None] | None = None,
    ) -> None:
        if retry_count_max < 0 or backoff_ms_max < 0:
            raise ValueError("retry_count_max and backoff_ms_max must not be negative")
        self._engine = engine
        self._facts = facts
        self._retry_count_max = retry_count_max
        self._backoff_ms_max = backoff_ms_max
        self._on_conflict = on_conflict
        self._attempt_count = 0
        self._entered_count = 0
        self._finished = False
        self._wait_s = 0.0  # before the next attempt

    def __aiter__(self) -> TransactionAttempts:
        return self

    async def __anext__(self) -> LedgerTransaction:
        if self._finished:
            raise StopAsyncIteration
        if self._entered_count != self._attempt_count:
            raise RuntimeError("each ledger transaction must be run with `async with`")
        if self._wait_s > 0:
            await asyncio.sleep(self._wait_s)
        self._attempt_count += 1
        return LedgerTransaction(self._engine, self._facts, self)

    def entered(self) -> None:
        self._entered_count += 1

    def may_run_again(self) -> bool:
        return self._attempt_count <= self._retry_count_max

    def conflicted(self, kind: str) -> None:
        """The attempt lost a race of this kind (`ledger.store.conflict_kind`) and runs again,
        told to `on_conflict`: the next waits a backoff, unless the race was for a unique key.
        A key's check waits for the writer that took it to end, so that writer has committed,
        and the next attempt reads what it stored at once (the first attempt's own ids,
        assumed new, fail so too)."""
        self._wait_s = 0.0 if kind == "unique_key" else self._backoff_s()
        if self._on_conflict is not None:
            self._on_conflict(kind)

    @property
    def waited_s(self) -> float:
        """How long the latest attempt waited before it began (0 for the first)."""
        return self._wait_s

    def may_assume_new(self) -> bool:
        """Whether a post may assume its transfers are not stored: only on the first attempt
        (each later one follows a conflict), and only when a conflict would run it again."""
        return self._attempt_count == 1 and self.may_run_again()

    def finish(self) -> None:
        self._finished = True

    def _backoff_s(self) -> float:
        """Doubling from CONFLICT_BACKOFF_MS_FIRST up to the cap, with jitter, so two writers
        that deadlocked do not meet again at once."""
        ceiling_ms = min(
            self._backoff_ms_max, CONFLICT_BACKOFF_MS_FIRST * 2 ** (self._attempt_count - 1)
        )
        return random.uniform(ceiling_ms / 2, ceiling_ms) / 1_000
