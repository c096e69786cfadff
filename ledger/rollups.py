"""Transfers pre-summed per UTC day (migration 0022), for reads over a month that would otherwise
scan every transfer of it: the journal and the console's overview.

Rolling. `roll_days` sums a day once it is final: once no transaction can still store a transfer
stamped in it. A batch stamps its transfers with the database's clock once it holds its account
locks, inside the statement that updates the accounts' totals, and commits a moment later; so a
day is final when
- it ended at least FINAL_AFTER ago by the database's clock (FINAL_AFTER is above the longest
  statement the service allows, `DB_STATEMENT_TIMEOUT_MS` at most 600 s), and
- after that, the roller has waited for every batch in flight: `wait_for_ledger_writers` takes
  `accounts` in SHARE mode, which waits for every transaction that has updated account totals
  and not finished, as a month-end close does. A batch that updates totals after that was
  stamped after the day's end.
Each day is rolled in one transaction: its `rolled_days` row, its posted movements per account and
code (`day_account_totals`, the journal's filter `flags & 10 = 0`) and its gift events per
surface (`day_gift_totals`, every transfer with code gift_diamonds, as the overview counts them,
with the gifts sent by those that recorded their `count`). Days are rolled in order without a
gap, from the day of the first transfer; a day already rolled is left as it is, so running the
roller again, or two at once, changes nothing. A round rolls at most `day_count_max` days.

Reading. `day_split` cuts a range of commit timestamps into the rolled days wholly inside it and
the rest (at most two ranges, before and after them), which readers scan in `transfers`: their
totals are exact whether the roller is up to date, behind, or never ran.

Checking. `rolled_day_differences` recomputes rolled days from the transfers and names each one
whose stored totals differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.model import TransferCode

# A day is final this long after its end (and once the batches in flight have committed).
FINAL_AFTER: Final = timedelta(minutes=15)
DAYS_PER_ROUND_MAX: Final = 7
WRITERS_WAIT_MS: Final = 5_000
DIFFERENCE_COUNT_MAX: Final = 100
ONE_DAY: Final = timedelta(days=1)

CHECK_COUNT: Final = "rolled_transfer_count"
CHECK_ACCOUNTS: Final = "day_account_totals_match_transfers"
CHECK_GIFTS: Final = "day_gift_totals_match_transfers"


def day_start(day: date) -> datetime:
    """The first instant of the UTC day."""
    return datetime.combine(day, time(), tzinfo=UTC)


def last_final_day(now: datetime) -> date:
    """The latest UTC day that has ended at least FINAL_AFTER before `now`."""
    return (now - FINAL_AFTER).astimezone(UTC).date() - ONE_DAY


# Rolling ------------------------------------------------------------------------------------


async def _database_clock(conn: AsyncConnection) -> datetime:
    now = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    assert isinstance(now, datetime)
    return now


async def _next_day(conn: AsyncConnection) -> date | None:
    """The day after the last rolled one; else the first transfer's day (None: no transfers)."""
    last = (await conn.execute(text("SELECT max(day) FROM rolled_days"))).scalar_one()
    if last is not None:
        assert isinstance(last, date)
        return last + ONE_DAY
    first = (
        await conn.execute(text("SELECT (min(created_at) AT TIME ZONE 'UTC')::date FROM transfers"))
    ).scalar_one()
    assert first is None or isinstance(first, date)
    return first


async def _wait_for_writers(engine: AsyncEngine) -> datetime:
    """Wait for the batches in flight (a transaction of its own, released at once); the
    database's clock once they are done."""
    async with engine.begin() as conn:
        at = (
            await conn.execute(
                text("SELECT wait_for_ledger_writers(:wait_ms)"), {"wait_ms": WRITERS_WAIT_MS}
            )
        ).scalar_one()
    assert isinstance(at, datetime)
    return at


