"""The transfer partitions `giftledger run` keeps ready: on start, then once a day.

Each round calls `ledger.partitions.keep_transfer_partitions` as the writer role (moving any rows
of the default partition to their month, creating the coming months) and sets the
`giftledger_transfer_partition_months_ahead` gauge from its answer. A round that fails (the lock
on `transfers` not granted within `lock_timeout_ms`, the database away) is logged, the gauge is
refreshed from the catalog alone where it can be, and the round is tried again after
`retry_interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.partitions import keep_transfer_partitions, transfer_partition_months_ahead
from services.runtime.database import error_reason
from services.runtime.metrics import TRANSFER_PARTITION_MONTHS_AHEAD

UPKEEP_INTERVAL_S = 86_400.0
UPKEEP_RETRY_INTERVAL_S = 300.0
UPKEEP_LOCK_TIMEOUT_MS = 5_000

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PartitionUpkeep:
    engine: AsyncEngine
    months_ahead: int
    interval_s: float = UPKEEP_INTERVAL_S
    retry_interval_s: float = UPKEEP_RETRY_INTERVAL_S
    lock_timeout_ms: int = UPKEEP_LOCK_TIMEOUT_MS

    async def keep_once(self) -> bool:
        """One round; True when the partitions were kept, False when it failed (logged)."""
        try:
            months_ready = await keep_transfer_partitions(
                self.engine, self.months_ahead, lock_timeout_ms=self.lock_timeout_ms
            )
        except (SQLAlchemyError, OSError) as error:
            logger.warning("transfer partition upkeep failed: %s", error_reason(error))
            await self._report_from_catalog()
            return False
        TRANSFER_PARTITION_MONTHS_AHEAD.set(months_ready)
        if months_ready < self.months_ahead:
            logger.warning(
                "transfer partitions ready %d months ahead, %d wanted",
                months_ready,
                self.months_ahead,
            )
        return True

    async def run_until(self, stop: asyncio.Event) -> None:
        """Rounds until `stop` is set: the next one after `interval_s`, or `retry_interval_s`
        after a failed one."""
        while not stop.is_set():
            kept = await self.keep_once()
            wait_s = self.interval_s if kept else self.retry_interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)

    async def _report_from_catalog(self) -> None:
        try:
            months_ready = await transfer_partition_months_ahead(self.engine)
        except (SQLAlchemyError, OSError) as error:
            logger.warning("cannot read the transfer partitions: %s", error_reason(error))
            return
        TRANSFER_PARTITION_MONTHS_AHEAD.set(months_ready)
