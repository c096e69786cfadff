"""One creator's events applied in many orders, one batch each, through the ingestor the
consumers run, against the real PostgreSQL.

Kafka keeps order only within one partition of one topic. One creator's events are on several
topics, consumed apart, and an upstream publisher whose partitioner is not murmur2 (librdkafka's
default is CRC32) puts them on other partitions than giftledger's own producers do: no result
may rest on arrival order. Checked for every order: the posted balances, the newest profile,
what was applied or found a duplicate, and a ledger that verifies. What a cash-out request
decides depends on what had arrived before it; it is checked against a small model of the
desk's rules, so that the daily limit and the holds are right in every order. Two consumers
deciding one creator's two requests at the same time hold one and refuse the other.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.queries import creator_balances
from ledger.verify import verify
from schemas import topics
from services.app.bootstrap import build_ingestor
from services.cashout.eligibility import PROFILE_KNOWN
from services.cashout.profiles import creator_profile
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import InputRecord
from services.rates.rate_cards import RateCardBook, load_rate_cards
from services.runtime.metrics import IngestCounts
from services.runtime.settings import Settings
from tests import creator_events as ce
from tests.ledger_helpers import ledger_problems, one_snapshot


@pytest.fixture(scope="module")
def engine(module_engine: AsyncEngine) -> AsyncEngine:
    """This module's own database: the full `verify` after each example reads only its data."""
    return module_engine


# One 10 USD cash-out fits in a day, two do not.
DAILY_LIMIT_USD_CENTS = 1_500
REVERSAL_PARK_S = 300.0
EXAMPLE_COUNT_MAX = 50
CONCURRENT_ROUND_COUNT = 8
PARKED_SWEEP_COUNT_MAX = 3

NATURAL_ORDER = list(ce.ALL_LABELS)
# The reversal and the copy of gift-1 first, a request before any profile, one after the newest
# profile, then the older profiles.
SCRAMBLED_ORDER = [
    ce.REVERSAL_LABEL,
    ce.DUPLICATE_LABEL,
    "cashout-1",
    ce.NEWEST_PROFILE,
    "gift-2",
    "gift-1",
    "cashout-2",
    ce.TIP_LABEL,
    "gift-3",
    "profile-tie",
    "profile-old",
]


@dataclass
class DeskModel:
    """What the cash-out desk should decide, from the events applied so far: the newest
    profile, the available Diamonds (gift-2's reversal applies once both have arrived) and the
    USD value already held today."""

    profile: str | None = None
    available_milli: int = 0
    held_usd_cents: int = 0
    seen: set[str] = field(default_factory=set)
    decisions: dict[str, str] = field(default_factory=dict)

    def apply(self, label: str) -> None:
        event = "gift-1" if label == ce.DUPLICATE_LABEL else label
        if event in self.seen:
            return
        self.seen.add(event)
        if event in ce.PROFILE_LABELS:
            self._profile(event)
        elif event in ce.GIFT_COINS:
            coins, count = ce.GIFT_COINS[event]
            self.available_milli += coins * count * ce.MILLI_DIAMONDS_PER_COIN
        elif event in ce.CASHOUT_LABELS:
            self.decisions[event] = self._request()
        if {"gift-2", ce.REVERSAL_LABEL} <= self.seen and event in ("gift-2", ce.REVERSAL_LABEL):
            coins, count = ce.GIFT_COINS["gift-2"]
            self.available_milli -= coins * count * ce.MILLI_DIAMONDS_PER_COIN

    def _profile(self, label: str) -> None:
        recency = ce.PROFILE_LABELS.index
        if self.profile is None or recency(self.profile) < recency(label):
            self.profile = label

    def _request(self) -> str:
        """`held`, or the first rule broken, in the desk's order: eligibility, the daily
        limit, then the available balance."""
        if self.profile is None:
            return PROFILE_KNOWN
        if self.profile != ce.NEWEST_PROFILE:
            return ce.PROFILE_RULE_FAILED[self.profile]
        if self.held_usd_cents + ce.CASHOUT_USD_CENTS > DAILY_LIMIT_USD_CENTS:
            return "daily_limit"
        if self.available_milli < ce.CASHOUT_MILLI_DIAMONDS:
            return "available_balance"
        self.available_milli -= ce.CASHOUT_MILLI_DIAMONDS
        self.held_usd_cents += ce.CASHOUT_USD_CENTS
        return "held"


