"""`Ledger`: the posting engine with its account directory, batching and bounded retries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.accounts import AccountDirectory
from ledger.model import PostResult, Transfer, TransferCode, TransferFlags
from ledger.posting import (
    AccountFacts,
    post_batch,
    run_with_conflict_retry,
    split_at_chain_boundaries,
)

EXPIRY_NAMESPACE = uuid.UUID("6f1d8f43-6a0b-4c34-9d44-5f0f5b7f3e61")
EXPIRY_BATCH_SIZE_MAX = 10_000


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
    ) -> None:
        self.engine = engine
        self.accounts = AccountDirectory(engine)
        self.account_facts = AccountFacts()
        self._batch_size_max = batch_size_max
        self._conflict_retry_count_max = conflict_retry_count_max

    async def post(self, transfers: Sequence[Transfer]) -> list[PostResult]:
        """Post transfers in batches of at most `batch_size_max`, one transaction each.

        Linked chains are never split across batches; results come back in input order.
        """
        results: list[PostResult] = []
        for batch in split_at_chain_boundaries(transfers, self._batch_size_max):
            outcome = await run_with_conflict_retry(
                self.engine,
                lambda conn, batch=batch: post_batch(conn, batch, self.account_facts),  # type: ignore[misc]
                self._conflict_retry_count_max,
            )
            results.extend(outcome.results)
        return results

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
