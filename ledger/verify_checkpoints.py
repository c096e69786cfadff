"""Verify checkpoints: where the last clean `giftledger verify` ended (migration 0020).

A checkpoint records what a clean run reached: the head link of the transfers' hash chain and its
hash, how many transfers the chain named up to it and the highest `seq` among them, the last
month-end close whose balances it recomputed, the highest rolled day it checked (migration 0024),
and the run's clock. With it, every account whose
totals changed since the checkpoint before gets a row of its four totals as the run verified them;
an account's totals as of checkpoint N are its row with the highest checkpoint id up to N, or
zeros without one. So a checkpoint costs a row per account that moved, not one per account.

Checkpoints form one line: checkpoint N + 1 names N, and its id is fixed by that, so of two runs
that started from the same checkpoint only the first to commit writes one. Only a clean run
writes one, in the transaction it read the ledger in (see `ledger.verify.verify_ledger`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

ZERO_HASH: Final = bytes(32)
# A checkpoint with this id exists already, or was written by a run that committed after this
# one read the ledger.
_TAKEN_SQLSTATES: Final = frozenset({"23505", "40001"})


@dataclass(frozen=True, slots=True)
class Reached:
    """What a clean run verified, up to where."""

    link_id: int | None
    chain_hash: bytes
    linked_transfer_count: int
    seq_max: int
    close_id: int | None
    checked_at: datetime
    walked_transfer_count: int
    # The highest day of `rolled_days` checked (every day up to it too); None: none yet.
    rolled_day_max: date | None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: int
    previous_id: int | None
    full_check: bool
    reached: Reached
    verified_at: datetime


_COLUMNS: Final = """
    id, previous_id, full_check, link_id, chain_hash, linked_transfer_count, seq_max, close_id,
    checked_at, walked_transfer_count, rolled_day_max, verified_at
"""


def _checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(
        id=row.id,
        previous_id=row.previous_id,
        full_check=row.full_check,
        reached=Reached(
            link_id=row.link_id,
            chain_hash=bytes(row.chain_hash),
            linked_transfer_count=row.linked_transfer_count,
            seq_max=row.seq_max,
            close_id=row.close_id,
            checked_at=row.checked_at,
            walked_transfer_count=row.walked_transfer_count,
            rolled_day_max=row.rolled_day_max,
        ),
        verified_at=row.verified_at,
    )


async def checkpoints_kept(conn: AsyncConnection) -> bool:
    """Whether the database has the checkpoint tables (one that recorded revision 0020 while it
    was still empty has not)."""
    found = await conn.execute(text("SELECT to_regclass('verify_checkpoints') IS NOT NULL"))
    return bool(found.scalar_one())


async def latest_checkpoint(conn: AsyncConnection) -> Checkpoint | None:
    row = (
        await conn.execute(
            text(f"SELECT {_COLUMNS} FROM verify_checkpoints ORDER BY id DESC LIMIT 1")  # noqa: S608
        )
    ).first()
    return None if row is None else _checkpoint(row)


# Every account whose totals differ from its totals as of the checkpoint before (zeros without a
# row), as the run read them.
_WRITE_ACCOUNT_TOTALS: Final = text(
    """
    INSERT INTO verify_checkpoint_accounts (checkpoint_id, account_id, debits_posted_minor,
        credits_posted_minor, debits_pending_minor, credits_pending_minor)
    SELECT :id, a.id, a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending
    FROM accounts a
    LEFT JOIN LATERAL (
        SELECT c.debits_posted_minor, c.credits_posted_minor, c.debits_pending_minor,
               c.credits_pending_minor
        FROM verify_checkpoint_accounts c
        WHERE c.account_id = a.id AND c.checkpoint_id < :id
        ORDER BY c.checkpoint_id DESC LIMIT 1
    ) before ON true
    WHERE (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
       <> (coalesce(before.debits_posted_minor, 0), coalesce(before.credits_posted_minor, 0),
           coalesce(before.debits_pending_minor, 0), coalesce(before.credits_pending_minor, 0))
    """
)


async def write_checkpoint(
    conn: AsyncConnection, previous: Checkpoint | None, full_check: bool, reached: Reached
) -> Checkpoint | None:
    """Record a clean run, in the transaction that read the ledger; None when a checkpoint after
    `previous` was written meanwhile (by another run), in which case nothing is written."""
    checkpoint_id = 1 if previous is None else previous.id + 1
    try:
        async with conn.begin_nested():
            row = (
                await conn.execute(
                    text(
                        f"""
                        INSERT INTO verify_checkpoints (id, previous_id, full_check, link_id,
                            chain_hash, linked_transfer_count, seq_max, close_id, checked_at,
                            walked_transfer_count, rolled_day_max)
                        VALUES (:id, :previous_id, :full_check, :link_id, :chain_hash,
                            :linked_transfer_count, :seq_max, :close_id, :checked_at,
                            :walked_transfer_count, :rolled_day_max)
                        RETURNING {_COLUMNS}
                        """  # noqa: S608
                    ),
                    {
                        "id": checkpoint_id,
                        "previous_id": None if previous is None else previous.id,
                        "full_check": full_check,
                        "link_id": reached.link_id,
                        "chain_hash": reached.chain_hash,
                        "linked_transfer_count": reached.linked_transfer_count,
                        "seq_max": reached.seq_max,
                        "close_id": reached.close_id,
                        "checked_at": reached.checked_at,
                        "walked_transfer_count": reached.walked_transfer_count,
                        "rolled_day_max": reached.rolled_day_max,
                    },
                )
            ).one()
            await conn.execute(_WRITE_ACCOUNT_TOTALS, {"id": checkpoint_id})
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) in _TAKEN_SQLSTATES:
            return None
        raise
    return _checkpoint(row)
