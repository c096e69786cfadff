"""The per-day totals `giftledger run` keeps up to date (`ledger.rollups`): a round on start, then
one an hour, as the writer role.

A round rolls at most `ledger.rollups.DAYS_PER_ROUND_MAX` final days (a day is final
`ledger.rollups.FINAL_AFTER` after its end, once the batches in flight have committed), so a
day is rolled within about an hour and a quarter of its end. A round that rolled as many days as
it may (a backlog: the first start on a ledger with history) is followed by the next one after
`backlog_pause_s`. A round that fails (the wait for the batches in flight timed out, the database
away) is logged and tried again at the next round; the readers scan the transfers of the days
not rolled, so a late roll-up slows them down and changes none of their figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.rollups import DAYS_PER_ROUND_MAX, roll_days
from services.runtime.database import error_reason

ROLLUP_INTERVAL_S = 3_600.0
ROLLUP_BACKLOG_PAUSE_S = 1.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DayRollup:
    engine: AsyncEngine
    interval_s: float = ROLLUP_INTERVAL_S
    backlog_pause_s: float = ROLLUP_BACKLOG_PAUSE_S

    async def roll_once(self) -> int:
        """One round; how many days it rolled (0 when it failed, logged)."""
        try:
            rolled = await roll_days(self.engine)
        except (SQLAlchemyError, OSError) as error:
            logger.warning("day roll-up failed: %s", error_reason(error))
            return 0
        if rolled:
            logger.info("rolled up %d days, %s to %s", len(rolled), rolled[0], rolled[-1])
        return len(rolled)

    async def run_until(self, stop: asyncio.Event) -> None:
        """Rounds until `stop` is set: the next one after `interval_s`, or `backlog_pause_s`
        after a round that rolled as many days as it may."""
        while not stop.is_set():
            rolled_count = await self.roll_once()
            wait_s = self.backlog_pause_s if rolled_count >= DAYS_PER_ROUND_MAX else self.interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
