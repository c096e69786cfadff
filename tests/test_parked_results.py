"""A payout result (`payouts.updated`) read before its cash-out's request (after a restore, each
topic is read again by its own consumer group) is parked, as a reversal before its gift is, and
applied once the request has arrived: in the order a cash-out's results came, once whatever is
delivered again, counted as parked and then applied. The parking is bounded: a result waits
PAYOUT_PARK_S at most, then is dead-lettered `unknown_cashout`; past PAYOUT_PARK_COUNT_MAX
parked results, a new one is dead-lettered at once. Through the ingestor the consumers run,
against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import DeadLetter, InputRecord
from services.rates.rate_cards import RateCardBook, load_rate_cards
from tests import event_factory as make
from tests.ingestion_fixtures import make_ingestor
from tests.ledger_helpers import ledger_problems

SHORT_PARK_S = 0.01  # every result parked with it is past its wait at the first sweep
_offsets = iter(range(10**9))


@pytest_asyncio.fixture(loop_scope="session")
async def rate_cards(engine: AsyncEngine) -> RateCardBook:
    async with engine.connect() as conn:
        return await load_rate_cards(conn)


@pytest_asyncio.fixture(loop_scope="session")
async def prefix(engine: AsyncEngine) -> AsyncIterator[str]:
    """A deployment of its own: its parked events are its own, removed at the end."""
    name = f"pr{uuid.uuid4().hex[:8]}."
    yield name
    async with engine.begin() as conn:
        await conn.execute(
            text("DELETE FROM parked_events WHERE topic_prefix = :prefix"), {"prefix": name}
        )


def _record(topic: str, event: dict[str, Any], key: str) -> InputRecord:
    return InputRecord(topic, 0, next(_offsets), key.encode(), make.encode(event))


async def _one(ingestor: Ingestor, topic: str, event: dict[str, Any], key: str) -> Any:
    return await ingestor.process(topic, [_record(topic, event, key)])


async def _creator_with(ingestor: Ingestor, diamonds: int) -> str:
    """An eligible creator holding `diamonds` (gifts of 2 coins = 1 diamond)."""
    creator = f"creator-{uuid.uuid4().hex[:10]}"
    profile = await _one(ingestor, topics.CREATORS_UPDATED, make.creator_update(creator), creator)
    gift = make.gift(creator, coins=2, count=diamonds)
    gifts = await _one(ingestor, topics.GIFTS_SENT, gift, creator)
    assert (profile.applied, gifts.applied) == (1, 1)
    return creator


async def _scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one_or_none()


async def _status(engine: AsyncEngine, cashout_id: str) -> Any:
    return await _scalar(
        engine, "SELECT status FROM cashouts WHERE cashout_id = :id", id=cashout_id
    )


async def _available(engine: AsyncEngine, creator: str) -> int:
    value = await _scalar(
        engine,
        "SELECT credits_posted - debits_posted - debits_pending FROM accounts WHERE name = :name",
        name=f"creator:{creator}:DIAMOND:available",
    )
    return int(value or 0)


async def _parked(engine: AsyncEngine, prefix: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT waiting_for FROM parked_events WHERE topic_prefix = :prefix"
                " ORDER BY parked_at, kafka_offset"
            ),
            {"prefix": prefix},
        )
        return [row.waiting_for for row in rows]


async def test_a_result_read_before_its_request_is_parked_then_applied_once(
    engine: AsyncEngine, rate_cards: RateCardBook, prefix: str
) -> None:
    ingestor = make_ingestor(engine, rate_cards, topic_prefix=prefix)
    creator = await _creator_with(ingestor, 3_000)
    request = make.cashout_request(creator, 2_000)
    cashout_id = str(request["event_id"])
    paid = _record(topics.PAYOUTS_UPDATED, make.payout_update(cashout_id, "paid"), creator)

    early = await ingestor.process(topics.PAYOUTS_UPDATED, [paid])
    assert (early.parked, early.dead_letters) == (1, [])
    assert await _parked(engine, prefix) == [f"cashout {cashout_id}"]
    again = await ingestor.process(topics.PAYOUTS_UPDATED, [paid])  # redelivered while parked
    assert (again.duplicates, again.parked, again.dead_letters) == (1, 0, [])
    waiting = await ingestor.retry_parked(topics.PAYOUTS_UPDATED)  # the request is not there
    assert (waiting.applied, waiting.dead_letters) == (0, [])
    assert ingestor.counts.still_parked == 1

    assert (await _one(ingestor, topics.CASHOUTS_REQUESTED, request, creator)).applied == 1
    assert await _status(engine, cashout_id) == "held"
    swept = await ingestor.retry_parked(topics.PAYOUTS_UPDATED)
    assert (swept.applied, swept.duplicates, swept.dead_letters) == (1, 0, [])
    assert await _status(engine, cashout_id) == "paid"
    assert await _available(engine, creator) == 1_000_000
    assert await _parked(engine, prefix) == []
    assert (await ingestor.retry_parked(topics.PAYOUTS_UPDATED)).applied == 0

    late = await ingestor.process(topics.PAYOUTS_UPDATED, [paid])  # redelivered once applied
    assert (late.duplicates, late.applied, late.dead_letters) == (1, 0, [])
    counts = ingestor.counts
    assert (counts.parked, counts.unparked_applied, counts.still_parked) == (1, 1, 0)
    assert counts.balanced()
    assert await ledger_problems(engine) == []


async def test_a_cash_outs_results_are_applied_in_the_order_they_came(
    engine: AsyncEngine, rate_cards: RateCardBook, prefix: str
) -> None:
    ingestor = make_ingestor(engine, rate_cards, topic_prefix=prefix)
    creator = await _creator_with(ingestor, 2_000)
    request = make.cashout_request(creator, 2_000)
    cashout_id = str(request["event_id"])
    paid = make.payout_update(cashout_id, "paid")
    returned = make.payout_update(cashout_id, "returned", "R01")

    assert (await _one(ingestor, topics.PAYOUTS_UPDATED, paid, creator)).parked == 1
    assert (await _one(ingestor, topics.CASHOUTS_REQUESTED, request, creator)).applied == 1
    # The request has arrived, the `paid` is still parked: the `returned` waits behind it
    # rather than being refused for a cash-out not paid yet.
    behind = await _one(ingestor, topics.PAYOUTS_UPDATED, returned, creator)
    assert (behind.parked, behind.applied, behind.dead_letters) == (1, 0, [])
    swept = await ingestor.retry_parked(topics.PAYOUTS_UPDATED)
    assert (swept.applied, swept.dead_letters) == (2, [])
    assert await _status(engine, cashout_id) == "returned"
    assert await _available(engine, creator) == 2_000_000
    assert ingestor.counts.still_parked == 0
    assert await ledger_problems(engine) == []


async def test_results_parked_in_one_batch_keep_their_order(
    engine: AsyncEngine, rate_cards: RateCardBook, prefix: str
) -> None:
    ingestor = make_ingestor(engine, rate_cards, topic_prefix=prefix)
    creator = await _creator_with(ingestor, 2_000)
    request = make.cashout_request(creator, 2_000)
    cashout_id = str(request["event_id"])
    reports = [
        make.payout_update(cashout_id, "paid"),
        make.payout_update(cashout_id, "returned", "R01"),
    ]
    # Event ids that sort against the order they came in.
    reports[0]["event_id"], reports[1]["event_id"] = f"z-{uuid.uuid4().hex}", f"a-{uuid.uuid4()}"
    records = [_record(topics.PAYOUTS_UPDATED, report, creator) for report in reports]
    assert (await ingestor.process(topics.PAYOUTS_UPDATED, records)).parked == 2
    assert (await _one(ingestor, topics.CASHOUTS_REQUESTED, request, creator)).applied == 1
    swept = await ingestor.retry_parked(topics.PAYOUTS_UPDATED)
    assert (swept.applied, swept.dead_letters) == (2, [])
    assert await _status(engine, cashout_id) == "returned"


async def test_sweeps_at_once_apply_each_parked_result_once(
    engine: AsyncEngine, rate_cards: RateCardBook, prefix: str
) -> None:
    first = make_ingestor(engine, rate_cards, topic_prefix=prefix)
    requests = []
    for _ in range(6):
        creator = await _creator_with(first, 2_000)
        request = make.cashout_request(creator, 2_000)
        paid = make.payout_update(str(request["event_id"]), "paid")
        assert (await _one(first, topics.PAYOUTS_UPDATED, paid, creator)).parked == 1
        requests.append((request, creator))
    for request, creator in requests:
        assert (await _one(first, topics.CASHOUTS_REQUESTED, request, creator)).applied == 1
    sweepers = [make_ingestor(engine, rate_cards, topic_prefix=prefix) for _ in range(3)]
    reports = await asyncio.gather(
        *(sweeper.retry_parked(topics.PAYOUTS_UPDATED) for sweeper in sweepers)
    )
    assert sum(report.applied for report in reports) == len(requests)
    assert [report.dead_letters for report in reports] == [[]] * len(reports)
    for request, _ in requests:
        assert await _status(engine, str(request["event_id"])) == "paid"
    assert await _parked(engine, prefix) == []


async def test_a_result_whose_request_never_comes_is_dead_lettered_once_its_wait_ends(
    engine: AsyncEngine, rate_cards: RateCardBook, prefix: str
) -> None:
    ingestor = make_ingestor(engine, rate_cards, topic_prefix=prefix, payout_park_s=SHORT_PARK_S)
    result = make.payout_update(f"never-{uuid.uuid4().hex}", "paid")
    assert (await _one(ingestor, topics.PAYOUTS_UPDATED, result, "someone")).parked == 1
    await asyncio.sleep(SHORT_PARK_S * 2)
    published: list[DeadLetter] = []

    async def publish(letters: list[DeadLetter]) -> None:
        published.extend(letters)

    swept = await ingestor.retry_parked(topics.PAYOUTS_UPDATED, publish_dead_letters=publish)
    assert [letter.error for letter in swept.dead_letters] == ["unknown_cashout"]
    assert published == swept.dead_letters
    assert "no request for it arrived before" in published[0].detail
    assert published[0].record.key == b"someone"
    assert await _parked(engine, prefix) == []
    counts = ingestor.counts
    assert (counts.unparked_dead_lettered, counts.still_parked) == (1, 0)
    assert counts.balanced()


async def test_past_the_parking_bound_a_result_is_dead_lettered_at_once(
    engine: AsyncEngine, rate_cards: RateCardBook, prefix: str
) -> None:
    ingestor = make_ingestor(engine, rate_cards, topic_prefix=prefix, payout_park_count_max=2)
    records = [
        _record(topics.PAYOUTS_UPDATED, make.payout_update(f"n-{uuid.uuid4().hex}", "paid"), "k")
        for _ in range(3)
    ]
    report = await ingestor.process(topics.PAYOUTS_UPDATED, records)
    assert report.parked == 2
    assert [letter.record for letter in report.dead_letters] == records[2:]
    assert [letter.error for letter in report.dead_letters] == ["unknown_cashout"]
    assert "2 payout results are parked already (PAYOUT_PARK_COUNT_MAX)" in (
        report.dead_letters[0].detail
    )
    more = await _one(ingestor, topics.PAYOUTS_UPDATED, make.payout_update("n-x", "paid"), "k")
    assert (more.parked, len(more.dead_letters)) == (0, 1)
    assert len(await _parked(engine, prefix)) == 2


async def test_with_no_wait_a_result_for_an_unknown_cash_out_is_dead_lettered_at_once(
    engine: AsyncEngine, rate_cards: RateCardBook, prefix: str
) -> None:
    ingestor = make_ingestor(engine, rate_cards, topic_prefix=prefix, payout_park_s=0)
    result = make.payout_update(f"never-{uuid.uuid4().hex}", "paid")
    report = await _one(ingestor, topics.PAYOUTS_UPDATED, result, "someone")
    assert (report.parked, [letter.error for letter in report.dead_letters]) == (
        0,
        ["unknown_cashout"],
    )
    assert await _parked(engine, prefix) == []
