"""`RateCardBook.in_force_at` reuses the starts it compared the last moment with when the next
moment has the same tzinfo object (the events of a batch share one). Whatever the order of the
zones, the card in force stays the last one started at or before the moment in UTC, and a
moment without a zone is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.rates.rate_cards import BEGINNING_OF_TIME, RateCard, RateCardBook

ZONES: list[tzinfo] = [
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=5, minutes=30)),  # equal to the one before, another object
    timezone(timedelta(hours=-8)),
    ZoneInfo("America/New_York"),
    ZoneInfo("Europe/Paris"),
]
STARTS = [
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # New York's clocks go forward that day
    datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # within New York's repeated hour
    datetime(2027, 1, 1, tzinfo=UTC),
]
BOOK = RateCardBook(
    [
        RateCard(version, start, 500 + version, 100)
        for version, start in enumerate([BEGINNING_OF_TIME, *STARTS], 1)
    ]
)
near_starts = st.sampled_from(STARTS).flatmap(
    lambda start: st.integers(-3 * 3600, 3 * 3600).map(lambda s: start + timedelta(seconds=s))
)
moments_in_utc = near_starts | st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)
).map(lambda naive: naive.replace(tzinfo=UTC))


def in_force_by_hand(moment: datetime) -> int:
    utc_moment = moment.astimezone(UTC)
    return [card for card in BOOK.cards if card.effective_from <= utc_moment][-1].version


@given(
    st.lists(
        st.tuples(moments_in_utc, st.integers(0, len(ZONES) - 1), st.integers(1, 3)),
        min_size=1,
        max_size=30,
    )
)
def test_runs_of_moments_in_shared_zones_get_the_card_started_last_in_utc(
    runs: list[tuple[datetime, int, int]],
) -> None:
    for utc_moment, zone_index, repeats in runs:
        for second in range(repeats):
            moment = (utc_moment + timedelta(seconds=second)).astimezone(ZONES[zone_index])
            assert BOOK.in_force_at(moment).version == in_force_by_hand(moment)


def test_a_moment_without_a_zone_is_refused_after_moments_with_one() -> None:
    book = RateCardBook([RateCard(1, BEGINNING_OF_TIME, 500, 100)])
    assert book.in_force_at(datetime(2026, 1, 1, tzinfo=UTC)).version == 1
    with pytest.raises(ValueError, match="aware moment"):
        book.in_force_at(datetime(2026, 1, 1))
    assert book.in_force_at(datetime(2026, 1, 1, tzinfo=ZONES[1])).version == 1
    with pytest.raises(ValueError, match="aware moment"):
        book.in_force_at(datetime(2026, 1, 1))
