"""Tips, Creator Fund rewards and Marketplace payments in the load-test stream
(`services.loadtest.generator`), in several currencies. Each credits the creator's currency
wallet: tips 100 % of `amount`, fund rewards `amount`, Marketplace payments
`amount - platform_fee`."""

from __future__ import annotations

import itertools

from schemas import topics
from services.loadtest.creator_profiles import CreatorProfiles
from services.loadtest.stream_context import StreamContext

TIP_CURRENCIES = (("USD", 60), ("EUR", 20), ("GBP", 15), ("JPY", 5))
MONEY_CURRENCIES = (("USD", 70), ("EUR", 20), ("GBP", 10))
TIP_CURRENCY_NAMES = [name for name, _ in TIP_CURRENCIES]
TIP_CURRENCY_CUMULATIVE = list(itertools.accumulate(weight for _, weight in TIP_CURRENCIES))
MONEY_CURRENCY_NAMES = [name for name, _ in MONEY_CURRENCIES]
MONEY_CURRENCY_CUMULATIVE = list(itertools.accumulate(weight for _, weight in MONEY_CURRENCIES))


class MoneyEvents:
    """Tips, fund rewards and Marketplace payments, crediting the creators' currency wallets in
    the stream's tally."""

    def __init__(self, stream: StreamContext, creators: CreatorProfiles) -> None:
        self.stream = stream
        self.creators = creators
        self.rng = stream.rng

    def credit_wallet(self, rank: int, currency: str, amount: int) -> None:
        wallets = self.stream.tally.wallets
        wallets[(rank, currency)] = wallets.get((rank, currency), 0) + amount

    def tip(self) -> bool:
        rng = self.rng
        stream = self.stream
        rank = stream.zipf_rank()
        self.creators.meet(rank)
        currency = rng.choices(TIP_CURRENCY_NAMES, cum_weights=TIP_CURRENCY_CUMULATIVE)[0]
        amount = rng.randint(100, 5_000) if currency == "JPY" else rng.randint(100, 20_000)
        event = {
            "event_id": stream.next_id("t"),
            "occurred_at": stream.iso(stream.now_ms()),
            "sender_id": f"fan-{rng.randrange(2_000_000)}",
            "creator_id": stream.creator_id(rank),
            "amount": amount,
            "currency": currency,
            "fan_fee": amount // 20,
            "processor_fee": amount * 3 // 100 + (30 if currency != "JPY" else 0),
            "charge_id": f"ch_{stream.ns}_{stream.serial}",
        }
        self.credit_wallet(rank, currency, amount)
        stream.tally.totals["tips"] += 1
        stream.dispatch(
            stream.applied_event(topics.TIPS_RECEIVED, event, replayable=True, conflictable=event)
        )
        return True

    def money_currency(self) -> str:
        return self.rng.choices(MONEY_CURRENCY_NAMES, cum_weights=MONEY_CURRENCY_CUMULATIVE)[0]

    def fund_reward(self) -> bool:
        stream = self.stream
        rank = stream.zipf_rank()
        self.creators.meet(rank)
        currency = self.money_currency()
        amount = self.rng.randint(500, 200_000)
        event = {
            "event_id": stream.next_id("f"),
            "occurred_at": stream.iso(stream.now_ms()),
            "creator_id": stream.creator_id(rank),
            "period": "2026-10",
            "amount": amount,
            "currency": currency,
        }
        self.credit_wallet(rank, currency, amount)
        stream.tally.totals["fund_rewards"] += 1
        stream.dispatch(
            stream.applied_event(topics.FUND_REWARDED, event, replayable=True, conflictable=event)
        )
        return True

    def marketplace(self) -> bool:
        stream = self.stream
        rank = stream.zipf_rank()
        self.creators.meet(rank)
        currency = self.money_currency()
        amount = self.rng.randint(10_000, 5_000_000)
        fee = amount * self.rng.randint(5, 20) // 100
        event = {
            "event_id": stream.next_id("m"),
            "occurred_at": stream.iso(stream.now_ms()),
            "creator_id": stream.creator_id(rank),
            "brand_id": f"brand-{self.rng.randrange(500)}",
            "deal_id": f"deal-{stream.ns}-{stream.serial}",
            "amount": amount,
            "currency": currency,
            "platform_fee": fee,
        }
        self.credit_wallet(rank, currency, amount - fee)
        stream.tally.totals["marketplace_payments"] += 1
        stream.dispatch(
            stream.applied_event(
                topics.MARKETPLACE_PAID, event, replayable=True, conflictable=event
            )
        )
        return True
