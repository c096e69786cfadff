"""The versioned rate card: how many milli-diamonds a coin earns a creator, and what a diamond is
worth at cash-out. Versions are effective-dated; an event is priced by the version in force at its
`occurred_at`, so pricing does not depend on when (or how often) the event is delivered."""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from pydantic_core import TzInfo
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import OCCURRED_AT_MAX

MILLI_DIAMONDS_PER_DIAMOND = 1_000
# What the rate_cards table keeps (its CHECK constraints, migration 0002).
MILLI_DIAMONDS_PER_COIN_MAX = 1_000
DIAMONDS_PER_USD_MAX = 1_000_000
RATE_CARD_NOTICE_S = 300
RATE_CARD_REFRESH_S = 10.0
BEGINNING_OF_TIME = datetime.min.replace(tzinfo=UTC)  # PostgreSQL's '-infinity'
ZONES_CACHED_MAX = 64
# tzinfo types whose offset never changes: pydantic's parsed offsets and datetime.timezone.
FIXED_OFFSET_ZONE_TYPES: frozenset[type[tzinfo]] = frozenset({TzInfo, type(UTC)})


@dataclass(frozen=True, slots=True)
class RateCard:
    version: int
    effective_from: datetime
    milli_diamonds_per_coin: int
    diamonds_per_usd: int
    note: str = ""
    created_by: str | None = None  # who added it; None: before migration 0031, which kept none

    @property
    def always_in_force(self) -> bool:
        """Whether this is the first version, in force since the beginning of time."""
        return self.effective_from == BEGINNING_OF_TIME

    def gift_milli_diamonds(self, coins: int, count: int) -> int:
        """The creator's diamonds for `count` gifts of `coins` coins, in milli-diamonds.

        Exact: the rate is an integer number of milli-diamonds per coin, so nothing is rounded.
        """
        return coins * count * self.milli_diamonds_per_coin


def _aware(card: RateCard) -> RateCard:
    """The driver returns PostgreSQL's '-infinity' as a naive datetime.min: give it UTC."""
    if card.effective_from.tzinfo is not None:
        return card
    return dataclasses.replace(card, effective_from=BEGINNING_OF_TIME)


def _start_in(start: datetime, zone: tzinfo) -> datetime:
    """`start` in `zone`. The beginning of time has no earlier local time west of UTC: there it
    becomes the zone's earliest moment, a few hours later, and still before any real start. The
    first card answers every moment before the second card's start, so that shift changes no
    answer. Likewise a start in the last hours of year 9999 has no local time east of UTC: it
    becomes the zone's latest moment, after every moment an event may carry (`add_rate_card`
    refuses such starts now; an older one may be stored)."""
    try:
        return start.astimezone(zone)
    except OverflowError:
        if start == BEGINNING_OF_TIME:
            return datetime.min.replace(tzinfo=zone)
        return datetime.max.replace(tzinfo=zone)


class RateCardBook:
    """All rate card versions, sorted by `effective_from`; reload after adding one."""

    def __init__(self, cards: list[RateCard]) -> None:
        if not cards:
            raise ValueError("no rate card: the migrations seed version 1")
        self._cards = sorted((_aware(card) for card in cards), key=lambda c: c.effective_from)
        self._starts = [card.effective_from for card in self._cards]
        self._starts_by_zone: dict[tzinfo, list[datetime]] = {}
        # The zone of the last moment priced and the starts to compare it with: the events of a
        # batch share one tzinfo object, so most calls skip the lookup by zone. Never None.
        self._last_zone: tzinfo = UTC
        self._last_starts = self._starts_in(UTC)

    def in_force_at(self, moment: datetime) -> RateCard:
        zone = moment.tzinfo
        starts = self._last_starts if zone is self._last_zone else self._starts_for(zone, moment)
        if moment >= starts[-1]:  # the newest card prices most events
            return self._cards[-1]
        index = bisect.bisect_right(starts, moment) - 1
        return self._cards[max(index, 0)]

    def _starts_for(self, zone: tzinfo | None, moment: datetime) -> list[datetime]:
        """The starts to compare a moment in `zone` with, remembered as the last zone's."""
        if zone is None:
            raise ValueError(f"a rate card is in force at an aware moment, not at {moment}")
        # A zone with daylight saving repeats an hour of wall-clock time: compare in UTC there.
        fixed_offset = type(zone) in FIXED_OFFSET_ZONE_TYPES
        starts = self._starts_in(zone) if fixed_offset else self._starts
        self._last_zone, self._last_starts = zone, starts
        return starts

    def _starts_in(self, zone: tzinfo) -> list[datetime]:
        """The cards' starts written in `zone`. Two datetimes that share a tzinfo object compare
        field by field; with different ones, each comparison works out both UTC offsets. Events
        parsed from one offset share one tzinfo, so this saves that work on every event.

        Only for a fixed offset: a field-by-field comparison ignores `fold`, so in a zone with
        daylight saving the repeated hour would compare an hour off."""
        starts = self._starts_by_zone.get(zone)
        if starts is None:
            if len(self._starts_by_zone) >= ZONES_CACHED_MAX:
                self._starts_by_zone.clear()
            starts = [_start_in(start, zone) for start in self._starts]
            self._starts_by_zone[zone] = starts
        return starts

    def version(self, version: int) -> RateCard:
        for card in self._cards:
            if card.version == version:
                return card
        raise KeyError(f"no rate card version {version}")

    @property
    def cards(self) -> list[RateCard]:
        return list(self._cards)


