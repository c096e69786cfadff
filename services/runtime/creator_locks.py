"""A creator's cash-out lock: a transaction-scoped PostgreSQL advisory lock per creator, which
whatever decides on a creator's cash-outs holds until its commit: the cash-out desk's requests
(the daily limit is read and used under it), an operator's resubmission, and a freeze or an
unfreeze (so that a batch of requests that read the creator unfrozen commits before the freeze
does, never after it)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

CREATOR_LOCK_NAMESPACE = b"giftledger.cashout.creator:"


def creator_lock_key(creator_id: str) -> int:
    """The advisory lock key of a creator's cash-outs: the first 8 bytes of a SHA-256 of the
    creator id, as a signed 64-bit integer; the same in every process and on every server."""
    digest = hashlib.sha256(CREATOR_LOCK_NAMESPACE + creator_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def lock_creators(conn: AsyncConnection, creator_ids: Iterable[str]) -> None:
    """Take the cash-out locks of these creators until the transaction ends, in key order (so
    two transactions taking several never wait on each other in a cycle). Take them before any
    account lock of the transaction. Taking a lock the transaction holds already is a no-op."""
    keys = sorted({creator_lock_key(creator_id) for creator_id in creator_ids})
    if keys:  # unnest yields the sorted keys in array order, and each is locked as it comes
        await conn.execute(
            text(
                "SELECT pg_advisory_xact_lock(key) FROM unnest(CAST(:keys AS bigint[])) AS k(key)"
            ),
            {"keys": keys},
        )
