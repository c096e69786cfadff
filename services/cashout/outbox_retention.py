"""Published outbox rows are deleted once they are older than the retention.

A row is only transport once the broker has its message: nothing reads it again (what happened
to a cash-out stays in `cashout_transitions`, what an operator did in `operator_actions`), and
every cash-out leaves about five. `giftledger run` prunes its own deployment's rows (its topic
prefix) every `OUTBOX_PRUNE_INTERVAL_S`, in short transactions of at most
`OUTBOX_PRUNE_BATCH_MAX` rows, at most `OUTBOX_PRUNE_BATCHES_PER_ROUND_MAX` of them a round, so
a first prune of a long history is spread over several rounds instead of one long lock.

A row's age is its `created_at`. The published rows of a prefix are indexed by it
(`outbox_published_by_age`, migration 0025), so a prune reads the rows it deletes and stops at the
cutoff, never the recent ones. A row not yet published is never deleted: the database refuses
it for every role (migration 0025).
"""

from __future__ import annotations

from sqlalchemy import text

from ledger.service import Ledger

OUTBOX_PRUNE_INTERVAL_S = 60.0
OUTBOX_PRUNE_BATCH_MAX = 5_000
OUTBOX_PRUNE_BATCHES_PER_ROUND_MAX = 20

# `now()`, not `clock_timestamp()`: a stable cutoff bounds the index scan; a volatile one is
# only a filter, and a prune with nothing to delete read every published row of the prefix.
_PRUNE_BATCH = text(
    """
    DELETE FROM outbox
    WHERE id = ANY(ARRAY(
        SELECT id FROM outbox
        WHERE topic_prefix = :prefix AND published_at IS NOT NULL
          AND created_at < now() - make_interval(hours => CAST(:retention_hours AS integer))
        ORDER BY created_at
        LIMIT :limit
    ))
    """
)


async def prune_published(
    ledger: Ledger,
    topic_prefix: str,
    retention_hours: int,
    *,
    batch_max: int = OUTBOX_PRUNE_BATCH_MAX,
    batches_max: int = OUTBOX_PRUNE_BATCHES_PER_ROUND_MAX,
) -> int:
    """Delete the deployment's published rows created more than `retention_hours` ago, at most
    `batches_max` transactions of at most `batch_max` rows; returns how many were deleted."""
    if retention_hours < 1:
        raise ValueError("retention_hours must be at least 1")
    if not 1 <= batch_max <= OUTBOX_PRUNE_BATCH_MAX:
        raise ValueError(f"batch_max must be between 1 and {OUTBOX_PRUNE_BATCH_MAX}")
    if batches_max < 1:
        raise ValueError("batches_max must be at least 1")
    deleted = 0
    for _ in range(batches_max):
        async with ledger.begin() as conn:
            result = await conn.execute(
                _PRUNE_BATCH,
                {"retention_hours": retention_hours, "prefix": topic_prefix, "limit": batch_max},
            )
        count = result.rowcount
        deleted += count
        if count < batch_max:
            break
    return deleted