_ROLL_DAY_ROW = text(
    """
    INSERT INTO rolled_days (day, transfer_count)
    SELECT :day, count(*) FROM transfers WHERE created_at >= :from_time AND created_at < :to_time
    ON CONFLICT (day) DO NOTHING
    RETURNING day
    """
)

_ROLL_ACCOUNT_TOTALS = text(
    """
    INSERT INTO day_account_totals (day, account_id, code, debits_minor, credits_minor)
    SELECT :day, account_id, code, sum(debit)::bigint, sum(credit)::bigint
    FROM (
        SELECT debit_account_id AS account_id, code, amount AS debit, 0::bigint AS credit
        FROM transfers
        WHERE flags & 10 = 0 AND created_at >= :from_time AND created_at < :to_time
        UNION ALL
        SELECT credit_account_id, code, 0, amount
        FROM transfers
        WHERE flags & 10 = 0 AND created_at >= :from_time AND created_at < :to_time
    ) moves
    GROUP BY account_id, code
    """
)

# A gift event's gifts: `count` in its metadata, recorded from migration 0042 on (a gift booked
# before has none, and is counted as an event only).
GIFT_COUNTS: Final = """count(*) AS gift_events, count(metadata -> 'count') AS counted_events,
    coalesce(sum(CAST(metadata ->> 'count' AS bigint)), 0)::bigint AS counted_gifts"""

_ROLL_GIFT_TOTALS = text(
    f"""
    INSERT INTO day_gift_totals (
        day, surface, gift_events, counted_events, counted_gifts, coins, milli_diamonds)
    SELECT :day, surface, gift_events, counted_events, counted_gifts, coins, milli_diamonds
    FROM (
        SELECT metadata ->> 'surface' AS surface, {GIFT_COUNTS},
               coalesce(sum(CAST(metadata ->> 'coins' AS bigint)), 0)::bigint AS coins,
               sum(amount)::bigint AS milli_diamonds
        FROM transfers
        WHERE code = :gift_code AND created_at >= :from_time AND created_at < :to_time
        GROUP BY 1
    ) gifts
    """  # noqa: S608 (constant expression)
)


async def _roll_day(engine: AsyncEngine, day: date) -> bool:
    """Sum one final day in one transaction; False when it was rolled already."""
    values = {
        "day": day,
        "from_time": day_start(day),
        "to_time": day_start(day + ONE_DAY),
        "gift_code": int(TransferCode.GIFT_DIAMONDS),
    }
    async with engine.begin() as conn:
        if (await conn.execute(_ROLL_DAY_ROW, values)).first() is None:
            return False
        await conn.execute(_ROLL_ACCOUNT_TOTALS, values)
        await conn.execute(_ROLL_GIFT_TOTALS, values)
    return True


async def roll_days(engine: AsyncEngine, *, day_count_max: int = DAYS_PER_ROUND_MAX) -> list[date]:
    """Roll up to `day_count_max` final days not rolled yet, in order; the days rolled."""
    assert 1 <= day_count_max <= 366, day_count_max
    async with engine.connect() as conn:
        first = await _next_day(conn)
        now = await _database_clock(conn)
    if first is None or first > last_final_day(now):
        return []
    # Every batch that could still be stamped in a day up to last_final_day(...) has committed
    # once the wait is over; batches after it are stamped later than its clock.
    last = min(
        last_final_day(await _wait_for_writers(engine)), first + (day_count_max - 1) * ONE_DAY
    )
    rolled = []
    day = first
    while day <= last:
        if not await _roll_day(engine, day):
            break  # another roller is at it
        rolled.append(day)
        day += ONE_DAY
    return rolled


async def roll_all_days(engine: AsyncEngine, *, round_count_max: int = 10_000) -> int:
    """Rounds of `roll_days` until every final day is rolled (or `round_count_max` rounds);
    how many days were rolled."""
    total = 0
    for _ in range(round_count_max):
        rolled = await roll_days(engine)
        total += len(rolled)
        if len(rolled) < DAYS_PER_ROUND_MAX:
            break
    return total


