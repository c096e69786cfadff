"""The ledger's batch path alone, for `bench.ingest_bench`: what the consumers' gifts cost the
ledger with no Kafka, no parsing and no idempotency record of the events.

The gifts are turned into the very transfers `services.ingestion.handlers.on_gifts_sent` posts
(one per gift, from `gift_transfer`, plus one coin transfer per rate card version and batch),
in batches of the consumers' batch size, before the clock starts. Then `writers` asyncio tasks
post them through one shared `Ledger` (built as the consumers build theirs), each batch in a
unit of work of its own: `async for tx in ledger.transactions(): async with tx: await
tx.post_new(batch, last=True)`, the call the handler makes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ledger.model import NewTransfers, TransferCode
from ledger.service import Ledger
from schemas.events import GiftSent
from services.ingestion.event_transfers import (
    GIFT_DIAMOND_SOURCE,
    batch_coin_leg,
    gift_transfer,
)
from services.ingestion.handlers import gift_batch
from services.rates.rate_cards import RateCardBook

_GIFT_DIAMONDS = int(TransferCode.GIFT_DIAMONDS)


@dataclass(frozen=True, slots=True)
class LedgerAlone:
    events: int
    coins: int
    batches: int
    writers: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds


async def prepare_batches(
    ledger: Ledger, gifts: Iterable[GiftSent], rate_cards: RateCardBook, batch_size: int
) -> tuple[list[NewTransfers], int, int]:
    """(batches, gifts, coins): every gift's transfer and each batch's coin transfers, with the
    accounts they name created, as the handler makes them."""
    coin_leg = batch_coin_leg(1, 1)
    fixed = await ledger.account_ids([GIFT_DIAMOND_SOURCE, coin_leg.debit, coin_leg.credit])
    planned = [
        (event, gift_transfer(event, rate_cards.in_force_at(event.occurred_at))) for event in gifts
    ]
    unique_specs = list(
        {gift.creator_account.name: gift.creator_account for _, gift in planned}.values()
    )
    account_ids = dict(fixed)
    account_ids.update(await ledger.account_ids(unique_specs))
    gifts_by_id = {event.event_id: gift for event, gift in planned}
    events = [event for event, _ in planned]
    batches = [
        gift_batch(events[start : start + batch_size], gifts_by_id, account_ids)
        for start in range(0, len(events), batch_size)
    ]
    coins_total = sum(event.coins * event.count for event in events)
    return batches, len(planned), coins_total


async def _writer(ledger: Ledger, batches: Sequence[NewTransfers]) -> None:
    for batch in batches:
        async for tx in ledger.transactions():
            async with tx:
                await tx.post_new(batch, last=True)


async def post_batches(ledger: Ledger, batches: Sequence[NewTransfers], writers: int) -> float:
    """Seconds `writers` tasks take to post `batches`, dealt out round robin."""
    started = time.perf_counter()
    await asyncio.gather(*(_writer(ledger, batches[index::writers]) for index in range(writers)))
    return time.perf_counter() - started
