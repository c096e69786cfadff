"""Accounting periods: calendar months in UTC, written `YYYY-MM`.

A period is the half-open range `[start, end)` of commit timestamps (`transfers.created_at`):
`2026-11` runs from 2026-11-01T00:00:00Z up to, not including, 2026-12-01T00:00:00Z.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

PERIOD_YEAR_MIN: Final = 1970
PERIOD_YEAR_MAX: Final = 8999
PERIOD_PATTERN: Final = r"^(19[7-9][0-9]|[2-8][0-9]{3})-(0[1-9]|1[0-2])$"
PERIOD_EXAMPLE: Final = "2026-11"
_PERIOD = re.compile(PERIOD_PATTERN)


@dataclass(frozen=True, slots=True)
class Period:
    year: int
    month: int

    def __post_init__(self) -> None:
        # parse_period bounds the years; the month after PERIOD_YEAR_MAX's last is still a period
        assert PERIOD_YEAR_MIN <= self.year <= PERIOD_YEAR_MAX + 1, self.year
        assert 1 <= self.month <= 12, self.month

    @property
    def text(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def last_day(self) -> date:
        return self.next().first_day - timedelta(days=1)

    @property
    def start(self) -> datetime:
        """The first instant of the period, UTC."""
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant after the period, UTC."""
        return self.next().start

    def next(self) -> Period:
        if self.month == 12:
            return Period(self.year + 1, 1)
        return Period(self.year, self.month + 1)

    def previous(self) -> Period:
        if self.month == 1:
            return Period(self.year - 1, 12)
        return Period(self.year, self.month - 1)

    def __str__(self) -> str:
        return self.text


def parse_period(value: str) -> Period:
    """`YYYY-MM` in the years PERIOD_YEAR_MIN to PERIOD_YEAR_MAX; anything else is refused."""
    if _PERIOD.fullmatch(value) is None:
        raise ValueError(
            f"not a period: {value!r} (YYYY-MM, e.g. {PERIOD_EXAMPLE}, years "
            f"{PERIOD_YEAR_MIN} to {PERIOD_YEAR_MAX})"
        )
    return Period(int(value[:4]), int(value[5:7]))


def period_of(moment: datetime) -> Period:
    """The period holding `moment` (an aware datetime)."""
    utc = moment.astimezone(UTC)
    return Period(utc.year, utc.month)