# Reading ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaySplit:
    """A range of commit timestamps `[start, end)` (start None: from the first transfer) as the
    rolled days `[rolled_from, rolled_to)` inside it and the rest: `[start, rolled_from)` and
    `[rolled_to, end)` in timestamps, to scan in `transfers`."""

    start: datetime | None
    end: datetime
    rolled_from: date
    rolled_to: date

    def parameters(self, prefix: str = "") -> dict[str, Any]:
        """Bound parameters for `raw_ranges(prefix)` and `rolled_days(prefix)`."""
        return {
            f"{prefix}rolled_from": self.rolled_from,
            f"{prefix}rolled_to": self.rolled_to,
            f"{prefix}raw_start": self.start,
            f"{prefix}raw_rolled_from": self._inside(day_start(self.rolled_from)),
            f"{prefix}raw_rolled_to": self._inside(day_start(self.rolled_to)),
            f"{prefix}raw_end": self.end,
        }

    def _inside(self, moment: datetime) -> datetime:
        """`moment` moved into `[start, end]`: with no rolled day, both raw ranges meet there."""
        if self.start is not None and moment < self.start:
            return self.start
        return min(moment, self.end)


def raw_ranges(prefix: str = "") -> str:
    """The part of a split's range that is not rolled up, as a filter on `created_at` of
    `transfers`: two ranges, each found through the BRIN index on created_at."""
    return (
        f"((created_at >= coalesce(CAST(:{prefix}raw_start AS timestamptz), '-infinity')"
        f" AND created_at < :{prefix}raw_rolled_from)"
        f" OR (created_at >= :{prefix}raw_rolled_to AND created_at < :{prefix}raw_end))"
    )


def rolled_days(prefix: str = "") -> str:
    """The rolled days of a split, as a filter on `day` of the rolled tables."""
    return f"(day >= :{prefix}rolled_from AND day < :{prefix}rolled_to)"


def _first_whole_day(start: datetime | None) -> date:
    if start is None:
        return date.min
    utc = start.astimezone(UTC)
    return utc.date() if utc == day_start(utc.date()) else utc.date() + ONE_DAY


async def day_split(conn: AsyncConnection, start: datetime | None, end: datetime) -> DaySplit:
    """The rolled days wholly inside `[start, end)` (rolled days have no gaps) and the rest."""
    first = _first_whole_day(start)
    end_day = end.astimezone(UTC).date()  # days before it end by `end`
    row = (
        await conn.execute(
            text("SELECT min(day), max(day) FROM rolled_days WHERE day >= :first AND day < :end"),
            {"first": first, "end": end_day},
        )
    ).one()
    if row[0] is None:
        return DaySplit(start, end, end_day, end_day)
    return DaySplit(start, end, row[0], row[1] + ONE_DAY)


# Checking -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RolledDayDifference:
    day: date
    check: str


_RAW_COUNTS = """
    SELECT d.day, d.transfer_count AS rolled, count(t.created_at) AS raw
    FROM rolled_days d
    LEFT JOIN transfers t
      ON t.created_at >= d.day::timestamp AT TIME ZONE 'UTC'
     AND t.created_at < (d.day + 1)::timestamp AT TIME ZONE 'UTC'
    WHERE d.day >= :from_day AND d.day < :to_day
    GROUP BY d.day, d.transfer_count
    HAVING d.transfer_count <> count(t.created_at)
"""

