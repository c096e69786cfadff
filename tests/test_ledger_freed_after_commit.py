"""A unit of work keeps what its batches were made from until its commit, and lets go of it
after (`LedgerTransaction`, `ledger.store.store_batch`): freeing a batch's objects takes time
(about 0.3 ms for 1,000 transfers), which should not be spent while the last write holds its
accounts' locks and the chain head. The batches here are handed in by a helper that keeps no
reference of its own, as a consumer's handler hands in the batch it built, and are watched
through weak references from the `COMMIT` (SQLAlchemy's `commit` event, which fires before the
driver's commit) to the end of the unit of work.
"""

from __future__ import annotations

import weakref
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.model import AccountFlags, NewTransfers, Transfer, TransferCode
from ledger.service import Ledger
from ledger.unit_of_work import LedgerTransaction
from tests.ledger_helpers import make_accounts, new_id

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def engine(module_engine: AsyncEngine) -> AsyncEngine:
    return module_engine


class WatchedTransfers(list[Transfer]):
    """A batch of transfers that a weak reference can watch (a plain list cannot be)."""


class WatchedNewTransfers(NewTransfers):
    """New transfers that a weak reference can watch (`NewTransfers` has slots only)."""


async def post_a_batch_and_drop_it(
    tx: LedgerTransaction, path: str, account_ids: list[int], watched: list[weakref.ref[Any]]
) -> None:
    """Build a batch, watch it, post it as the unit of work's last write, keep nothing."""
    if path == "post":
        transfers = WatchedTransfers(
            Transfer(
                id=new_id(),
                debit_account_id=account_ids[0],
                credit_account_id=account_ids[1],
                amount=index + 1,
                code=TransferCode.SYNTHETIC,
            )
            for index in range(3)
        )
        watched.append(weakref.ref(transfers))
        await tx.post(transfers, last=True)
        return
    batch = WatchedNewTransfers()
    for index in range(3):
        batch.add(
            transfer_id=new_id(),
            debit_account_id=account_ids[0],
            credit_account_id=account_ids[1],
            amount=index + 1,
            code=int(TransferCode.SYNTHETIC),
            rate_card_version=None,
            event_id=None,
            metadata_text=None,
        )
    watched.append(weakref.ref(batch))
    await tx.post_new(batch, last=True)


@pytest.mark.parametrize("path", ["post", "post_new"])
async def test_a_batch_is_kept_until_the_commit_and_let_go_after_it(
    engine: AsyncEngine, path: str
) -> None:
    ledger = Ledger(engine)
    account_ids = await make_accounts(
        ledger, f"freed-{path}", [AccountFlags.NONE, AccountFlags.NONE]
    )
    watched: list[weakref.ref[Any]] = []
    alive_at_commit: list[bool] = []

    def on_commit(conn: Any) -> None:
        alive_at_commit.append(all(ref() is not None for ref in watched))

    event.listen(engine.sync_engine, "commit", on_commit)
    try:
        async for tx in ledger.transactions():
            async with tx:
                await post_a_batch_and_drop_it(tx, path, account_ids, watched)
    finally:
        event.remove(engine.sync_engine, "commit", on_commit)
    assert len(watched) == 1
    assert alive_at_commit == [True]
    assert watched[0]() is None
