"""A batch of cash-out requests, of submissions and of payout results applied at once ends
exactly as the same items applied one at a time, one transaction each: the same states, rules,
amounts, transitions, outbox rows (per key, in order), dead letters and balances. Checked on two
copies of the same creators, through the ingestor the consumers run, against the real
PostgreSQL; with several requests of one creator in one batch crossing the daily limit and the
available balance, and several results of one cash-out in one batch."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.queries import creator_balances
from ledger.service import Ledger
from schemas import topics
from services.app.bootstrap import build_ingestor
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import InputRecord
from services.operator.desk import OperatorDesk
from services.rates.rate_cards import load_rate_cards
from services.runtime.creator_locks import lock_creators
from services.runtime.settings import Settings
from tests import event_factory as make
from tests.ledger_helpers import ledger_problems

WRITER = "giftledger_writer"
DAILY_LIMIT_USD_CENTS = 3_000  # 30 USD: 6,000 diamonds a day
# How long a freeze is watched to see that it waits for a batch holding its creator, and how
# long it may take once the batch has committed.
FREEZE_WAIT_PROBE_S = 0.5
FREEZE_DONE_WAIT_S = 10.0
FIRST_DAY = datetime(2027, 5, 3, 12, tzinfo=UTC)
CREATOR_COUNT = 3
REQUEST_COUNT_MAX = 10
EXAMPLE_COUNT_MAX = 20

ELIGIBLE = "eligible"
FEW_FOLLOWERS = "few_followers"
NO_PROFILE = "no_profile"
NO_PAYOUT_ACCOUNT = "no_payout_account"
FROZEN = "frozen"


@dataclass(frozen=True, slots=True)
class Request:
    creator: int  # index into the creators
    diamonds: int
    day: int
    currency: str


@dataclass(frozen=True, slots=True)
class Result:
    request: int  # index into the requests; past their end: an unknown cash-out
    status: str


Setup = tuple[int, str]  # a creator's diamonds and kind

# Creator 0 holds 7,000 diamonds, 1 holds 3,000, 2 holds 5,000; the limit lets 6,000 out a day.
CROSSING_SETUPS: list[Setup] = [(7_000, ELIGIBLE), (3_000, ELIGIBLE), (5_000, ELIGIBLE)]
CROSSING_REQUESTS = [
    Request(0, 4_000, 0, "USD"),  # held
    Request(1, 2_000, 0, "USD"),  # held
    Request(2, 6_000, 0, "USD"),  # within the limit, beyond the balance: available_balance
    Request(0, 4_000, 0, "USD"),  # 8,000 that day: daily_limit
    Request(1, 2_000, 0, "USD"),  # 1,000 left: available_balance
    Request(2, 4_000, 0, "USD"),  # the refused 6,000 does not count: held
    Request(0, 2_000, 0, "USD"),  # exactly 6,000 that day: held
    Request(0, 2_000, 0, "USD"),  # daily_limit
    Request(1, 1_999, 0, "USD"),  # minimum
    Request(0, 2_000, 1, "USD"),  # the next day; 1,000 left: available_balance
]
CROSSING_OUTCOMES = [
    ("held", None),
    ("held", None),
    ("rejected", "available_balance"),
    ("rejected", "daily_limit"),
    ("rejected", "available_balance"),
    ("held", None),
    ("held", None),
    ("rejected", "daily_limit"),
    ("rejected", "minimum"),
    ("rejected", "available_balance"),
]
CROSSING_SUBMITTED = frozenset({0, 6})
CROSSING_RESULTS = [
    Result(0, "paid"),
    Result(0, "returned"),  # the same cash-out twice in one batch
    Result(1, "paid"),
    Result(1, "failed"),  # cashout_is_paid
    Result(2, "paid"),  # cashout_is_rejected
    Result(5, "failed"),  # the hold is still pending: voided
    Result(6, "failed"),  # submitted: undone
    Result(REQUEST_COUNT_MAX, "paid"),  # unknown_cashout
]


@dataclass(frozen=True, slots=True)
class World:
    """One copy of the creators, with its own ids."""

    tag: str
    creators: list[str]
    requests: list[dict[str, Any]]

    def cashout_id(self, result: Result) -> str:
        if result.request < len(self.requests):
            return str(self.requests[result.request]["event_id"])
        return f"unknown-{self.tag}"


def _record(topic: str, offset: int, event: dict[str, Any], key: str) -> InputRecord:
    return InputRecord(topic, 0, offset, key.encode(), make.encode(event))


async def _process(
    ingestor: Ingestor, topic: str, events: list[dict[str, Any]], keys: list[str], batched: bool
) -> list[str]:
    """Apply `events` in one batch, or one batch each; returns each event's dead-letter error
    ("" when applied), in the events' order."""
    records = [
        _record(topic, offset, event, key)
        for offset, (event, key) in enumerate(zip(events, keys, strict=True))
    ]
    groups = [records] if batched else [[record] for record in records]
    errors: dict[str, str] = {}
    for group in groups:
        report = await ingestor.process(topic, group)
        errors.update((str(letter.event_id), letter.error) for letter in report.dead_letters)
        assert report.applied + len(report.dead_letters) == len(group)
    return [errors.get(str(event["event_id"]), "") for event in events]


