"""One creator's mixed events, each under a label, for tests that publish or apply them in
different orders and compare what does not depend on the order.

Three profile updates (`profile-new` is the newest: the latest `occurred_at`, and the greater
`event_id` of the two at that instant), three gifts, a reversal of the second gift, a copy of the
first gift (a duplicate), a tip, and two cash-out requests of 2,000 Diamonds (10 USD each).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schemas import topics
from tests import event_factory as make

PROFILE_LABELS = ("profile-old", "profile-tie", "profile-new")
NEWEST_PROFILE = "profile-new"
NEWEST_FOLLOWERS = 30_000
NEWEST_PAYOUT_ACCOUNT_REF = "pa-newest"
# The rule each profile update fails (None: eligible); no profile at all fails `profile_known`.
PROFILE_RULE_FAILED = {"profile-old": "followers", "profile-tie": "in_good_standing"}
GIFT_LABELS = ("gift-1", "gift-2", "gift-3")
DUPLICATE_LABEL = "gift-1-again"
REVERSAL_LABEL = "reversal-2"
TIP_LABEL = "tip"
CASHOUT_LABELS = ("cashout-1", "cashout-2")
ALL_LABELS = (
    *PROFILE_LABELS,
    *GIFT_LABELS,
    DUPLICATE_LABEL,
    REVERSAL_LABEL,
    TIP_LABEL,
    *CASHOUT_LABELS,
)

# (coins per gift, count): 1 coin is 500 milli-diamonds on the default rate card.
GIFT_COINS = {"gift-1": (2, 4_000), "gift-2": (10, 1), "gift-3": (2, 1_000)}
MILLI_DIAMONDS_PER_COIN = 500
CASHOUT_DIAMONDS = 2_000
CASHOUT_MILLI_DIAMONDS = CASHOUT_DIAMONDS * 1_000
CASHOUT_USD_CENTS = 1_000
TIP_USD_CENTS = 500

# What every order ends with once everything is applied: gift-2 is reversed, the copy of gift-1
# changes nothing, a hold is pending and leaves the posted balance as it is.
DIAMONDS_POSTED_MILLI = sum(
    coins * count * MILLI_DIAMONDS_PER_COIN
    for label, (coins, count) in GIFT_COINS.items()
    if label != "gift-2"
)
DISTINCT_EVENT_COUNT = len(ALL_LABELS) - 1  # the copy of gift-1 is the same event


@dataclass(frozen=True, slots=True)
class LabelledEvent:
    label: str
    topic: str
    event: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.event["event_id"])

    def encode(self) -> bytes:
        return json.dumps(self.event).encode()


def creator_events(creator_id: str, now: datetime) -> dict[str, LabelledEvent]:
    """Every labelled event of `creator_id`, with event ids made from it (so unique to it)."""
    ids = {label: f"{creator_id}.{position:02d}" for position, label in enumerate(ALL_LABELS)}
    ids[DUPLICATE_LABEL] = ids["gift-1"]
    moment = now.isoformat()
    events: dict[str, LabelledEvent] = {}

    def add(label: str, topic: str, event: dict[str, Any]) -> None:
        event = {**event, "event_id": ids[label]}
        events[label] = LabelledEvent(label, topic, event)

    for label, facts in _profile_facts(now).items():
        add(label, topics.CREATORS_UPDATED, {**make.creator_update(creator_id), **facts})
    for label, (coins, count) in GIFT_COINS.items():
        gift = {**make.gift(creator_id, coins=coins, count=count), "occurred_at": moment}
        add(label, topics.GIFTS_SENT, gift)
    events[DUPLICATE_LABEL] = LabelledEvent(
        DUPLICATE_LABEL, topics.GIFTS_SENT, events["gift-1"].event
    )
    reversal = make.reversal(creator_id, ids["gift-2"])
    add(REVERSAL_LABEL, topics.GIFTS_REVERSED, {**reversal, "occurred_at": moment})
    tip = make.tip(creator_id, TIP_USD_CENTS, 25, 30)
    add(TIP_LABEL, topics.TIPS_RECEIVED, {**tip, "occurred_at": moment})
    for label in CASHOUT_LABELS:
        request = make.cashout_request(creator_id, CASHOUT_DIAMONDS)
        add(label, topics.CASHOUTS_REQUESTED, {**request, "occurred_at": moment})
    return events


def _profile_facts(now: datetime) -> dict[str, dict[str, Any]]:
    """The older two fail a rule each (`PROFILE_RULE_FAILED`); only the newest is eligible."""
    return {
        "profile-old": {
            "occurred_at": (now - timedelta(hours=2)).isoformat(),
            "followers": 900,
            "payout_account_ref": "pa-old",
        },
        "profile-tie": {
            "occurred_at": (now - timedelta(hours=1)).isoformat(),
            "in_good_standing": False,
            "payout_account_ref": "pa-tie",
        },
        NEWEST_PROFILE: {
            "occurred_at": (now - timedelta(hours=1)).isoformat(),
            "followers": NEWEST_FOLLOWERS,
            "payout_account_ref": NEWEST_PAYOUT_ACCOUNT_REF,
        },
    }
