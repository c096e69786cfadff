"""Gifts and their reversals in the load-test stream (`services.loadtest.generator`).

- Gifts: LIVE sessions (a few at once, with bursts of gifts a few milliseconds apart and combo
  gifts, `count` > 1) and gifts on videos. Creators are Zipf-distributed, and a few stars get
  most LIVE sessions. Each applied gift credits sum(coins * count) * 500 milli-diamonds.
- Reversals of recent gifts (picked from a bounded ring of recent gifts), some sent before their
  gift (the gift is delayed: the ledger parks the reversal until the gift arrives). Each takes
  back its gift's diamonds.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas import topics
from services.loadtest.creator_profiles import CreatorProfiles
from services.loadtest.oracle import MILLI_DIAMONDS_PER_COIN
from services.loadtest.stream_context import Outgoing, StreamContext
from services.loadtest.stream_format import gift_json

LIVE_SESSIONS_MAX = 6
STAR_COUNT = 3
STAR_LIVE_SHARE = 0.5
LIVE_SHARE = 0.6
BURST_START_SHARE = 0.05
BURST_SPEEDUP = 8.0
LIVE_COMBO_SHARE = 0.25
VIDEO_COMBO_SHARE = 0.05
COMBO_COUNTS = (2, 3, 5, 10, 10, 99)
GIFT_CATALOGUE: tuple[tuple[str, int, int], ...] = (
    ("rose", 1, 30),
    ("finger-heart", 5, 20),
    ("doughnut", 30, 15),
    ("hand-hearts", 100, 15),
    ("sunglasses", 199, 8),
    ("galaxy", 1_000, 8),
    ("lion", 5_000, 3),
    ("universe", 34_999, 1),
)
REVERSAL_REASONS = ("refund", "chargeback", "fraud", "policy")


@dataclass(slots=True)
class Live:
    creator: int
    live_id: str
    remaining: int


class GiftEvents:
    """Gifts (LIVE sessions, their bursts, videos) and reversals, crediting and debiting the
    creators' diamonds in the stream's tally."""

    def __init__(self, stream: StreamContext, creators: CreatorProfiles) -> None:
        self.stream = stream
        self.creators = creators
        self.rng = stream.rng
        self.gift_cumulative = list(itertools.accumulate(weight for _, _, weight in GIFT_CATALOGUE))
        self.lives: list[Live] = []
        self.burst_left = 0
        self.burst_live: Live | None = None
        # A scenario that keeps some gifts for later (`services.loadtest.scenarios`): called with
        # each new gift's record, True when it took the record.
        self.gift_taker: Callable[[Outgoing], bool] | None = None

    def burst_gift(self) -> bool:
        """The next gift of a running burst, if one is running."""
        if self.burst_left > 0 and self.burst_live is not None:
            self.burst_left -= 1
            self.stream.advance(BURST_SPEEDUP)
            self.live_gift(self.burst_live)
            return True
        return False

    def gift(self) -> None:
        rng = self.rng
        if rng.random() < LIVE_SHARE:
            live = self.pick_live()
            if rng.random() < BURST_START_SHARE:
                self.burst_left = rng.randint(5, 40)
                self.burst_live = live
            self.live_gift(live)
            return
        rank = self.stream.zipf_rank()
        place = {"surface": "video", "video_id": f"{self.stream.ns}-v{rank}-{rng.randrange(30)}"}
        self.emit_gift(rank, place, VIDEO_COMBO_SHARE)

    def pick_live(self) -> Live:
        rng = self.rng
        if not self.lives or (len(self.lives) < LIVE_SESSIONS_MAX and rng.random() < 0.02):
            star = rng.random() < STAR_LIVE_SHARE
            rank = rng.randint(1, STAR_COUNT) if star else self.stream.zipf_rank()
            self.lives.append(Live(rank, self.stream.next_id("live"), rng.randint(20, 2_000)))
        return rng.choice(self.lives)

    def live_gift(self, live: Live) -> None:
        place = {"surface": "live", "live_id": live.live_id}
        self.emit_gift(live.creator, place, LIVE_COMBO_SHARE)
        live.remaining -= 1
        if live.remaining <= 0:
            self.lives.remove(live)
            if self.burst_live is live:
                self.burst_left, self.burst_live = 0, None

    def gift_event(
        self, rank: int, place: dict[str, str], combo_share: float, occurred_ms: int | None = None
    ) -> dict[str, Any]:
        rng = self.rng
        stream = self.stream
        index = bisect.bisect_left(self.gift_cumulative, rng.random() * self.gift_cumulative[-1])
        name, coins, _ = GIFT_CATALOGUE[index]
        event: dict[str, Any] = {
            "event_id": stream.next_id("g"),
            "occurred_at": stream.iso(stream.now_ms() if occurred_ms is None else occurred_ms),
            "sender_id": f"fan-{rng.randrange(2_000_000)}",
            "creator_id": stream.creator_id(rank),
            **place,
            "gift_id": name,
            "coins": coins,
        }
        if rng.random() < combo_share:
            event["count"] = rng.choice(COMBO_COUNTS)
        elif rng.random() < 0.5:
            event["count"] = 1  # the contract's default, sometimes written out
        return event

    def credit_gift(self, rank: int, event: dict[str, Any]) -> int:
        tally = self.stream.tally
        coins = int(event["coins"]) * int(event.get("count", 1))
        milli = coins * MILLI_DIAMONDS_PER_COIN
        tally.diamonds[rank] = tally.diamonds.get(rank, 0) + milli
        tally.totals["gifts"] += 1
        tally.totals["gift_coins"] += coins
        tally.totals["diamonds_credited_milli"] += milli
        return milli

    def emit_gift(self, rank: int, place: dict[str, str], combo_share: float) -> None:
        self.creators.meet(rank)
        event = self.gift_event(rank, place, combo_share)
        milli = self.credit_gift(rank, event)
        self.stream.tally.applied[topics.GIFTS_SENT] += 1
        record = Outgoing(
            topics.GIFTS_SENT,
            event["creator_id"],
            gift_json(event),
            replayable=True,
            conflictable=event,
            gift=(event["event_id"], rank, milli),
        )
        if self.gift_taker is not None and self.gift_taker(record):
            return
        self.stream.dispatch(record)

    def reversal(self) -> bool:
        stream = self.stream
        if self.rng.random() < stream.shape.early_reversal_share and stream.room(3):
            return self.early_reversal()
        recent_gifts = stream.recent_gifts
        if not recent_gifts:
            return False
        index = self.rng.randrange(len(recent_gifts))
        gift_event_id, rank, milli = recent_gifts[index]
        recent_gifts[index] = recent_gifts[-1]
        recent_gifts.pop()
        stream.send(self.reversal_record(gift_event_id, rank, milli))
        return True

    def early_reversal(self) -> bool:
        """A gift delayed upstream: its reversal is sent first, the gift a little later."""
        stream = self.stream
        rank = stream.zipf_rank()
        self.creators.meet(rank)
        place = {"surface": "video", "video_id": f"{stream.ns}-v{rank}-late"}
        sent_ms = stream.now_ms() - self.rng.randint(50, 2_000)
        event = self.gift_event(rank, place, VIDEO_COMBO_SHARE, sent_ms)
        milli = self.credit_gift(rank, event)
        stream.send(self.reversal_record(event["event_id"], rank, milli))
        gift = stream.applied_event(topics.GIFTS_SENT, event, replayable=True)
        stream.hold_back(gift, self.rng.randint(1, 200))
        stream.tally.totals["reversals_before_gift"] += 1
        return True

    def reversal_record(
        self, gift_event_id: str, rank: int, milli: int, reason: str | None = None
    ) -> Outgoing:
        """The reversal of a gift (`reason`: one picked at random when None), debiting its
        diamonds in the tally."""
        stream = self.stream
        event = {
            "event_id": stream.next_id("r"),
            "occurred_at": stream.iso(stream.now_ms()),
            "creator_id": stream.creator_id(rank),
            "gift_event_id": gift_event_id,
            "reason": self.rng.choice(REVERSAL_REASONS) if reason is None else reason,
        }
        stream.tally.diamonds[rank] -= milli
        stream.tally.totals["reversals"] += 1
        stream.tally.totals["diamonds_reversed_milli"] += milli
        return stream.applied_event(topics.GIFTS_REVERSED, event)
