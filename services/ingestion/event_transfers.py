"""What each input event does to the ledger, as a list of legs (one transfer each).

Every leg of one event is posted as a linked chain, so an event is applied whole or not at all.
Transfer ids are derived from (topic, event_id, leg), so a redelivered event maps to the same
transfers and the ledger's idempotency does the rest. A gift's id also begins with its
`occurred_at` (`gift_transfer_id`), so that gifts, most of the ledger's rows, insert near the
right edge of the transfer id indexes however large they grow.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any, NamedTuple

from ledger import chart
from ledger.chart import AccountKind, AccountSpec
from ledger.ids import timed_transfer_id, transfer_id
from ledger.model import TransferCode
from schemas import topics
from schemas.events import (
    FundRewarded,
    GiftReversed,
    GiftSent,
    MarketplacePaid,
    TipReceived,
)
from services.rates.rate_cards import RateCard


@dataclass(frozen=True, slots=True)
class Leg:
    name: str
    debit: AccountSpec
    credit: AccountSpec
    amount: int
    code: TransferCode
    metadata: dict[str, Any] | None = None


class GiftTransfer(NamedTuple):
    """What one gift posts: the creator's share of its coins, issued as diamonds, debiting
    `GIFT_DIAMOND_SOURCE`. The coin side of a batch of gifts is one transfer per rate card
    version (`batch_coin_leg`), not one per gift: a gift then costs one ledger row, and coins and
    diamonds still reconcile per rate card version."""

    transfer_id: uuid.UUID
    creator_account: AccountSpec
    milli_diamonds: int
    rate_card_version: int
    metadata_text: str


GIFT_DIAMOND_SOURCE = chart.platform(AccountKind.DIAMOND_ISSUANCE, "DIAMOND")
_json_string = encode_basestring  # a JSON string literal, non-ASCII characters kept as they are


def gift_metadata_text(event: GiftSent) -> str:
    """The gift event's details as the ledger stores them (surface, gift, sender, the coins of
    all its gifts, how many gifts it sent, the video or LIVE), written out as
    `ledger.chain.metadata_json` writes them, keys sorted, no spaces: every gift needs this
    text, and a test holds it equal to the encoder's. One f-string per surface, the surface's
    name written as it is.

    `count` is recorded from migration 0042 on: the gifts report counts gifts by it. A gift
    booked before has none (and its coins, the gifts' coins summed, do not tell it)."""
    coins = event.coins * event.count
    if event.surface == "video":
        assert event.video_id is not None  # the model holds the surface and its id together
        return (
            f'{{"coins":{coins},"count":{event.count},"gift_id":{_json_string(event.gift_id)},'
            f'"sender_id":{_json_string(event.sender_id)},"surface":"video",'
            f'"video_id":{_json_string(event.video_id)}}}'
        )
    assert event.live_id is not None
    return (
        f'{{"coins":{coins},"count":{event.count},"gift_id":{_json_string(event.gift_id)},'
        f'"live_id":{_json_string(event.live_id)},'
        f'"sender_id":{_json_string(event.sender_id)},"surface":"live"}}'
    )


# `GiftTransfer(...)` runs the named tuple's `__new__`, a Python function; building the tuple
# directly skips that call on every gift.
_new_gift_transfer = tuple.__new__


GIFT_LEG = "diamonds"


def gift_transfer_id(event_id: str, occurred_at: datetime) -> uuid.UUID:
    """The id of a gift's transfer: time-ordered by the gift's `occurred_at`, derived from its
    event_id (`ledger.ids.timed_transfer_id`), so every delivery of the gift gives the same id.

    Gifts stored before this id was used have `legacy_gift_transfer_id` (name-based, random in
    order); a reversal looks its gift up under both."""
    return timed_transfer_id(topics.GIFTS_SENT, event_id, GIFT_LEG, occurred_at)


def legacy_gift_transfer_id(event_id: str) -> uuid.UUID:
    """The name-based id that gifts had before `gift_transfer_id`: read, never written."""
    return transfer_id(topics.GIFTS_SENT, event_id, GIFT_LEG)


def gift_transfer(event: GiftSent, card: RateCard) -> GiftTransfer:
    return _new_gift_transfer(
        GiftTransfer,
        (
            timed_transfer_id(topics.GIFTS_SENT, event.event_id, GIFT_LEG, event.occurred_at),
            chart.creator_diamonds_available(event.creator_id),
            card.gift_milli_diamonds(event.coins, event.count),
            card.version,
            gift_metadata_text(event),
        ),
    )


def batch_coin_leg(coins: int, gift_count: int) -> Leg:
    """The coins of the gifts applied in one transaction: fans' spent coins become revenue.
    `gift_count` (kept in its metadata under that name) is how many gift events, so gift
    transfers, it sums the coins of, not how many gifts they sent."""
    return Leg(
        "coins",
        chart.platform(AccountKind.COINS_SPENT, "COIN"),
        chart.platform(AccountKind.COIN_GIFT_REVENUE, "COIN"),
        coins,
        TransferCode.GIFT_COINS,
        {"gift_count": gift_count},
    )


def reversal_legs(event: GiftReversed, coins: int, milli_diamonds: int) -> list[Leg]:
    """Undo a gift with new transfers: diamonds come back from the creator (even into a negative
    balance, which later earnings repay) and the coins go back to the fan's side."""
    details = {"gift_event_id": event.gift_event_id, "reason": event.reason}
    return [
        Leg(
            "coins",
            chart.platform(AccountKind.COIN_GIFT_REVENUE, "COIN"),
            chart.platform(AccountKind.COINS_SPENT, "COIN"),
            coins,
            TransferCode.GIFT_REVERSAL_COINS,
        ),
        Leg(
            "diamonds",
            chart.creator_diamonds_available(event.creator_id),
            chart.platform(AccountKind.DIAMOND_ISSUANCE, "DIAMOND"),
            milli_diamonds,
            TransferCode.GIFT_REVERSAL_DIAMONDS,
            details,
        ),
    ]


TIP_LEG = "tip"  # the creator's credit, in every tip


def tip_legs(event: TipReceived) -> list[Leg]:
    """The creator gets 100 % of the tip; the fan's fee is platform revenue; the processor's fee
    is the platform's cost. The processor settles amount + fan fee - processor fee to clearing."""
    clearing = chart.platform(AccountKind.TIPS_CLEARING, event.currency)
    details = {"charge_id": event.charge_id, "sender_id": event.sender_id}
    legs = [
        Leg(
            TIP_LEG,
            clearing,
            chart.creator_wallet(event.creator_id, event.currency),
            event.amount,
            TransferCode.TIP,
            details,
        )
    ]
    if event.fan_fee > 0:
        legs.append(
            Leg(
                "fan_fee",
                clearing,
                chart.platform(AccountKind.TIP_FEES, event.currency),
                event.fan_fee,
                TransferCode.TIP_FAN_FEE,
            )
        )
    if event.processor_fee > 0:
        legs.append(
            Leg(
                "processor_fee",
                chart.platform(AccountKind.PROCESSOR_FEES, event.currency),
                clearing,
                event.processor_fee,
                TransferCode.TIP_PROCESSOR_FEE,
            )
        )
    return legs


def fund_legs(event: FundRewarded) -> list[Leg]:
    return [
        Leg(
            "reward",
            chart.platform(AccountKind.CREATOR_FUND_EXPENSE, event.currency),
            chart.creator_wallet(event.creator_id, event.currency),
            event.amount,
            TransferCode.FUND_REWARD,
            {"period": event.period},
        )
    ]


def marketplace_legs(event: MarketplacePaid) -> list[Leg]:
    """The brand's payment lands in clearing; the creator gets it less the platform's fee."""
    clearing = chart.platform(AccountKind.MARKETPLACE_CLEARING, event.currency)
    details = {"brand_id": event.brand_id, "deal_id": event.deal_id}
    legs = [
        Leg(
            "payment",
            clearing,
            chart.creator_wallet(event.creator_id, event.currency),
            event.amount - event.platform_fee,
            TransferCode.MARKETPLACE_PAYMENT,
            details,
        )
    ]
    if event.platform_fee > 0:
        legs.append(
            Leg(
                "platform_fee",
                clearing,
                chart.platform(AccountKind.MARKETPLACE_FEES, event.currency),
                event.platform_fee,
                TransferCode.MARKETPLACE_FEE,
            )
        )
    return legs
