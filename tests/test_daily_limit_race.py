"""The daily cash-out limit holds however the requests are spread over consumers: two desks on
two transactions racing for one creator, and two consumers whose batches hold the same creators
in opposite orders, hold exactly what fits within the limit and reject the rest."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import create_engine
from ledger.service import Ledger
from ledger.verify import verify
from schemas import topics
from schemas.events import CashoutRequested
from services.app.bootstrap import build_ingestor
from services.cashout.desk import CashoutDesk, CashoutLimits, request_accounts
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import InputRecord
from services.rates.rate_cards import RateCardBook, load_rate_cards
from services.runtime.settings import EligibilitySettings, Settings
from tests import event_factory as make
from tests.ingestion_fixtures import make_ingestor
from tests.ledger_helpers import one_snapshot

WRITER = "giftledger_writer"
ROUND_COUNT = 6
DAILY_LIMIT_USD_CENTS = 3_000  # 30 USD: 6,000 diamonds
REQUEST_DIAMONDS = 4_000  # 20 USD: one request fits in a day, two do not
CREATOR_DIAMONDS = 100_000  # far more than the limit lets out: the balance never decides
FIRST_DAY = datetime(2027, 3, 1, 12, tzinfo=UTC)
BATCH_REQUESTS_PER_CREATOR = 3


@pytest_asyncio.fixture(loop_scope="session")
async def writer_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The desks write as the services do."""
    engine = create_engine(database_url, pool_size=4, role=WRITER)
    yield engine
    await engine.dispose()


async def _rate_cards(engine: AsyncEngine) -> RateCardBook:
    async with engine.connect() as conn:
        return await load_rate_cards(conn)


def _record(topic: str, offset: int, event: dict[str, Any]) -> InputRecord:
    key = str(event["creator_id"]).encode()
    return InputRecord(topic, 0, offset, key, make.encode(event))


