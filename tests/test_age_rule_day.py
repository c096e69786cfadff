"""The age rule is judged on the date at UTC-12 (`services.cashout.eligibility.age_day`), the
earliest date anywhere at that moment, of the request's moment, or of its approval when the
request is dated ahead: no creator is paid before their 18th birthday has begun where they live,
whatever offset upstream wrote and however far ahead it dated the request."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas import topics
from services.cashout.eligibility import age_day
from services.ingestion.ingestor import Ingestor
from services.ingestion.records import InputRecord
from services.rates.rate_cards import load_rate_cards
from tests import event_factory as make
from tests.ingestion_fixtures import make_ingestor

PARTITION = 5
_offsets = iter(range(10**12, 10**13))


async def _ingestor(engine: AsyncEngine) -> Ingestor:
    async with engine.connect() as conn:
        return make_ingestor(engine, await load_rate_cards(conn))


async def _apply(ingestor: Ingestor, topic: str, event: dict[str, Any]) -> None:
    record = InputRecord(
        topic, PARTITION, next(_offsets), str(event["creator_id"]).encode(), make.encode(event)
    )
    report = await ingestor.process(topic, [record])
    assert report.applied == 1, report


async def _creator_born(ingestor: Ingestor, birth_date: date) -> str:
    creator = f"creator-{uuid.uuid4().hex[:10]}"
    await _apply(
        ingestor,
        topics.CREATORS_UPDATED,
        {**make.creator_update(creator), "birth_date": birth_date.isoformat()},
    )
    return creator


async def _refused_rule(
    engine: AsyncEngine, ingestor: Ingestor, creator: str, occurred_at: str
) -> str | None:
    """Request 2,000 Diamonds the creator does not hold: the rule the request is refused for,
    `available_balance` once every eligibility rule has passed."""
    request = {**make.cashout_request(creator), "occurred_at": occurred_at}
    await _apply(ingestor, topics.CASHOUTS_REQUESTED, request)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT status, rejected_rule FROM cashouts WHERE cashout_id = :id"),
                {"id": request["event_id"]},
            )
        ).one()
    assert row.status == "rejected"
    return str(row.rejected_rule)


def test_the_age_day_is_the_date_at_utc_minus_12() -> None:
    assert age_day(datetime(2026, 6, 15, 11, 59, 59, tzinfo=UTC)) == date(2026, 6, 14)
    assert age_day(datetime(2026, 6, 15, 12, tzinfo=UTC)) == date(2026, 6, 15)
    # The same instant written with another offset is the same day.
    assert age_day(datetime.fromisoformat("2026-06-14T20:00:00-04:00")) == date(2026, 6, 14)
    assert age_day(datetime.fromisoformat("2026-06-15T13:30:00+01:30")) == date(2026, 6, 15)


async def test_a_request_before_the_18th_birthday_has_begun_everywhere_is_refused_for_age(
    engine: AsyncEngine,
) -> None:
    ingestor = await _ingestor(engine)
    creator = await _creator_born(ingestor, date(2008, 6, 15))
    # The evening before the birthday in New York: already the birthday in UTC.
    evening_before = "2026-06-14T20:00:00-04:00"
    assert await _refused_rule(engine, ingestor, creator, evening_before) == "age"
    # 00:30 on the birthday in Berlin: still the day before at UTC-12.
    assert await _refused_rule(engine, ingestor, creator, "2026-06-15T00:30:00+02:00") == "age"
    # Noon UTC on the birthday: the birthday has begun everywhere; age passes.
    at_noon = "2026-06-15T12:00:00Z"
    assert await _refused_rule(engine, ingestor, creator, at_noon) == "available_balance"


async def test_a_request_dated_ahead_is_judged_on_the_day_it_is_approved(
    engine: AsyncEngine,
) -> None:
    ingestor = await _ingestor(engine)
    tomorrow = age_day(datetime.now(UTC)) + timedelta(days=1)
    try:
        birthday = tomorrow.replace(year=tomorrow.year - 18)
    except ValueError:  # 29 February: a creator born then turns 18 on 1 March
        birthday = date(tomorrow.year - 18, 3, 1)
    creator = await _creator_born(ingestor, birthday)
    dated_ahead = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    assert await _refused_rule(engine, ingestor, creator, dated_ahead) == "age"
