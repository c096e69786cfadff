"""A gift's transfer id begins with the gift's `occurred_at` (time-ordered) and is the same on
every delivery; its reversal finds it. Gifts stored before, under the name-based id, are still
found by their reversals and still reversed at most once."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.ids import unix_ms_of
from ledger.queries import creator_balances
from ledger.service import Ledger
from schemas import topics
from schemas.events import GiftSent
from services.ingestion.event_transfers import (
    GIFT_DIAMOND_SOURCE,
    batch_coin_leg,
    gift_transfer,
    gift_transfer_id,
    legacy_gift_transfer_id,
)
from services.ingestion.handlers import gift_batch
from services.ingestion.records import payload_sha256
from services.rates.rate_cards import load_rate_cards
from tests import event_factory as make
from tests.ingestion_fixtures import RunningConsumers, wait_until
from tests.ledger_helpers import ledger_problems

MOMENT = datetime(2026, 11, 3, 18, 25, 43, 511_000, tzinfo=UTC)


def _creator() -> str:
    return f"creator-{uuid.uuid4().hex[:10]}"


async def _scalar(engine: AsyncEngine, sql: str, **values: object) -> object:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), values)).scalar()


async def _diamonds(engine: AsyncEngine, creator_id: str) -> int:
    async with engine.connect() as conn:
        balances = await creator_balances(conn, creator_id)
    return sum(b.posted for b in balances if b.name.endswith(":DIAMOND:available"))


async def _wait_for_row(engine: AsyncEngine, table: str, event_id: str) -> None:
    async def found() -> bool:
        count = await _scalar(
            engine,
            f"SELECT count(*) FROM {table} WHERE event_id = :id",  # noqa: S608
            id=event_id,
        )
        return count == 1

    await wait_until(found)


async def _reverse_twice(
    consumers: RunningConsumers, engine: AsyncEngine, creator: str, gift_event_id: str
) -> None:
    """Two reversals of one gift under two event ids: the first claws its diamonds back, the
    second is dead-lettered `already_reversed` and changes nothing."""
    first, second = (make.reversal(creator, gift_event_id) for _ in range(2))
    await consumers.publish(topics.GIFTS_REVERSED, first)
    await _wait_for_row(engine, "applied_events", str(first["event_id"]))
    assert await _diamonds(engine, creator) == 0
    await consumers.publish(topics.GIFTS_REVERSED, second)
    await _wait_for_row(engine, "dead_letters", str(second["event_id"]))
    error = await _scalar(
        engine, "SELECT error FROM dead_letters WHERE event_id = :id", id=second["event_id"]
    )
    assert error == "already_reversed"
    assert await _diamonds(engine, creator) == 0


def test_a_gift_id_is_the_same_for_the_same_event_and_moment_in_any_zone() -> None:
    elsewhere = MOMENT.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert gift_transfer_id("gift-1", MOMENT) == gift_transfer_id("gift-1", elsewhere)
    assert gift_transfer_id("gift-1", MOMENT) != gift_transfer_id("gift-2", MOMENT)
    assert gift_transfer_id("gift-1", MOMENT) != legacy_gift_transfer_id("gift-1")


def test_a_gift_id_begins_with_its_millisecond_so_later_gifts_sort_after() -> None:
    first = gift_transfer_id("gift-b", MOMENT)
    assert first.version == 7
    assert first.int >> 80 == unix_ms_of(MOMENT)
    assert gift_transfer_id("gift-a", MOMENT + timedelta(milliseconds=1)).int > first.int


async def test_a_gift_is_stored_under_its_time_ordered_id(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    gift = make.gift(_creator(), coins=8)
    await consumers.publish(topics.GIFTS_SENT, gift)
    await _wait_for_row(engine, "applied_events", str(gift["event_id"]))
    stored_id = await _scalar(
        engine, "SELECT id FROM transfers WHERE event_id = :id", id=gift["event_id"]
    )
    occurred_at = datetime.fromisoformat(str(gift["occurred_at"]))
    assert stored_id == gift_transfer_id(str(gift["event_id"]), occurred_at)


async def test_a_gift_is_reversed_once_whatever_the_reversal_event(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = _creator()
    gift = make.gift(creator, coins=30)
    await consumers.publish(topics.GIFTS_SENT, gift)
    await _wait_for_row(engine, "applied_events", str(gift["event_id"]))
    await _reverse_twice(consumers, engine, creator, str(gift["event_id"]))


async def _store_as_before(engine: AsyncEngine, gift: dict[str, object]) -> None:
    """Store `gift` as it was stored before time-ordered ids: its transfer under the name-based
    id, its event recorded as applied in the same transaction."""
    event = GiftSent.model_validate_json(json.dumps(gift))
    async with engine.connect() as conn:
        rate_cards = await load_rate_cards(conn)
    planned = gift_transfer(event, rate_cards.in_force_at(event.occurred_at))
    planned = planned._replace(transfer_id=legacy_gift_transfer_id(event.event_id))
    ledger = Ledger(engine)
    coins = batch_coin_leg(1, 1)
    account_ids = await ledger.account_ids(
        [GIFT_DIAMOND_SOURCE, coins.debit, coins.credit, planned.creator_account]
    )
    batch = gift_batch([event], {event.event_id: planned}, account_ids)
    async for tx in ledger.transactions():
        async with tx:
            await tx.connection.execute(
                text(
                    "INSERT INTO applied_events (topic, event_id, payload_sha256, creator_id,"
                    " occurred_at, kafka_partition, kafka_offset)"
                    " VALUES (:topic, :event_id, :sha256, :creator_id, :occurred_at, 0, 0)"
                ),
                {
                    "topic": topics.GIFTS_SENT,
                    "event_id": event.event_id,
                    "sha256": payload_sha256(event),
                    "creator_id": event.creator_id,
                    "occurred_at": event.occurred_at,
                },
            )
            await tx.post_new(batch)


async def test_a_gift_stored_under_the_name_based_id_is_still_reversed_once(
    consumers: RunningConsumers, engine: AsyncEngine
) -> None:
    creator = _creator()
    gift = make.gift(creator, coins=40)
    await _store_as_before(engine, gift)
    assert await _diamonds(engine, creator) == 20_000
    redelivered_before = consumers.ingestor.counts.duplicates
    await consumers.publish(topics.GIFTS_SENT, gift)  # a late redelivery changes nothing

    async def counted() -> bool:
        return consumers.ingestor.counts.duplicates > redelivered_before

    await wait_until(counted)
    await _reverse_twice(consumers, engine, creator, str(gift["event_id"]))
    assert await ledger_problems(engine) == []