def expected_decisions(order: Sequence[str]) -> dict[str, str]:
    model = DeskModel()
    for label in order:
        model.apply(label)
    return model.decisions


def test_the_model_holds_one_request_and_refuses_the_next_by_the_daily_limit() -> None:
    assert expected_decisions(NATURAL_ORDER) == {"cashout-1": "held", "cashout-2": "daily_limit"}
    assert expected_decisions(NATURAL_ORDER[::-1]) == {
        "cashout-2": PROFILE_KNOWN,
        "cashout-1": PROFILE_KNOWN,
    }
    assert expected_decisions(SCRAMBLED_ORDER) == {"cashout-1": PROFILE_KNOWN, "cashout-2": "held"}


def _ingestor(engine: AsyncEngine, rate_cards: RateCardBook, prefix: str) -> Ingestor:
    settings = Settings(
        kafka_topic_prefix=prefix,
        reversal_park_s=REVERSAL_PARK_S,
        cashout_daily_limit_usd_cents=DAILY_LIMIT_USD_CENTS,
    )
    return build_ingestor(settings, engine, rate_cards)


def _record(item: ce.LabelledEvent, partition: int, offset: int) -> InputRecord:
    key = str(item.event["creator_id"]).encode()
    return InputRecord(item.topic, partition, offset, key, item.encode())


async def _apply_in_order(
    ingestor: Ingestor, events: dict[str, ce.LabelledEvent], order: Sequence[str]
) -> None:
    """Each event in a batch of its own, the parked reversals retried after each batch (as the
    consumers' sweep does every second)."""
    offsets: dict[str, int] = {}
    for position, label in enumerate(order):
        item = events[label]
        offset = offsets.get(item.topic, 0)
        offsets[item.topic] = offset + 1
        await ingestor.process(item.topic, [_record(item, position % 4, offset)])
        await ingestor.retry_parked(topics.GIFTS_REVERSED)
    for _ in range(PARKED_SWEEP_COUNT_MAX):
        if ingestor.counts.still_parked == 0:
            break
        await ingestor.retry_parked(topics.GIFTS_REVERSED)


def _settled_counts(counts: IngestCounts) -> tuple[int, int, int, int, int]:
    """consumed, applied, duplicates, dead-lettered, still parked (parked ones counted where
    they ended)."""
    return (
        counts.consumed,
        counts.applied + counts.unparked_applied,
        counts.duplicates + counts.unparked_duplicates,
        counts.dead_lettered + counts.unparked_dead_lettered,
        counts.still_parked,
    )