_ACCOUNT_DIFFERENCES = """
    WITH raw AS (
        SELECT (created_at AT TIME ZONE 'UTC')::date AS day, account_id, code,
               sum(debit)::bigint AS debits, sum(credit)::bigint AS credits
        FROM (
            SELECT created_at, debit_account_id AS account_id, code, amount AS debit,
                   0::bigint AS credit
            FROM transfers
            WHERE flags & 10 = 0 AND created_at >= :from_time AND created_at < :to_time
            UNION ALL
            SELECT created_at, credit_account_id, code, 0, amount
            FROM transfers
            WHERE flags & 10 = 0 AND created_at >= :from_time AND created_at < :to_time
        ) moves
        GROUP BY 1, 2, 3
    ), rolled AS (
        SELECT day, account_id, code, debits_minor AS debits, credits_minor AS credits
        FROM day_account_totals WHERE day >= :from_day AND day < :to_day
    )
    SELECT DISTINCT day
    FROM rolled FULL JOIN raw USING (day, account_id, code)
    WHERE day IN (SELECT day FROM rolled_days WHERE day >= :from_day AND day < :to_day)
      AND (rolled.debits IS DISTINCT FROM raw.debits
           OR rolled.credits IS DISTINCT FROM raw.credits)
"""

_GIFT_DIFFERENCES = f"""
    WITH raw AS (
        SELECT (created_at AT TIME ZONE 'UTC')::date AS day, metadata ->> 'surface' AS surface,
               {GIFT_COUNTS},
               coalesce(sum(CAST(metadata ->> 'coins' AS bigint)), 0)::bigint AS coins,
               sum(amount)::bigint AS milli_diamonds
        FROM transfers
        WHERE code = :gift_code AND created_at >= :from_time AND created_at < :to_time
        GROUP BY 1, 2
    ), rolled AS (
        SELECT day, surface, gift_events, counted_events, counted_gifts, coins, milli_diamonds
        FROM day_gift_totals WHERE day >= :from_day AND day < :to_day
    )
    SELECT DISTINCT coalesce(rolled.day, raw.day) AS day
    FROM rolled FULL JOIN raw
      ON raw.day = rolled.day AND raw.surface IS NOT DISTINCT FROM rolled.surface
    WHERE coalesce(rolled.day, raw.day)
              IN (SELECT day FROM rolled_days WHERE day >= :from_day AND day < :to_day)
      AND (rolled.gift_events IS DISTINCT FROM raw.gift_events
           OR rolled.counted_events IS DISTINCT FROM raw.counted_events
           OR rolled.counted_gifts IS DISTINCT FROM raw.counted_gifts
           OR rolled.coins IS DISTINCT FROM raw.coins
           OR rolled.milli_diamonds IS DISTINCT FROM raw.milli_diamonds)
"""  # noqa: S608 (constant expression)


async def rolled_day_differences(
    conn: AsyncConnection,
    *,
    from_day: date | None = None,
    to_day: date | None = None,
    limit: int = DIFFERENCE_COUNT_MAX,
) -> list[RolledDayDifference]:
    """The rolled days in `[from_day, to_day)` (default: all) whose stored totals differ from
    the transfers' (count, posted movements per account and code, gift events and gifts per
    surface), each
    with the check it fails, in day order; at most `limit`. Reads every transfer of those days."""
    bounds = (
        await conn.execute(
            text(
                "SELECT min(day), max(day) FROM rolled_days"
                " WHERE day >= :from_day AND day < :to_day"
            ),
            {"from_day": from_day or date.min, "to_day": to_day or date.max},
        )
    ).one()
    if bounds[0] is None:
        return []
    values = {
        "from_day": bounds[0],
        "to_day": bounds[1] + ONE_DAY,
        "from_time": day_start(bounds[0]),
        "to_time": day_start(bounds[1] + ONE_DAY),
        "gift_code": int(TransferCode.GIFT_DIAMONDS),
    }
    differences: list[RolledDayDifference] = []
    for check, sql in (
        (CHECK_COUNT, _RAW_COUNTS),
        (CHECK_ACCOUNTS, _ACCOUNT_DIFFERENCES),
        (CHECK_GIFTS, _GIFT_DIFFERENCES),
    ):
        rows = await conn.execute(text(sql), values)
        differences.extend(RolledDayDifference(row.day, check) for row in rows)
    differences.sort(key=lambda difference: (difference.day, difference.check))
    return differences[:limit]
