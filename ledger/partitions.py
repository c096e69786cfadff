"""The monthly partitions of `transfers`, kept ahead of time.

`transfers` is partitioned by month on its commit time, with a default partition for rows whose
month has none. `keep_transfer_partitions` (the SQL function of migration 0013, run as the
schema's owner) moves any rows of the default partition into their month, creates this month and
the next `months_ahead`, and answers how many months after the current one are ready. `migrate`
calls it as the owner; `giftledger run` calls it daily as the writer role, which may call that
function and none of the ones it uses. Both keep the months of the
`TRANSFER_PARTITION_MONTHS_AHEAD` setting, whose default is the constant below.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

TRANSFER_PARTITION_MONTHS_AHEAD = 3
TRANSFER_PARTITION_MONTHS_AHEAD_MAX = 36


async def keep_transfer_partitions(
    engine: AsyncEngine, months_ahead: int, *, lock_timeout_ms: int | None = None
) -> int:
    """Move the default partition's rows to their months and create the coming months, in one
    transaction; return the months after the current one that have a partition.

    With `lock_timeout_ms`, waiting for the lock on `transfers` (only taken when there is
    something to do) fails after that long instead of holding up the writers queued behind it.
    """
    assert 0 <= months_ahead <= TRANSFER_PARTITION_MONTHS_AHEAD_MAX, months_ahead
    async with engine.begin() as conn:
        if lock_timeout_ms is not None:
            await conn.execute(
                text("SELECT set_config('lock_timeout', :timeout, true)"),
                {"timeout": f"{lock_timeout_ms}ms"},
            )
        ready = await conn.scalar(
            text("SELECT keep_transfer_partitions(:months)"), {"months": months_ahead}
        )
    return int(ready)


async def transfer_partition_months_ahead(engine: AsyncEngine) -> int:
    """The months after the current one (UTC) that have a partition, up to the first without
    one; -1 when the current month has none. Reads the catalog only."""
    async with engine.connect() as conn:
        ready = await conn.scalar(text("SELECT transfer_partition_months_ahead()"))
    return int(ready)