async def load_rate_cards(conn: AsyncConnection) -> RateCardBook:
    rows = await conn.execute(
        text(
            "SELECT version, effective_from, milli_diamonds_per_coin, diamonds_per_usd, note,"
            " created_by FROM rate_cards ORDER BY effective_from"
        )
    )
    return RateCardBook([RateCard(*row) for row in rows])


async def add_rate_card(
    conn: AsyncConnection,
    *,
    effective_from: datetime,
    milli_diamonds_per_coin: int,
    diamonds_per_usd: int,
    note: str = "",
    created_by: str,
) -> RateCard:
    """Add the next version, recording who added it. Versions are append-only; a mistake is
    fixed by a newer version.

    A version must take effect at least `RATE_CARD_NOTICE_S` from now: running consumers reload
    the rate cards every `RATE_CARD_REFRESH_S`, and an event must never be priced by a card that
    was not yet known when it was applied (a redelivery would then price it differently)."""
    if effective_from.tzinfo is None:
        raise ValueError("effective_from needs a timezone")
    if not 1 <= milli_diamonds_per_coin <= MILLI_DIAMONDS_PER_COIN_MAX:
        raise ValueError(
            f"milli-diamonds per coin must be between 1 and {MILLI_DIAMONDS_PER_COIN_MAX}"
            f" (a coin is worth at most one diamond), not {milli_diamonds_per_coin}"
        )
    if not 1 <= diamonds_per_usd <= DIAMONDS_PER_USD_MAX:
        raise ValueError(
            f"diamonds per USD must be between 1 and {DIAMONDS_PER_USD_MAX:,},"
            f" not {diamonds_per_usd}"
        )
    if effective_from > OCCURRED_AT_MAX:
        raise ValueError(
            f"effective_from must be at most {OCCURRED_AT_MAX.isoformat()}, the latest moment"
            " an event may carry"
        )
    now = (await conn.execute(text("SELECT now()"))).scalar_one()
    if effective_from < now + timedelta(seconds=RATE_CARD_NOTICE_S):
        raise ValueError(
            f"effective_from must be at least {RATE_CARD_NOTICE_S} s in the future"
            f" (now is {now.isoformat()})"
        )
    taken = (
        await conn.execute(
            text("SELECT version FROM rate_cards WHERE effective_from = :at"),
            {"at": effective_from},
        )
    ).scalar_one_or_none()
    if taken is not None:
        raise ValueError(
            f"rate card version {taken} takes effect at {effective_from.isoformat()} already:"
            " a version is never changed, add one at another moment"
        )
    row = (
        await conn.execute(
            text(
                """
                INSERT INTO rate_cards (version, effective_from, milli_diamonds_per_coin,
                    diamonds_per_usd, note, created_by)
                SELECT coalesce(max(version), 0) + 1, :effective_from, :per_coin, :per_usd, :note,
                    :created_by
                FROM rate_cards
                RETURNING version, effective_from, milli_diamonds_per_coin, diamonds_per_usd, note,
                    created_by
                """
            ),
            {
                "effective_from": effective_from,
                "per_coin": milli_diamonds_per_coin,
                "per_usd": diamonds_per_usd,
                "note": note,
                "created_by": created_by,
            },
        )
    ).one()
    return RateCard(*row)