async def _eligible_creator(ingestor: Ingestor, diamonds: int) -> str:
    """A creator who passes every rule and holds `diamonds`, applied through the ingestor."""
    creator = f"creator-{uuid.uuid4().hex[:10]}"
    profile = make.creator_update(creator)
    gift = make.gift(creator, coins=2_000, count=diamonds // 1_000)  # 1,000 diamonds a gift
    profile_report = await ingestor.process(
        topics.CREATORS_UPDATED, [_record(topics.CREATORS_UPDATED, 0, profile)]
    )
    gift_report = await ingestor.process(topics.GIFTS_SENT, [_record(topics.GIFTS_SENT, 0, gift)])
    assert (profile_report.applied, gift_report.applied) == (1, 1)
    return creator


def _request(creator: str, day: int, diamonds: int) -> dict[str, Any]:
    moment = FIRST_DAY + timedelta(days=day)
    return {**make.cashout_request(creator, diamonds), "occurred_at": moment.isoformat()}


async def _outcomes(engine: AsyncEngine, cashout_ids: list[str]) -> dict[str, tuple[str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT cashout_id, status, coalesce(rejected_rule, '') AS rule FROM cashouts"
                " WHERE cashout_id = ANY(CAST(:ids AS text[]))"
            ),
            {"ids": cashout_ids},
        )
        return {row.cashout_id: (row.status, row.rule) for row in rows}


async def test_two_desks_racing_for_one_creator_hold_only_what_fits_the_daily_limit(
    engine: AsyncEngine, writer_engine: AsyncEngine
) -> None:
    """Each round, on a new UTC day, two desks on two transactions check one request each at
    the same moment; together they cross the limit: one is held, the other rejected."""
    rate_cards = await _rate_cards(engine)
    prefix = f"limit{uuid.uuid4().hex[:6]}."
    creator = await _eligible_creator(
        make_ingestor(engine, rate_cards, topic_prefix=prefix), CREATOR_DIAMONDS
    )
    limits = CashoutLimits(daily_maximum_usd_cents=DAILY_LIMIT_USD_CENTS)
    desks = [CashoutDesk(limits, EligibilitySettings(), prefix) for _ in range(2)]
    ledger = Ledger(writer_engine)

    async def request(desk: CashoutDesk, event: CashoutRequested, barrier: asyncio.Barrier) -> str:
        account_ids = await ledger.account_ids(request_accounts(event))
        async for tx in ledger.transactions(retry_count_max=0):  # a deadlock would fail the test
            async with tx:
                await tx.connection.execute(text("SELECT 1"))  # the transaction has begun
                await barrier.wait()  # both transactions are open before either checks
                cashout = await desk.request(tx, event, rate_cards, account_ids)
        return cashout.status

    for day in range(ROUND_COUNT):
        events = [
            CashoutRequested.model_validate_json(
                json.dumps(_request(creator, day, REQUEST_DIAMONDS))
            )
            for _ in desks
        ]
        barrier = asyncio.Barrier(len(desks))
        statuses = await asyncio.gather(
            *(request(desk, event, barrier) for desk, event in zip(desks, events, strict=True))
        )
        assert sorted(statuses) == ["held", "rejected"], f"day {day}: {statuses}"
        outcomes = await _outcomes(engine, [event.event_id for event in events])
        assert sorted(outcomes.values()) == [("held", ""), ("rejected", "daily_limit")]
    async with one_snapshot(engine) as conn:
        held_per_day = (
            await conn.execute(
                text(
                    "SELECT requested_on, sum(usd_value_micros) AS micros FROM cashouts"
                    " WHERE creator_id = :c AND status = 'held' GROUP BY requested_on"
                ),
                {"c": creator},
            )
        ).all()
        assert await verify(conn) == []
    assert len(held_per_day) == ROUND_COUNT
    assert all(row.micros == REQUEST_DIAMONDS * 5_000 for row in held_per_day)  # 20 USD a day


async def test_two_consumers_with_the_same_creators_in_opposite_orders_keep_the_limit(
    engine: AsyncEngine, writer_engine: AsyncEngine
) -> None:
    """Two consumers (as after a change of partitioning) apply batches that both hold requests
    of the same two creators, in opposite orders: per creator and day, only what fits the limit
    is held, and neither batch fails."""
    rate_cards = await _rate_cards(engine)
    prefix = f"limit{uuid.uuid4().hex[:6]}."
    setup = make_ingestor(engine, rate_cards, topic_prefix=prefix)
    creators = [await _eligible_creator(setup, CREATOR_DIAMONDS) for _ in range(2)]
    settings = Settings(
        kafka_topic_prefix=prefix, cashout_daily_limit_usd_cents=DAILY_LIMIT_USD_CENTS
    )
    consumers = [build_ingestor(settings, writer_engine, rate_cards) for _ in range(2)]
    for day in range(ROUND_COUNT):
        batches = [
            [
                _request(creator, day, REQUEST_DIAMONDS)
                for creator in ordered
                for _ in range(BATCH_REQUESTS_PER_CREATOR)
            ]
            for ordered in (creators, creators[::-1])
        ]
        reports = await asyncio.gather(
            *(
                consumer.process(
                    topics.CASHOUTS_REQUESTED,
                    [
                        _record(topics.CASHOUTS_REQUESTED, offset, event)
                        for offset, event in enumerate(batch)
                    ],
                )
                for consumer, batch in zip(consumers, batches, strict=True)
            )
        )
        assert [report.applied for report in reports] == [len(batch) for batch in batches]
        for creator in creators:
            ids = [str(e["event_id"]) for b in batches for e in b if e["creator_id"] == creator]
            outcomes = sorted((await _outcomes(engine, ids)).values())
            rejected = [("rejected", "daily_limit")] * (len(ids) - 1)
            assert outcomes == [("held", ""), *rejected], f"day {day}, {creator}: {outcomes}"
