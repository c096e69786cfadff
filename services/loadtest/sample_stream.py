"""A small, deterministic sample stream for the demo: gifts on videos and LIVE streams, tips,
Creator Fund rewards, Marketplace payments, reversals, a redelivered gift, creator profiles
(eligible and not), a few bad records that must end in the dead-letter topics, and then
cash-out requests that pass or fail the rules.

Event ids depend only on the seed, so running the demo twice on the same database shows
exactly-once in effect: the second run applies nothing new.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import topics

SAMPLE_START = datetime(2026, 11, 1, 18, 0, tzinfo=UTC)
CREATOR_COUNT = 12
GIFT_CATALOGUE = (("rose", 1), ("finger-heart", 5), ("doughnut", 30), ("galaxy", 1_000))


@dataclass(frozen=True, slots=True)
class SampleRecord:
    topic: str
    key: str
    value: bytes


def _record(topic: str, event: dict[str, Any]) -> SampleRecord:
    return SampleRecord(topic, str(event["creator_id"]), json.dumps(event).encode())


def sample_stream(seed: int = 7, gift_count: int = 2_000) -> list[SampleRecord]:
    rng = random.Random(seed)
    creators = [f"creator-{index:02d}" for index in range(CREATOR_COUNT)]
    weights = [1 / (rank + 1) for rank in range(CREATOR_COUNT)]
    moment = SAMPLE_START
    records: list[SampleRecord] = []
    gifts: list[dict[str, Any]] = []
    for index in range(gift_count):
        moment += timedelta(milliseconds=rng.randint(5, 400))
        creator = rng.choices(creators, weights)[0]
        gift_id, coins = rng.choice(GIFT_CATALOGUE)
        live = rng.random() < 0.6
        event: dict[str, Any] = {
            "event_id": f"demo-gift-{seed}-{index}",
            "occurred_at": moment.isoformat(),
            "sender_id": f"fan-{rng.randint(1, 500)}",
            "creator_id": creator,
            "surface": "live" if live else "video",
            "gift_id": gift_id,
            "coins": coins,
            "count": rng.choice((1, 1, 1, 5, 10)),
        }
        event["live_id" if live else "video_id"] = f"{'live' if live else 'video'}-{creator}"
        gifts.append(event)
        records.append(_record(topics.GIFTS_SENT, event))
    records.append(records[10])  # a redelivered gift: applied once
    for index, gift in enumerate(gifts[::400]):
        reversal = {
            "event_id": f"demo-reversal-{seed}-{index}",
            "occurred_at": (moment + timedelta(seconds=index)).isoformat(),
            "creator_id": gift["creator_id"],
            "gift_event_id": gift["event_id"],
            "reason": ("refund", "chargeback", "fraud")[index % 3],
        }
        records.append(_record(topics.GIFTS_REVERSED, reversal))
    records.extend(_money_events(seed, creators, moment))
    records.extend(_profiles(seed, creators))
    records.extend(_bad_records(seed))
    return records


PROFILE_COUNTRIES = ("US", "GB", "DE", "FR", "IT", "ES")


def _profiles(seed: int, creators: list[str]) -> list[SampleRecord]:
    """Every creator is eligible but the last two: one in a country not yet enabled (CA), one
    with too few followers."""
    records = []
    for index, creator in enumerate(creators):
        profile = {
            "event_id": f"demo-profile-{seed}-{index}",
            "occurred_at": SAMPLE_START.isoformat(),
            "creator_id": creator,
            "birth_date": f"{1980 + index}-03-15",
            "country": "CA" if index == CREATOR_COUNT - 2 else PROFILE_COUNTRIES[index % 6],
            "followers": 500 if index == CREATOR_COUNT - 1 else 20_000 + 1_000 * index,
            "video_views_30d": 40_000,
            "posts_30d": 9,
            "in_good_standing": True,
            "identity_verified": True,
            "payout_account_ref": f"pa_demo_{index:02d}",
        }
        records.append(_record(topics.CREATORS_UPDATED, profile))
    return records


def sample_cashouts(seed: int = 7) -> list[SampleRecord]:
    """Cash-out requests, sent once the stream above is applied: most pass; some break the
    minimum, the balance, the daily limit or an eligibility rule."""
    moment = SAMPLE_START + timedelta(days=1)
    requests = [(f"creator-{index:02d}", 2_000) for index in range(8)]
    requests += [
        ("creator-00", 150_000),  # 750 USD, then 500 more: over the 1,000 USD daily limit
        ("creator-00", 100_000),
        ("creator-01", 1_500),  # under the minimum
        (f"creator-{CREATOR_COUNT - 2:02d}", 2_000),  # country not enabled
        (f"creator-{CREATOR_COUNT - 1:02d}", 2_000),  # too few followers
    ]
    records = []
    for index, (creator, diamonds) in enumerate(requests):
        request = {
            "event_id": f"demo-cashout-{seed}-{index}",
            "occurred_at": (moment + timedelta(minutes=index)).isoformat(),
            "creator_id": creator,
            "asset": "DIAMOND",
            "amount": diamonds,
            "payout_currency": "USD",
        }
        records.append(_record(topics.CASHOUTS_REQUESTED, request))
    return records


def _money_events(seed: int, creators: list[str], moment: datetime) -> list[SampleRecord]:
    records = []
    for index, creator in enumerate(creators[:6]):
        tip = {
            "event_id": f"demo-tip-{seed}-{index}",
            "occurred_at": moment.isoformat(),
            "sender_id": f"fan-{index}",
            "creator_id": creator,
            "amount": 500 + 100 * index,
            "currency": "USD",
            "fan_fee": 30,
            "processor_fee": 45,
            "charge_id": f"ch-{seed}-{index}",
        }
        records.append(_record(topics.TIPS_RECEIVED, tip))
    for index, creator in enumerate(creators[:3]):
        reward = {
            "event_id": f"demo-fund-{seed}-{index}",
            "occurred_at": moment.isoformat(),
            "creator_id": creator,
            "period": "2026-10",
            "amount": 2_500 * (index + 1),
            "currency": "EUR",
        }
        records.append(_record(topics.FUND_REWARDED, reward))
    deal = {
        "event_id": f"demo-deal-{seed}",
        "occurred_at": moment.isoformat(),
        "creator_id": creators[0],
        "brand_id": "brand-acme",
        "deal_id": "deal-2026-11",
        "amount": 150_000,
        "currency": "USD",
        "platform_fee": 30_000,
    }
    records.append(_record(topics.MARKETPLACE_PAID, deal))
    return records


def _bad_records(seed: int) -> list[SampleRecord]:
    negative_tip = {
        "event_id": f"demo-bad-tip-{seed}",
        "occurred_at": SAMPLE_START.isoformat(),
        "sender_id": "fan-1",
        "creator_id": "creator-00",
        "amount": -500,
        "currency": "USD",
        "fan_fee": 0,
        "processor_fee": 0,
        "charge_id": "ch-bad",
    }
    return [
        SampleRecord(topics.GIFTS_SENT, "creator-00", b'{"event_id": "broken'),
        _record(topics.TIPS_RECEIVED, negative_tip),
    ]
