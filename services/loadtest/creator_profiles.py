"""Creator profiles in the load-test stream (`services.loadtest.generator`): one when a creator
first appears (most eligible to cash out; some not, for each rule; a few creators never get one),
later updates, some of which arrive out of order. The latest profile of each creator is kept, for
the cash-out phase's decisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from schemas import topics
from services.loadtest.oracle import COMING_SOON_COUNTRIES, ENABLED_COUNTRIES
from services.loadtest.stream_context import Outgoing, StreamContext
from services.loadtest.stream_format import STREAM_START

SPECIAL_CREATORS_MAX = 1_000
PROFILE_MISSING_SHARE = 0.05
PROFILE_STALE_FLIP_SHARE = 0.2
# How long before a creator's first appearance the first profile may be dated. A request counts
# the profile's video views and posts only when it is dated at most 30 days before (the oracle's
# PROFILE_MAX_AGE_DAYS), and the cash-outs come from 09:00 on the day after the main phase's last
# day, one a second: the 10 days left keep every eligible creator eligible at its cash-out in
# streams of up to about 30 million records of the default shape. In longer or slower streams
# some profiles are too old by then, and the oracle rejects their requests as the service does.
PROFILE_REGISTERED_BEFORE_MS_MAX = 20 * 86_400_000
# The draw that dates it spans 30 days of milliseconds, scaled to the 20: a seed's other draws,
# and so its records, do not depend on the span.
PROFILE_REGISTERED_DRAW_MS = 30 * 86_400_000
INELIGIBLE_KINDS = (
    "age",
    "country",
    "followers",
    "video_views_30d",
    "posts_30d",
    "in_good_standing",
    "identity_verified",
    "payout_account",
)


@dataclass(slots=True)
class Profile:
    sort_key: tuple[int, str]  # (occurred_at ms, event_id): the latest wins
    facts: dict[str, Any]

    def age_at(self, moment: datetime) -> timedelta:
        """How long before `moment` the profile is dated."""
        return moment - (STREAM_START + timedelta(milliseconds=self.sort_key[0]))


class CreatorProfiles:
    """Per creator (rank), bounded by the stream's `creator_count`."""

    def __init__(self, stream: StreamContext) -> None:
        self.stream = stream
        self.rng = stream.rng
        self.seen: set[int] = set()
        self.profiles: dict[int, Profile] = {}
        self.profile_kind: dict[int, str] = {}
        self.ineligible: list[int] = []
        self.without_profile: list[int] = []

    def meet(self, rank: int) -> None:
        """A creator's first appearance: most have a profile on file by then."""
        if rank in self.seen:
            return
        self.seen.add(rank)
        stream = self.stream
        if not stream.room(2) or self.rng.random() < PROFILE_MISSING_SHARE:
            if len(self.without_profile) < SPECIAL_CREATORS_MAX:
                self.without_profile.append(rank)
            return
        kind = "eligible"
        if self.rng.random() < stream.shape.ineligible_share:
            kind = self.rng.choice(INELIGIBLE_KINDS)
            if len(self.ineligible) < SPECIAL_CREATORS_MAX:
                self.ineligible.append(rank)
        self.profile_kind[rank] = kind
        draw_ms = self.rng.randint(0, PROFILE_REGISTERED_DRAW_MS)
        registered_ms = (
            stream.now_ms()
            - draw_ms * PROFILE_REGISTERED_BEFORE_MS_MAX // PROFILE_REGISTERED_DRAW_MS
        )
        stream.send(self.profile_record(rank, self.profile_facts(rank, kind), registered_ms))

    def profile_facts(self, rank: int, kind: str) -> dict[str, Any]:
        rng = self.rng
        facts: dict[str, Any] = {
            "birth_date": date(rng.randint(1970, 2003), rng.randint(1, 12), rng.randint(1, 28)),
            "country": rng.choice(ENABLED_COUNTRIES),
            "followers": rng.randint(10_000, 5_000_000),
            "video_views_30d": rng.randint(1_000, 50_000_000),
            "posts_30d": rng.randint(3, 90),
            "in_good_standing": True,
            "identity_verified": True,
            "payout_account_ref": f"pa_{self.stream.ns}_{rank}",
        }
        if kind == "age":
            facts["birth_date"] = date(2010, rng.randint(1, 12), rng.randint(1, 28))
        elif kind == "country":
            facts["country"] = rng.choice((*COMING_SOON_COUNTRIES, "BR", "IN"))
        elif kind == "followers":
            facts["followers"] = rng.randint(0, 9_999)
        elif kind == "video_views_30d":
            facts["video_views_30d"] = rng.randint(0, 999)
        elif kind == "posts_30d":
            facts["posts_30d"] = rng.randint(0, 2)
        elif kind in ("in_good_standing", "identity_verified"):
            facts[kind] = False
        elif kind == "payout_account":
            facts["payout_account_ref"] = None
        facts["birth_date"] = facts["birth_date"].isoformat()
        return facts

    def profile_record(self, rank: int, facts: dict[str, Any], occurred_ms: int) -> Outgoing:
        stream = self.stream
        event_id = stream.next_id("p")
        event: dict[str, Any] = {
            "event_id": event_id,
            "occurred_at": stream.iso(occurred_ms),
            "creator_id": stream.creator_id(rank),
            **{key: value for key, value in facts.items() if value is not None},
        }
        latest = self.profiles.get(rank)
        sort_key = (occurred_ms, event_id)
        if latest is None or latest.sort_key < sort_key:
            self.profiles[rank] = Profile(sort_key, facts)
        stream.tally.totals["profiles"] += 1
        return stream.applied_event(topics.CREATORS_UPDATED, event, replayable=True)

    def profile_update(self) -> bool:
        """New figures for a known creator; some arrive late, carrying an older occurred_at,
        and a few of those say the creator is not in good standing (the latest still wins)."""
        if not self.profiles:
            return False
        stream = self.stream
        rank = stream.zipf_rank()
        latest = self.profiles.get(rank)
        if latest is None:
            return False
        facts = dict(latest.facts)
        facts["followers"] = max(facts["followers"] + self.rng.randint(-500, 5_000), 0)
        facts["video_views_30d"] = max(facts["video_views_30d"] + self.rng.randint(-100, 9_000), 0)
        occurred_ms = stream.now_ms()
        if self.rng.random() < stream.shape.out_of_order_rate * 10 and stream.room(2):
            occurred_ms -= self.rng.randint(1, 3_600_000)
            if self.rng.random() < PROFILE_STALE_FLIP_SHARE:
                facts["in_good_standing"] = not facts["in_good_standing"]
            stream.tally.totals["profiles_stale"] += 1
            stream.hold_back(
                self.profile_record(rank, facts, occurred_ms), self.rng.randint(5, 200)
            )
            return True
        stream.dispatch(self.profile_record(rank, facts, occurred_ms))
        return True
