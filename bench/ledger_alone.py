"""The ledger's batch path alone, for `bench.ingest_bench`: what the consumers' gifts cost the
ledger with no Kafka, no parsing and no idempotency record of the events.

The gifts are turned into the very transfers `services.ingestion.handlers.on_gifts_sent` posts
(one per gift, from `gift_transfer`, plus one coin transfer per rate card version and batch),
in batches of the consumers' batch size, before the clock starts. Then `writers` asyncio tasks
post them through one shared `Ledger` (built as the consumers build theirs), each batch in a
unit of work of its own: `async for tx in ledger.transactions(): async with tx: await
tx.post_new(batch)`, the call the handler makes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ledger.chain import metadata_json
from ledger.model import NewTransfers, TransferCode
from ledger.service import Ledger
from schemas.events import GiftSent
from services.ingestion.event_transfers import (
    GIFT_DIAMOND_SOURCE,
    batch_coin_leg,
    gift_transfer,
)
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
    source_id = account_ids[GIFT_DIAMOND_SOURCE.name]
    batches: list[NewTransfers] = []
    coins_total = 0
    for start in range(0, len(planned), batch_size):
        batch = NewTransfers()
        coins_by_version: dict[int, tuple[int, int]] = {}
        for event, gift in planned[start : start + batch_size]:
            batch.add(
                transfer_id=gift.transfer_id,
                debit_account_id=source_id,
                credit_account_id=account_ids[gift.creator_account.name],
                amount=gift.milli_diamonds,
                code=_GIFT_DIAMONDS,
                rate_card_version=gift.rate_card_version,
                event_id=event.event_id,
                metadata_text=gift.metadata_text,
            )
            coins, count = coins_by_version.get(gift.rate_card_version, (0, 0))
            coins_by_version[gift.rate_card_version] = (
                coins + event.coins * event.count,
                count + 1,
            )
        for version, (coins, count) in sorted(coins_by_version.items()):
            leg = batch_coin_leg(coins, count)
            batch.add(
                transfer_id=uuid.uuid4(),
                debit_account_id=account_ids[leg.debit.name],
                credit_account_id=account_ids[leg.credit.name],
                amount=leg.amount,
                code=int(leg.code),
                rate_card_version=version,
                event_id=None,
                metadata_text=metadata_json(leg.metadata),
            )
            coins_total += coins
        batches.append(batch)
    return batches, len(planned), coins_total


async def _writer(ledger: Ledger, batches: Sequence[NewTransfers]) -> None:
    for batch in batches:
        async for tx in ledger.transactions():
            async with tx:
                await tx.post_new(batch)


async def post_batches(ledger: Ledger, batches: Sequence[NewTransfers], writers: int) -> float:
    """Seconds `writers` tasks take to post `batches`, dealt out round robin."""
    started = time.perf_counter()
    await asyncio.gather(*(_writer(ledger, batches[index::writers]) for index in range(writers)))
    return time.perf_counter() - started
