"""The outbox relay: sends what the cash-out desk wrote to the `outbox` table (`payouts.requested`
to the bank, `cashouts.updated` to everyone) and marks it published; a payout request that left
moves its cash-out from `held` to `submitted`."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from ledger.service import Ledger
from schemas import topics
from schemas.events import PayoutRequested
from services.cashout.desk import CashoutDesk

OUTBOX_POLL_INTERVAL_S = 0.2
OUTBOX_BATCH_SIZE_MAX = 500
OUTBOX_SEND_TIMEOUT_S = 30.0


class OutboxRelay:
    """Publishes one deployment's outbox rows (its topic prefix) with the given producer."""

    def __init__(self, ledger: Ledger, desk: CashoutDesk, producer: Any) -> None:
        self._ledger = ledger
        self._desk = desk
        self._producer = producer

    async def publish_once(self, limit: int = OUTBOX_BATCH_SIZE_MAX) -> int:
        """Send the oldest unpublished outbox messages of this deployment, then mark them
        published, in one transaction; returns how many. A crash between the send and the
        commit sends them again (at least once): `payouts.requested` is deduplicated by
        cashout_id, `cashouts.updated` by event_id."""
        prefix = self._desk.topic_prefix
        async with self._ledger.begin() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT id, topic, message_key, payload FROM outbox"
                        " WHERE published_at IS NULL AND topic_prefix = :prefix"
                        " ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED"
                    ),
                    {"prefix": prefix, "limit": limit},
                )
            ).all()
            if not rows:
                return 0
            sends = [
                await self._producer.send(
                    topics.prefixed(prefix, row.topic),
                    value=bytes(row.payload),
                    key=row.message_key.encode(),
                )
                for row in rows
            ]
            await asyncio.wait_for(asyncio.gather(*sends), OUTBOX_SEND_TIMEOUT_S)
            await conn.execute(
                text("UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY(:ids)"),
                {"ids": [row.id for row in rows]},
            )
            for row in rows:
                if row.topic == topics.PAYOUTS_REQUESTED:
                    payout = PayoutRequested.model_validate_json(bytes(row.payload))
                    await self._desk.mark_submitted(conn, payout.cashout_id)
        return len(rows)