async def _world(
    ingestor: Ingestor,
    operator: OperatorDesk,
    setups: list[Setup],
    requests: list[Request],
) -> World:
    tag = uuid.uuid4().hex[:10]
    creators = [f"batch-{tag}-{index}" for index in range(len(setups))]
    profiles: list[dict[str, Any]] = []
    gifts: list[dict[str, Any]] = []
    for creator, (diamonds, kind) in zip(creators, setups, strict=True):
        if kind != NO_PROFILE:
            profile = make.creator_update(
                creator, followers=10 if kind == FEW_FOLLOWERS else 25_000
            )
            if kind == NO_PAYOUT_ACCOUNT:
                profile["payout_account_ref"] = None
            profiles.append(profile)
        if diamonds:
            gifts.append(make.gift(creator, coins=2_000, count=diamonds // 1_000))
    for topic, events in ((topics.CREATORS_UPDATED, profiles), (topics.GIFTS_SENT, gifts)):
        keys = [str(event["creator_id"]) for event in events]
        assert await _process(ingestor, topic, events, keys, batched=True) == [""] * len(events)
    for creator, (_, kind) in zip(creators, setups, strict=True):
        if kind == FROZEN:
            await operator.set_frozen(
                creator,
                frozen=True,
                idempotency_key=f"freeze-{creator}",
                actor="alice",
                reason="a test of frozen creators",
                ticket=None,
            )
    events = [
        {
            **make.cashout_request(creators[r.creator], r.diamonds, r.currency),
            # Ids in the requests' order in both copies: batches lock cash-outs in id order.
            "event_id": f"batch-{tag}-cashout-{index:02d}",
            "occurred_at": (FIRST_DAY + timedelta(days=r.day)).isoformat(),
        }
        for index, r in enumerate(requests)
    ]
    return World(tag, creators, events)


async def _apply(
    engine: AsyncEngine,
    ingestor: Ingestor,
    world: World,
    submitted: frozenset[int],
    results: list[Result],
    *,
    batched: bool,
) -> dict[str, Any]:
    """Requests, then submissions, then payout results, in batches or one at a time; returns
    what they left, with the ids replaced by positions."""
    keys = [str(event["creator_id"]) for event in world.requests]
    request_letters = await _process(
        ingestor, topics.CASHOUTS_REQUESTED, world.requests, keys, batched
    )
    to_submit = [
        str(world.requests[index]["event_id"])
        for index in sorted(submitted)
        if index < len(world.requests)
    ]
    ledger = ingestor.ledger
    for group in [to_submit] if batched else [[cashout_id] for cashout_id in to_submit]:
        async for tx in ledger.transactions(retry_count_max=0):
            async with tx:
                await ingestor.desk.mark_submitted(tx, ledger, group)
    reports = [
        make.payout_update(
            world.cashout_id(result),
            result.status,
            None if result.status == "paid" else "account_closed",
        )
        for result in results
    ]
    result_letters = await _process(
        ingestor, topics.PAYOUTS_UPDATED, reports, [world.tag] * len(reports), batched
    )
    return {
        "request dead letters": request_letters,
        "result dead letters": result_letters,
        **await _snapshot(engine, world),
    }


async def _snapshot(engine: AsyncEngine, world: World) -> dict[str, Any]:
    """The world's cash-outs, transitions, outbox rows and balances, ids replaced by positions."""
    positions = {str(event["event_id"]): index for index, event in enumerate(world.requests)}
    creator_positions = {creator: index for index, creator in enumerate(world.creators)}
    ids = list(positions)
    async with engine.connect() as conn:
        cashouts = {
            positions[row.cashout_id]: tuple(row)[1:]
            for row in await conn.execute(
                text(
                    "SELECT cashout_id, status, rejected_rule, failure_code, payout_amount,"
                    " usd_value_micros, rate_card_version, fx_numerator, fx_denominator,"
                    " payout_account_ref, requested_on FROM cashouts"
                    " WHERE cashout_id = ANY(CAST(:ids AS text[]))"
                ),
                {"ids": ids},
            )
        }
        transitions: dict[int, list[tuple[str, str]]] = {}
        for row in await conn.execute(
            text(
                "SELECT cashout_id, status, detail FROM cashout_transitions"
                " WHERE cashout_id = ANY(CAST(:ids AS text[])) ORDER BY seq"
            ),
            {"ids": ids},
        ):
            transitions.setdefault(positions[row.cashout_id], []).append((row.status, row.detail))
        outbox: dict[int, list[tuple[str, str]]] = {}
        for row in await conn.execute(
            text(
                "SELECT topic, message_key, payload FROM outbox"
                " WHERE message_key = ANY(CAST(:keys AS text[]))"
                " AND topic = ANY(CAST(:topics AS text[])) ORDER BY id"
            ),
            {"keys": world.creators, "topics": [topics.CASHOUTS_UPDATED, topics.PAYOUTS_REQUESTED]},
        ):
            payload = json.loads(bytes(row.payload))
            cashout = positions[payload.pop("cashout_id")]
            for varying in ("event_id", "occurred_at", "creator_id"):
                payload.pop(varying)
            message = json.dumps({"cashout": cashout, **payload}, sort_keys=True)
            outbox.setdefault(creator_positions[row.message_key], []).append((row.topic, message))
        balances = {
            index: sorted(
                (
                    balance.name.removeprefix(f"creator:{creator}:"),
                    balance.debits_posted,
                    balance.credits_posted,
                    balance.debits_pending,
                    balance.credits_pending,
                )
                for balance in await creator_balances(conn, creator)
            )
            for creator, index in creator_positions.items()
        }
    return {
        "cash-outs": cashouts,
        "transitions": transitions,
        "outbox": outbox,
        "balances": balances,
    }


async def _both_ways(
    engine: AsyncEngine,
    setups: list[Setup],
    requests: list[Request],
    submitted: frozenset[int],
    results: list[Result],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(at once, one at a time) for the same items on two copies of the same creators."""
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    prefix = f"b{uuid.uuid4().hex[:8]}."
    # A result for an unknown cash-out is dead-lettered at once (PAYOUT_PARK_S 0), not parked
    # for its request: every item of a batch ends applied or dead-lettered.
    settings = Settings(
        kafka_topic_prefix=prefix,
        cashout_daily_limit_usd_cents=DAILY_LIMIT_USD_CENTS,
        payout_park_s=0,
    )
    ingestor = build_ingestor(settings, engine, rate_cards)
    operator = OperatorDesk(Ledger(engine), topic_prefix=prefix, database_role=WRITER)
    worlds = [await _world(ingestor, operator, setups, requests) for _ in range(2)]
    at_once = await _apply(engine, ingestor, worlds[0], submitted, results, batched=True)
    one_by_one = await _apply(engine, ingestor, worlds[1], submitted, results, batched=False)
    return at_once, one_by_one


async def test_requests_of_one_creator_in_one_batch_cross_the_limit_and_the_balance_in_order(
    engine: AsyncEngine,
) -> None:
    at_once, one_by_one = await _both_ways(
        engine, CROSSING_SETUPS, CROSSING_REQUESTS, CROSSING_SUBMITTED, CROSSING_RESULTS
    )
    assert at_once == one_by_one
    outcomes = [(row[0], row[1]) for _, row in sorted(at_once["cash-outs"].items())]
    assert outcomes == [
        ("returned", None),
        ("paid", None),
        *CROSSING_OUTCOMES[2:5],
        ("failed", None),
        ("failed", None),
        *CROSSING_OUTCOMES[7:],
    ]
    assert at_once["result dead letters"] == [
        "",
        "",
        "",
        "cashout_is_paid",
        "cashout_is_rejected",
        "",
        "",
        "unknown_cashout",
    ]
    assert at_once["transitions"][0] == [
        ("requested", ""),
        ("held", ""),
        ("submitted", ""),
        ("paid", ""),
        ("returned", "account_closed"),
    ]
    assert at_once["transitions"][3] == [("requested", ""), ("rejected", "daily_limit")]
    # Creator 0: 7,000 diamonds, 4,000 paid and returned, 2,000 submitted then failed.
    available = dict((name, row) for name, *row in at_once["balances"][0])["DIAMOND:available"]
    assert available[1] - available[0] - available[2] == 7_000_000
    assert await ledger_problems(engine) == []


_setups = st.lists(
    st.tuples(
        st.sampled_from([0, 3_000, 7_000, 20_000]),
        st.sampled_from([ELIGIBLE, ELIGIBLE, ELIGIBLE, FEW_FOLLOWERS, NO_PROFILE, FROZEN]),
    ),
    min_size=CREATOR_COUNT,
    max_size=CREATOR_COUNT,
)
_requests = st.lists(
    st.builds(
        Request,
        creator=st.integers(0, CREATOR_COUNT - 1),
        diamonds=st.sampled_from([1_999, 2_000, 4_000, 6_000]),
        day=st.integers(0, 1),
        currency=st.sampled_from(["USD", "USD", "USD", "EUR"]),
    ),
    min_size=1,
    max_size=REQUEST_COUNT_MAX,
)
_results = st.lists(
    st.builds(
        Result,
        request=st.integers(0, REQUEST_COUNT_MAX),
        status=st.sampled_from(["paid", "failed", "returned"]),
    ),
    max_size=REQUEST_COUNT_MAX,
)


async def test_a_request_worth_less_than_one_cent_is_rejected_as_below_the_minimum(
    engine: AsyncEngine,
) -> None:
    """One Diamond converts to 0 cents: the request is rejected with `minimum` and stored with
    no payout amount, batched or not, never failing the batch on the table's check."""
    requests = [Request(0, 1, 0, "USD"), Request(0, 2_000, 0, "USD")]
    at_once, one_by_one = await _both_ways(engine, [(7_000, ELIGIBLE)], requests, frozenset(), [])
    assert at_once == one_by_one
    outcomes = [(row[0], row[1]) for _, row in sorted(at_once["cash-outs"].items())]
    assert outcomes == [("rejected", "minimum"), ("held", None)]


@settings(
    max_examples=EXAMPLE_COUNT_MAX,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    setups=_setups,
    requests=_requests,
    submitted=st.frozensets(st.integers(0, REQUEST_COUNT_MAX - 1)),
    results=_results,
)
@example(
    setups=[(20_000, NO_PAYOUT_ACCOUNT), (20_000, FROZEN), (20_000, ELIGIBLE)],
    requests=[Request(index % 3, 2_000, 0, "USD") for index in range(6)],
    submitted=frozenset({2}),
    results=[Result(2, "paid"), Result(5, "paid"), Result(2, "returned"), Result(5, "failed")],
)
async def test_a_batch_ends_as_its_items_one_at_a_time(
    engine: AsyncEngine,
    setups: list[Setup],
    requests: list[Request],
    submitted: frozenset[int],
    results: list[Result],
) -> None:
    at_once, one_by_one = await _both_ways(engine, setups, requests, submitted, results)
    assert at_once == one_by_one


async def test_a_freeze_waits_for_a_batch_that_read_the_creator_unfrozen(
    engine: AsyncEngine,
) -> None:
    """A batch of requests holds its creators' locks from its checks to its commit; a freeze
    takes the creator's lock too, so it is recorded (and answered) only after such a batch has
    committed: no hold of a request decided before the freeze commits after it."""
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    prefix = f"f{uuid.uuid4().hex[:8]}."
    ingestor = build_ingestor(Settings(kafka_topic_prefix=prefix), engine, rate_cards)
    operator = OperatorDesk(Ledger(engine), topic_prefix=prefix, database_role=WRITER)
    creator = f"freeze-{uuid.uuid4().hex[:10]}"
    profile = make.creator_update(creator)
    assert await _process(ingestor, topics.CREATORS_UPDATED, [profile], [creator], True) == [""]

    async with engine.begin() as batch:  # a batch between its checks and its commit
        await lock_creators(batch, [creator])
        freezing = asyncio.create_task(
            operator.set_frozen(
                creator,
                frozen=True,
                idempotency_key=f"freeze-{creator}",
                actor="alice",
                reason="a freeze racing a batch",
                ticket=None,
            )
        )
        await asyncio.sleep(FREEZE_WAIT_PROBE_S)
        assert not freezing.done(), "the freeze did not wait for the batch's commit"
    outcome = await asyncio.wait_for(freezing, FREEZE_DONE_WAIT_S)
    assert outcome.recorded
    assert outcome.state.frozen
