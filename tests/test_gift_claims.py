"""Gifts are recorded as applied by one insert, and when one of them was recorded already, by
another that skips those (`EventStore.claim_applied`): a redelivery, a copy within the batch, a
batch overlapping one applied before, and two consumers applying the same gifts at the same
moment each end with every gift applied once, its diamonds credited once, and every other copy a
duplicate or a conflict.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import BatchReport, InputRecord
from services.rates.rate_cards import load_rate_cards
from tests import event_factory as make
from tests.ingestion_fixtures import make_ingestor
from tests.ledger_helpers import ledger_problems

PARTITION = 5
_offsets = itertools.count(3 * 10**12)
MILLI_DIAMONDS_PER_COIN = 500


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ingestors(engine: AsyncEngine) -> AsyncIterator[tuple[Ingestor, Ingestor]]:
    """Two ingestors, as two consumer processes would have."""
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    yield make_ingestor(engine, rate_cards), make_ingestor(engine, rate_cards)


def gift(creator: str, event_id: str, coins: int = 2) -> dict[str, Any]:
    return {**make.gift(creator, coins=coins), "event_id": event_id}


def records(*events: dict[str, Any]) -> list[InputRecord]:
    return [
        InputRecord(topics.GIFTS_SENT, PARTITION, next(_offsets), None, json.dumps(e).encode())
        for e in events
    ]


async def diamonds_of(engine: AsyncEngine, creator: str) -> int:
    async with engine.connect() as conn:
        balance = await conn.execute(
            text("SELECT credits_posted - debits_posted FROM accounts WHERE name = :name"),
            {"name": f"creator:{creator}:DIAMOND:available"},
        )
        return int(balance.scalar_one_or_none() or 0)


async def applied_rows(engine: AsyncEngine, event_ids: list[str]) -> int:
    async with engine.connect() as conn:
        count = await conn.execute(
            text(
                "SELECT count(*) FROM applied_events WHERE topic = :topic AND event_id = ANY(:ids)"
            ),
            {"topic": topics.GIFTS_SENT, "ids": event_ids},
        )
        return int(count.scalar_one())


def outcome(report: BatchReport) -> tuple[int, int, list[str]]:
    return report.applied, report.duplicates, [letter.error for letter in report.dead_letters]


async def test_a_redelivered_batch_is_all_duplicates_and_a_changed_gift_a_conflict(
    engine: AsyncEngine, ingestors: tuple[Ingestor, Ingestor], unique_id: str
) -> None:
    ingestor, _ = ingestors
    creator = f"c-{unique_id}"
    gifts = [gift(creator, f"g-{unique_id}-{index}") for index in range(3)]
    assert outcome(await ingestor.process(topics.GIFTS_SENT, records(*gifts))) == (3, 0, [])
    again = await ingestor.process(topics.GIFTS_SENT, records(*gifts))
    assert outcome(again) == (0, 3, [])
    changed = await ingestor.process(
        topics.GIFTS_SENT, records(gifts[0], {**gifts[1], "coins": 9}, gifts[2])
    )
    assert outcome(changed) == (0, 2, ["event_id_conflict"])
    assert await diamonds_of(engine, creator) == 3 * 2 * MILLI_DIAMONDS_PER_COIN
    assert await applied_rows(engine, [g["event_id"] for g in gifts]) == 3


async def test_copies_in_one_batch_are_judged_against_the_first_copy(
    engine: AsyncEngine, ingestors: tuple[Ingestor, Ingestor], unique_id: str
) -> None:
    ingestor, _ = ingestors
    creator = f"c-{unique_id}"
    first = gift(creator, f"g-{unique_id}", coins=4)
    other = {**first, "coins": 5}
    report = await ingestor.process(topics.GIFTS_SENT, records(first, other, first, other))
    assert outcome(report) == (1, 1, ["event_id_conflict", "event_id_conflict"])
    assert await diamonds_of(engine, creator) == 4 * MILLI_DIAMONDS_PER_COIN


async def test_a_batch_overlapping_one_applied_before_applies_only_the_new_gifts(
    engine: AsyncEngine, ingestors: tuple[Ingestor, Ingestor], unique_id: str
) -> None:
    ingestor, _ = ingestors
    creator = f"c-{unique_id}"
    old = [gift(creator, f"g-{unique_id}-old-{index}") for index in range(2)]
    new = [gift(creator, f"g-{unique_id}-new-{index}", coins=3) for index in range(2)]
    await ingestor.process(topics.GIFTS_SENT, records(*old))
    report = await ingestor.process(topics.GIFTS_SENT, records(new[0], *old, new[1], new[0]))
    assert outcome(report) == (2, 3, [])
    assert await diamonds_of(engine, creator) == (2 * 2 + 2 * 3) * MILLI_DIAMONDS_PER_COIN


async def test_two_consumers_applying_the_same_gifts_at_once_apply_each_once(
    engine: AsyncEngine, ingestors: tuple[Ingestor, Ingestor], unique_id: str
) -> None:
    creator = f"c-{unique_id}"
    gifts = [gift(creator, f"g-{unique_id}-{index}", coins=1) for index in range(200)]
    # Overlapping halves, in opposite orders: the second consumer waits for the first one's
    # inserts, or the first for the second's, and finds them applied once they commit.
    first, second = ingestors
    reports = await asyncio.gather(
        first.process(topics.GIFTS_SENT, records(*gifts[:150])),
        second.process(topics.GIFTS_SENT, records(*reversed(gifts[50:]))),
    )
    applied = sum(report.applied for report in reports)
    duplicates = sum(report.duplicates for report in reports)
    assert (applied, duplicates) == (200, 100)
    assert all(not report.dead_letters for report in reports)
    assert await diamonds_of(engine, creator) == 200 * MILLI_DIAMONDS_PER_COIN
    assert await applied_rows(engine, [g["event_id"] for g in gifts]) == 200
    assert await ledger_problems(engine) == []
