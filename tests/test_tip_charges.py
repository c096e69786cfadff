"""A card processor's charge is credited once: a second `tips.received` naming a charge that
another event credited (a webhook retried upstream under a new event id, or sent for another
creator) is dead-lettered as `charge_already_applied`, naming the event that credited it, and
moves nothing; a redelivery of the first event stays a duplicate."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import BatchReport, InputRecord
from services.rates.rate_cards import load_rate_cards
from tests import event_factory as make
from tests.ingestion_fixtures import make_ingestor

PARTITION = 6
_offsets = iter(range(10**12, 10**13))


async def _ingestor(engine: AsyncEngine) -> Ingestor:
    async with engine.connect() as conn:
        return make_ingestor(engine, await load_rate_cards(conn))


async def _process(ingestor: Ingestor, *events: dict[str, Any]) -> BatchReport:
    records = [
        InputRecord(
            topics.TIPS_RECEIVED,
            PARTITION,
            next(_offsets),
            str(event["creator_id"]).encode(),
            make.encode(event),
        )
        for event in events
    ]
    return await ingestor.process(topics.TIPS_RECEIVED, records)


async def _wallet_usd(engine: AsyncEngine, creator: str) -> int:
    async with engine.connect() as conn:
        value = (
            await conn.execute(
                text("SELECT credits_posted - debits_posted FROM accounts WHERE name = :name"),
                {"name": f"creator:{creator}:USD:wallet"},
            )
        ).scalar_one_or_none()
    return int(value or 0)


def _tip(creator: str, charge_id: str, amount: int = 500) -> dict[str, Any]:
    return {**make.tip(creator, amount=amount), "charge_id": charge_id}


async def test_a_charge_credited_by_one_event_is_dead_lettered_for_any_other(
    engine: AsyncEngine,
) -> None:
    ingestor = await _ingestor(engine)
    creator, other_creator = (f"creator-{uuid.uuid4().hex[:10]}" for _ in range(2))
    charge = f"ch_{uuid.uuid4().hex[:12]}"
    first = _tip(creator, charge)
    assert (await _process(ingestor, first)).applied == 1

    retried = {**first, "event_id": f"{first['event_id']}-retry"}
    elsewhere = {**_tip(other_creator, charge, amount=7_777)}
    report = await _process(ingestor, retried, elsewhere, first)
    assert (report.applied, report.duplicates) == (0, 1)
    letters = {letter.event_id: letter for letter in report.dead_letters}
    assert set(letters) == {retried["event_id"], elsewhere["event_id"]}
    for letter in letters.values():
        assert letter.error == "charge_already_applied"
        assert letter.detail == f"charge {charge} was credited by event {first['event_id']} already"
    assert await _wallet_usd(engine, creator) == 500
    assert await _wallet_usd(engine, other_creator) == 0


async def test_two_events_of_one_charge_in_one_batch_credit_it_once(engine: AsyncEngine) -> None:
    ingestor = await _ingestor(engine)
    creator = f"creator-{uuid.uuid4().hex[:10]}"
    charge = f"ch_{uuid.uuid4().hex[:12]}"
    first = _tip(creator, charge)
    second = {**first, "event_id": f"{first['event_id']}-again"}
    report = await _process(ingestor, first, second)
    assert report.applied == 1
    assert [(letter.event_id, letter.error) for letter in report.dead_letters] == [
        (second["event_id"], "charge_already_applied")
    ]
    assert await _wallet_usd(engine, creator) == 500
