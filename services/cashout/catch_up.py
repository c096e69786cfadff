"""The one-time catch-up of cash-outs booked before payables were settled (migration 0017).

Before 0017, a cash-out's hold was posted when the bank paid it, its money went to
`payouts_payable`, and nothing settled the payable. Migration 0017 lists the cash-outs that were
`paid` or `submitted` at that moment in `cashout_catch_ups`; `giftledger migrate` then gives each,
once, what the books give a cash-out now, with new transfers (rows are never changed):

- `paid`: its payable settled against cash at the bank by a transfer of its own code,
  `cashout_settled_catch_up`, whatever happened to it since (a later return undoes the
  settlement it finds, so it must be there).
- `submitted`: its submission (the hold posted, the Diamonds converted, the money payable), with
  the transfer ids the relay or the bank's answer would use, if it is still `submitted` with its
  hold pending; a cash-out a result has moved on since was booked by that result.

Each row is marked `caught_up_at` in the transaction that posts its transfers, so a second run
(or a run interrupted and started again) posts nothing twice; rows another run is taking are
skipped.
"""

from __future__ import annotations

from sqlalchemy import text

from ledger.service import Ledger, LedgerTransaction
from services.cashout.desk import diamonds_per_usd_of, hold_is_open, post_all
from services.cashout.postings import (
    cashout_accounts,
    catch_up_settlement_transfers,
    submission_transfers,
)
from services.cashout.store import load_cashouts

CATCH_UP_BATCH_SIZE_MAX = 200
CATCH_UP_BATCH_COUNT_MAX = 1_000_000

_TAKE_ROWS = text(
    """
    SELECT cashout_id, status_migrated FROM cashout_catch_ups
    WHERE caught_up_at IS NULL
    ORDER BY cashout_id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)
_MARK_ROW = text(
    "UPDATE cashout_catch_ups SET caught_up_at = clock_timestamp() WHERE cashout_id = :id"
)


async def catch_up_cashouts(ledger: Ledger, batch_size_max: int = CATCH_UP_BATCH_SIZE_MAX) -> int:
    """Catch up every listed cash-out not caught up yet, `batch_size_max` per transaction;
    returns how many were caught up."""
    if not 1 <= batch_size_max <= CATCH_UP_BATCH_SIZE_MAX:
        raise ValueError(f"batch_size_max must be between 1 and {CATCH_UP_BATCH_SIZE_MAX}")
    caught_up = 0
    for _ in range(CATCH_UP_BATCH_COUNT_MAX):
        count = 0
        async for tx in ledger.transactions():
            async with tx:
                count = await _catch_up_batch(tx, ledger, batch_size_max)
        if count == 0:
            return caught_up
        caught_up += count
    raise RuntimeError(f"the catch-up did not end within {CATCH_UP_BATCH_COUNT_MAX} batches")


async def _catch_up_batch(tx: LedgerTransaction, ledger: Ledger, limit: int) -> int:
    conn = tx.connection
    rows = (await conn.execute(_TAKE_ROWS, {"limit": limit})).all()
    cashouts = await load_cashouts(conn, [row.cashout_id for row in rows], lock=True)
    for row in rows:
        cashout = cashouts[row.cashout_id]  # listed cash-outs exist (a foreign key)
        account_ids = await ledger.account_ids_in(conn, cashout_accounts(cashout))
        if row.status_migrated == "paid":
            await post_all(tx, cashout, catch_up_settlement_transfers(cashout, account_ids))
        elif cashout.status == "submitted" and await hold_is_open(tx, cashout):
            diamonds_per_usd = await diamonds_per_usd_of(conn, cashout)
            transfers = submission_transfers(cashout, diamonds_per_usd, account_ids)
            await post_all(tx, cashout, transfers)
        await conn.execute(_MARK_ROW, {"id": row.cashout_id})
    return len(rows)
