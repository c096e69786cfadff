"""The rate card in force at a moment: the last version that started at or before it, in UTC,
whatever offset the moment is written in."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.events import GiftSent
from services.rates.rate_cards import BEGINNING_OF_TIME, RateCard, RateCardBook

offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
moments = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2100, 1, 1), timezones=offsets
)
later_starts = st.lists(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(
        lambda naive: naive.replace(tzinfo=UTC)
    ),
    max_size=5,
    unique=True,
)


GIFT = {
    "event_id": "e",
    "sender_id": "f",
    "creator_id": "c",
    "surface": "live",
    "live_id": "l",
    "gift_id": "rose",
    "coins": 1,
}


def book_of(later: list[datetime]) -> RateCardBook:
    starts = [BEGINNING_OF_TIME, *sorted(later)]
    return RateCardBook(
        [RateCard(version, start, 500 + version, 100) for version, start in enumerate(starts, 1)]
    )


def in_force_by_hand(book: RateCardBook, moment: datetime) -> int:
    utc_moment = moment.astimezone(UTC)
    started = [card for card in book.cards if card.effective_from <= utc_moment]
    return started[-1].version


@given(later_starts, st.lists(moments, min_size=1, max_size=20))
def test_the_card_in_force_is_the_last_one_started_in_utc(
    later: list[datetime], at: list[datetime]
) -> None:
    book = book_of(later)
    for moment in at:  # several moments, so the cached starts of a zone are reused
        assert book.in_force_at(moment).version == in_force_by_hand(book, moment)


def test_a_start_and_the_microsecond_before_it_in_another_offset() -> None:
    start = datetime(2026, 6, 1, tzinfo=UTC)
    book = book_of([start])
    east = timezone(timedelta(hours=2))
    assert book.in_force_at(start.astimezone(east)).version == 2
    assert book.in_force_at((start - timedelta(microseconds=1)).astimezone(east)).version == 1
    west = timezone(timedelta(hours=-3))
    assert book.in_force_at(start.astimezone(west)).version == 2


def test_events_parsed_from_json_share_their_zone_and_get_the_same_answers() -> None:
    start = datetime(2026, 6, 1, tzinfo=UTC)
    book = book_of([start])
    for text, version in [
        ("2026-06-01T00:00:00Z", 2),
        ("2026-05-31T23:59:59.999999Z", 1),
        ("2026-06-01T01:59:59+02:00", 1),
        ("2026-06-01T02:00:00+02:00", 2),
        ("2026-05-31T22:00:00-02:00", 2),
    ]:
        gift = GiftSent.model_validate_json(json.dumps({**GIFT, "occurred_at": text}))
        assert book.in_force_at(gift.occurred_at).version == version, text


def test_the_repeated_hour_of_a_daylight_saving_zone_is_judged_in_utc() -> None:
    new_york = ZoneInfo("America/New_York")  # 2026-11-01 02:00 EDT falls back to 01:00 EST
    start = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)  # 01:00 EST, the second time 01:00 comes
    book = book_of([start])
    first_0140 = datetime(2026, 11, 1, 1, 40, tzinfo=new_york, fold=0)  # 05:40 UTC
    second_0140 = datetime(2026, 11, 1, 1, 40, tzinfo=new_york, fold=1)  # 06:40 UTC
    assert book.in_force_at(first_0140).version == 1
    assert book.in_force_at(second_0140).version == 2
    assert book.in_force_at(start.astimezone(new_york)).version == 2


@given(
    later_starts,
    st.lists(
        st.datetimes(
            min_value=datetime(2000, 1, 2),
            max_value=datetime(2100, 1, 1),
            timezones=st.just(ZoneInfo("Europe/London")),
        ),
        min_size=1,
    ),
)
def test_a_daylight_saving_zone_gets_the_utc_answer(
    later: list[datetime], at: list[datetime]
) -> None:
    book = book_of(later)
    for moment in at:
        assert book.in_force_at(moment).version == in_force_by_hand(book, moment)


def test_a_moment_without_a_timezone_is_refused() -> None:
    with pytest.raises(ValueError, match="aware moment"):
        book_of([]).in_force_at(datetime(2026, 1, 1))