async def _cashouts(engine: AsyncEngine, creator_id: str) -> dict[str, tuple[str, str | None]]:
    """Each cash-out's label: its status, and its rejected rule or payout account."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT cashout_id, status, coalesce(rejected_rule, payout_account_ref) AS why"
                " FROM cashouts WHERE creator_id = :creator"
            ),
            {"creator": creator_id},
        )
        return {str(row.cashout_id): (str(row.status), row.why) for row in rows}


@settings(
    max_examples=EXAMPLE_COUNT_MAX,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(order=st.permutations(ce.ALL_LABELS))
@example(order=NATURAL_ORDER)
@example(order=NATURAL_ORDER[::-1])
@example(order=SCRAMBLED_ORDER)
async def test_any_order_of_one_creators_events_ends_in_the_same_balances_and_profile(
    engine: AsyncEngine, order: list[str]
) -> None:
    creator_id = f"creator-{uuid.uuid4().hex[:10]}"
    prefix = f"o{uuid.uuid4().hex[:8]}."
    events = ce.creator_events(creator_id, datetime.now(UTC))
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    ingestor = _ingestor(engine, rate_cards, prefix)
    await _apply_in_order(ingestor, events, order)

    # Where every order agrees: balances, counts, the profile, a sound ledger.
    async with one_snapshot(engine) as conn:
        balances = {b.name.split(":", 2)[2]: b for b in await creator_balances(conn, creator_id)}
        profile = await creator_profile(conn, creator_id)
        assert await verify(conn) == []
    assert {name: balance.posted for name, balance in balances.items()} == {
        "DIAMOND:available": ce.DIAMONDS_POSTED_MILLI,
        "DIAMOND:held": 0,
        "USD:wallet": ce.TIP_USD_CENTS,
    }
    assert profile is not None
    newest = events[ce.NEWEST_PROFILE]
    assert (profile.event_id, profile.followers, profile.payout_account_ref) == (
        newest.event_id,
        ce.NEWEST_FOLLOWERS,
        ce.NEWEST_PAYOUT_ACCOUNT_REF,
    )
    assert _settled_counts(ingestor.counts) == (len(order), ce.DISTINCT_EVENT_COUNT, 1, 0, 0)
    parked = order.index(ce.REVERSAL_LABEL) < order.index("gift-2")
    assert ingestor.counts.parked == int(parked)

    # Where the order decides: each request as the model says, never more held than the limit.
    decisions = expected_decisions(order)
    stored = await _cashouts(engine, creator_id)
    for label, decision in decisions.items():
        if decision == "held":
            # The payout goes to the account of the newest profile.
            wanted = ("held", ce.NEWEST_PAYOUT_ACCOUNT_REF)
        else:
            wanted = ("rejected", decision)
        assert stored[events[label].event_id] == wanted, (label, order)
    held_count = list(decisions.values()).count("held")
    assert held_count * ce.CASHOUT_USD_CENTS <= DAILY_LIMIT_USD_CENTS
    assert balances["DIAMOND:available"].pending == held_count * ce.CASHOUT_MILLI_DIAMONDS
    assert balances["DIAMOND:held"].credits_pending == held_count * ce.CASHOUT_MILLI_DIAMONDS


async def test_two_consumers_deciding_one_creators_requests_at_once_hold_one_within_the_limit(
    engine: AsyncEngine,
) -> None:
    """The two requests of one creator on two partitions, taken by two consumers at the same
    time: one is held, the other refused by the daily limit, in every round."""
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    prefix = f"o{uuid.uuid4().hex[:8]}."
    first, second = _ingestor(engine, rate_cards, prefix), _ingestor(engine, rate_cards, prefix)
    for _ in range(CONCURRENT_ROUND_COUNT):
        creator_id = f"creator-{uuid.uuid4().hex[:10]}"
        events = ce.creator_events(creator_id, datetime.now(UTC))
        funding = [label for label in NATURAL_ORDER if label not in ce.CASHOUT_LABELS]
        await _apply_in_order(first, events, funding)
        requests = [events[label] for label in ce.CASHOUT_LABELS]
        await asyncio.gather(
            first.process(topics.CASHOUTS_REQUESTED, [_record(requests[0], 0, 0)]),
            second.process(topics.CASHOUTS_REQUESTED, [_record(requests[1], 1, 0)]),
        )
        stored = await _cashouts(engine, creator_id)
        assert sorted(stored.values()) == [
            ("held", ce.NEWEST_PAYOUT_ACCOUNT_REF),
            ("rejected", "daily_limit"),
        ]
        async with engine.connect() as conn:
            balances = {b.name: b for b in await creator_balances(conn, creator_id)}
        available = balances[f"creator:{creator_id}:DIAMOND:available"]
        assert (available.posted, available.pending) == (
            ce.DIAMONDS_POSTED_MILLI,
            ce.CASHOUT_MILLI_DIAMONDS,
        )
    assert await ledger_problems(engine) == []
