"""The journal of a period: per UTC day, account and transfer code, the posted debit and credit
totals, each line with the account's balance at the start and at the end of its day.

Lines run in (day, account name, code) order, which is total (account and code names are
unique). A page is read after a cursor naming the last line of the page before by that key, not
by its number: on an open month a line added for the current day may sort before the cursor, and
a line number would then name another line. The lines of one account and day share their
opening and closing: the opening plus the day's credits less its debits, over all its codes, is
the closing, and a day's closing is the opening of the account's next day with lines. The
account's first day opens at its balance at the period's start, its last closes at its balance at
the period's end. A day's transfers of different codes interleave, so the journal shows no
balance between one code's total and the next: a running balance in code order would show
balances the account never had (a held account below zero, say). The balance at the start is the
latest close's totals (when the period before is closed, that is all it takes) plus the posted
transfers after that close and before the start.

Posted means neither pending nor void, as in the trial balance; a transfer counts on the day of
its commit timestamp (UTC). Balances are credits minus debits, in the account's minor unit.

The movements of the days rolled up (`ledger.rollups`) are read from their per-day totals, and
only the rest of a range from the transfers: the lines are the same whether the roll-up is
complete, behind, or empty.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.closes import PeriodClose, latest_close_before, load_close
from ledger.periods import Period
from ledger.rollups import day_split, raw_ranges, rolled_days

JOURNAL_PAGE_SIZE_MAX: Final = 10_000
JOURNAL_ROWS_PER_FETCH: Final = 5_000
# A cursor names a line by its key: `DD:ACCOUNT:CODE`, the day of the month, the account's name
# and the code's name (which holds no `:`). Every text the pattern admits is a key (one that
# names no line still has a place in the order; a day past the month's end comes after its last
# line), so a cursor is refused by the pattern or not at all.
JOURNAL_CURSOR_PATTERN: Final = r"^(0[1-9]|[12][0-9]|3[01]):[^\x00]+:[^\x00:]+$"
JOURNAL_CURSOR_LENGTH_MAX: Final = 3 + 300 + 1 + 64  # an account's name is at most 300 characters
_JOURNAL_CURSOR = re.compile(JOURNAL_CURSOR_PATTERN)


@dataclass(frozen=True, slots=True)
class JournalKey:
    """Where a line sits in the journal: its day, its account's name, its code's name."""

    day: date
    account: str
    code: str


@dataclass(frozen=True, slots=True)
class JournalLine:
    # The line's place in the period's journal as read for its page: later pages number on from
    # the lines there are then, so a line added before the cursor moves the numbers after it.
    line_no: int
    day: date
    account: str
    asset: str
    scale: int
    code: str
    debits: int
    credits: int
    opening: int
    closing: int

    @property
    def key(self) -> JournalKey:
        return JournalKey(self.day, self.account, self.code)


def journal_cursor(key: JournalKey) -> str:
    """The text of a cursor naming the line with this key (`JOURNAL_CURSOR_PATTERN`)."""
    return f"{key.day.day:02d}:{key.account}:{key.code}"


def journal_key(cursor: str, period: Period) -> JournalKey:
    """The key a cursor names in `period`'s journal; ValueError for a text the pattern
    refuses."""
    if len(cursor) > JOURNAL_CURSOR_LENGTH_MAX or _JOURNAL_CURSOR.fullmatch(cursor) is None:
        raise ValueError(f"not a cursor of the journal (DD:ACCOUNT:CODE): {cursor[:40]!r}")
    account, code = cursor[3:].rsplit(":", 1)
    return JournalKey(period.first_day + timedelta(days=int(cursor[:2]) - 1), account, code)


@dataclass(frozen=True, slots=True)
class AssetTotals:
    asset: str
    scale: int
    debits: int
    credits: int


@dataclass(frozen=True, slots=True)
class JournalBasis:
    """What the period's openings are computed from: the latest close before it, if any."""

    period: Period
    close: PeriodClose | None
    base: PeriodClose | None


async def journal_basis(conn: AsyncConnection, period: Period) -> JournalBasis:
    return JournalBasis(
        period, await load_close(conn, period), await latest_close_before(conn, period.start)
    )


# The posted transfers (neither pending nor void) of the days of the period not rolled up, as
# debits and credits per UTC day, account and code: the FROM and GROUP BY of a select whose list
# is `day, account_id, code, sum(debit), sum(credit)`. One definition for `POSTED_MOVES` and
# `_RAW_MOVES`, so that the lines and the count of lines per day cannot disagree.
_RAW_DAY_SUMS = f"""
        FROM (
            SELECT (created_at AT TIME ZONE 'UTC')::date AS day, debit_account_id AS account_id,
                   code, amount AS debit, 0::bigint AS credit
            FROM transfers WHERE flags & 10 = 0 AND {raw_ranges("p_")}
            UNION ALL
            SELECT (created_at AT TIME ZONE 'UTC')::date, credit_account_id, code, 0, amount
            FROM transfers WHERE flags & 10 = 0 AND {raw_ranges("p_")}
        ) raw
        GROUP BY 1, 2, 3"""  # noqa: S608 (constant filters)

# The CTE `moves`: the posted movements (neither pending nor void) of a range of commit
# timestamps per UTC day, account and code, from the parameters of its `DaySplit` under the prefix
# `p_`: the rolled days' totals (`ledger.rollups`), and the transfers of the rest of the range
# summed. A day is wholly rolled or wholly not, so no line comes from both. The journal reads a
# period's; the trial balance as of a time (`ledger.queries.trial_balance`) everything before it.
POSTED_MOVES = f"""
    moves AS (
        SELECT day, account_id, code, debits_minor AS debits, credits_minor AS credits
        FROM day_account_totals WHERE {rolled_days("p_")}
        UNION ALL
        SELECT day, account_id, code, sum(debit)::bigint, sum(credit)::bigint
        {_RAW_DAY_SUMS}
    )"""  # noqa: S608 (constant filters)

# Each line with the account's balance at the end of its day (the frame of the running sum takes
# in the day's other lines, its peers) and at its start (that less the day's change), from the
# balance at the period's start: the base close's totals plus the posted movements from its end to
# the period's start (rolled days' totals and the transfers of the rest).
_JOURNAL_LINES = f"""
    WITH {POSTED_MOVES}, before AS (
        SELECT account_id, credits_minor - debits_minor AS change
        FROM closing_balances WHERE close_id = CAST(:base_close_id AS bigint)
        UNION ALL
        SELECT account_id, credits_minor - debits_minor FROM day_account_totals
        WHERE {rolled_days("b_")} AND account_id IN (SELECT account_id FROM moves)
        UNION ALL
        SELECT debit_account_id, -amount FROM transfers
        WHERE flags & 10 = 0 AND {raw_ranges("b_")}
        UNION ALL
        SELECT credit_account_id, amount FROM transfers
        WHERE flags & 10 = 0 AND {raw_ranges("b_")}
    ), opening AS (
        SELECT account_id, sum(change)::bigint AS balance FROM before
        WHERE account_id IN (SELECT account_id FROM moves)
        GROUP BY account_id
    ), lines AS (
        SELECT m.day, m.account_id, a.name AS account, a.asset, s.scale, c.name AS code,
               m.debits, m.credits,
               (coalesce(o.balance, 0)
                   + sum(m.credits - m.debits) OVER (
                       PARTITION BY m.account_id ORDER BY m.day
                       RANGE UNBOUNDED PRECEDING))::bigint AS closing,
               (sum(m.credits - m.debits) OVER (
                   PARTITION BY m.account_id, m.day))::bigint AS day_change
        FROM moves m
        JOIN accounts a ON a.id = m.account_id
        JOIN assets s ON s.code = a.asset
        JOIN transfer_codes c ON c.code = m.code
        LEFT JOIN opening o ON o.account_id = m.account_id
    ), numbered AS (
        SELECT row_number() OVER (ORDER BY day, account, code) AS line_no, day, account, asset,
               scale, code, debits, credits, closing - day_change AS opening, closing
        FROM lines
    )
    SELECT line_no, day, account, asset, scale, code, debits, credits, opening, closing
    FROM numbered
    ORDER BY line_no
    """  # noqa: S608 (constant filters)

# The same movements summed per asset.
_ASSET_TOTALS = f"""
    WITH {POSTED_MOVES}
    SELECT a.asset, s.scale, sum(m.debits)::bigint AS debits, sum(m.credits)::bigint AS credits
    FROM moves m JOIN accounts a ON a.id = m.account_id JOIN assets s ON s.code = a.asset
    GROUP BY a.asset, s.scale
    ORDER BY a.asset
    """  # noqa: S608 (constant filters)


async def _parameters(conn: AsyncConnection, basis: JournalBasis) -> dict[str, Any]:
    base = basis.base
    period = await day_split(conn, basis.period.start, basis.period.end)
    before = await day_split(conn, None if base is None else base.period_end, basis.period.start)
    return {
        **period.parameters("p_"),
        **before.parameters("b_"),
        "base_close_id": None if base is None else base.id,
    }


# The period's posted movements of the transfers not rolled up, per UTC day, account and code.
_RAW_MOVES = f"""
    raw_moves AS MATERIALIZED (
        SELECT day, account_id, code, sum(debit)::bigint AS debits, sum(credit)::bigint AS credits
        {_RAW_DAY_SUMS}
    )"""

# How many lines each day of the period has: a rolled day's rows, and the rest's groups.
_DAY_LINE_COUNTS = f"""
    WITH {_RAW_MOVES}
    SELECT day, count(*) AS line_count FROM day_account_totals
    WHERE {rolled_days("p_")} GROUP BY day
    UNION ALL
    SELECT day, count(*) FROM raw_moves GROUP BY day
    ORDER BY 1
    """  # noqa: S608 (constant filters)

# One page of lines: the lines of the days `[:from_day, :to_day]` in (day, account name, code)
# order after the key `(:after_day, :after_account, :after_code)` (all null: from the first),
# numbered on from the `:lines_before` lines of the days before `:from_day`. Each line's closing
# balance is the account's balance at the start (as in `_JOURNAL_LINES`) plus the account's
# movements of the period up to the end of the line's day, its opening that less the day's
# movements, read for the page's accounts only.
_JOURNAL_PAGE = f"""
    WITH {_RAW_MOVES}, moves AS (
        SELECT day, account_id, code, debits_minor AS debits, credits_minor AS credits
        FROM day_account_totals
        WHERE {rolled_days("p_")} AND day >= :from_day AND day <= :to_day
        UNION ALL
        SELECT day, account_id, code, debits, credits FROM raw_moves
        WHERE day >= :from_day AND day <= :to_day
    ), numbered AS (
        SELECT m.day, m.account_id, a.name AS account, a.asset, s.scale, c.name AS code,
               m.debits, m.credits,
               row_number() OVER (ORDER BY m.day, a.name, c.name) AS position
        FROM moves m
        JOIN accounts a ON a.id = m.account_id
        JOIN assets s ON s.code = a.asset
        JOIN transfer_codes c ON c.code = m.code
    ), page AS MATERIALIZED (
        SELECT day, account_id, account, asset, scale, code, debits, credits, position
        FROM numbered
        WHERE CAST(:after_day AS date) IS NULL
           OR (day, account, code) > (CAST(:after_day AS date), CAST(:after_account AS text),
                                      CAST(:after_code AS text))
        ORDER BY position
        LIMIT :limit
    ), page_accounts AS MATERIALIZED (
        SELECT DISTINCT account_id FROM page
    ), before AS (
        SELECT account_id, credits_minor - debits_minor AS change
        FROM closing_balances
        WHERE close_id = CAST(:base_close_id AS bigint)
          AND account_id IN (SELECT account_id FROM page_accounts)
        UNION ALL
        SELECT account_id, credits_minor - debits_minor FROM day_account_totals
        WHERE {rolled_days("b_")} AND account_id IN (SELECT account_id FROM page_accounts)
        UNION ALL
        SELECT debit_account_id, -amount FROM transfers
        WHERE flags & 10 = 0 AND {raw_ranges("b_")}
          AND debit_account_id IN (SELECT account_id FROM page_accounts)
        UNION ALL
        SELECT credit_account_id, amount FROM transfers
        WHERE flags & 10 = 0 AND {raw_ranges("b_")}
          AND credit_account_id IN (SELECT account_id FROM page_accounts)
    ), opening AS (
        SELECT account_id, sum(change)::bigint AS balance FROM before GROUP BY account_id
    ), account_moves AS (
        SELECT t.day, t.account_id, t.credits_minor - t.debits_minor AS change
        FROM day_account_totals t
        WHERE {rolled_days("p_")} AND t.day <= :to_day
          AND t.account_id IN (SELECT account_id FROM page_accounts)
        UNION ALL
        SELECT r.day, r.account_id, r.credits - r.debits
        FROM raw_moves r
        WHERE r.day <= :to_day AND r.account_id IN (SELECT account_id FROM page_accounts)
    ), lines AS (
        SELECT p.position, p.day, p.account, p.asset, p.scale, p.code, p.debits, p.credits,
               (coalesce(max(o.balance), 0) + sum(e.change))::bigint AS closing,
               (sum(e.change) FILTER (WHERE e.day = p.day))::bigint AS day_change
        FROM page p
        JOIN account_moves e ON e.account_id = p.account_id AND e.day <= p.day
        LEFT JOIN opening o ON o.account_id = p.account_id
        GROUP BY p.position, p.day, p.account_id, p.account, p.asset, p.scale, p.code,
                 p.debits, p.credits
    )
    SELECT CAST(:lines_before AS bigint) + position AS line_no,
           day, account, asset, scale, code, debits, credits,
           closing - day_change AS opening, closing
    FROM lines
    ORDER BY line_no
    """  # noqa: S608 (constant filters)


def _page_days(
    day_counts: list[tuple[date, int]], after: JournalKey | None, limit: int
) -> tuple[date, date, int] | None:
    """The first and last days that hold the `limit` lines after the key `after` (None: from the
    first line), and how many lines the days before the first hold; None when no day is left.

    Which lines of the cursor's day come after it is known only once they are built, so that day
    counts for none of them: the page may build up to a day more than it shows."""
    lines_before = 0
    days: list[date] = []
    available = 0
    for day, count in day_counts:
        if after is not None and day < after.day:
            lines_before += count
            continue
        days.append(day)
        if after is None or day > after.day:
            available += count
        if available >= limit:
            break
    if not days:
        return None
    return days[0], days[-1], lines_before


async def _day_line_counts(
    conn: AsyncConnection, parameters: dict[str, Any]
) -> list[tuple[date, int]]:
    """How many lines each day of the period has, in day order (days without lines left out)."""
    counts: dict[date, int] = {}
    for row in await conn.execute(text(_DAY_LINE_COUNTS), parameters):
        counts[row.day] = counts.get(row.day, 0) + row.line_count
    return sorted(counts.items())


async def journal_page(
    conn: AsyncConnection,
    basis: JournalBasis,
    *,
    after: JournalKey | None = None,
    limit: int = 1_000,
) -> list[JournalLine]:
    """Up to `limit` lines after the line with the key `after` (the cursor: the last line's key;
    None: from the first line).

    The days a page spans are found from each day's count of lines (rolled days' rows are
    counted, not built), so a page builds only the lines of those days, and running balances only
    for its accounts: its cost follows the page and its days, not the whole period. A line added
    since the page before (on an open month, one of the current day) is on this page if it sorts
    after the cursor, and on none if before; no line is shown twice or left out."""
    if not 1 <= limit <= JOURNAL_PAGE_SIZE_MAX:
        raise ValueError(f"limit must be between 1 and {JOURNAL_PAGE_SIZE_MAX}")
    parameters = await _parameters(conn, basis)
    days = _page_days(await _day_line_counts(conn, parameters), after, limit)
    if days is None:
        return []
    from_day, to_day, lines_before = days
    rows = await conn.execute(
        text(_JOURNAL_PAGE),
        {
            **parameters,
            "from_day": from_day,
            "to_day": to_day,
            "lines_before": lines_before,
            "after_day": None if after is None else after.day,
            "after_account": None if after is None else after.account,
            "after_code": None if after is None else after.code,
            "limit": limit,
        },
    )
    return [JournalLine(**row._mapping) for row in rows]


async def journal_lines(conn: AsyncConnection, basis: JournalBasis) -> AsyncIterator[JournalLine]:
    """Every line of the period, read a slice at a time (bounded memory); inside a transaction."""
    result = await conn.stream(text(_JOURNAL_LINES), await _parameters(conn, basis))
    async for rows in result.partitions(JOURNAL_ROWS_PER_FETCH):
        for row in rows:
            yield JournalLine(**row._mapping)


async def asset_totals(conn: AsyncConnection, basis: JournalBasis) -> list[AssetTotals]:
    """The period's posted debits and credits per asset: equal, when the ledger is sound."""
    period = await day_split(conn, basis.period.start, basis.period.end)
    rows = await conn.execute(text(_ASSET_TOTALS), period.parameters("p_"))
    return [AssetTotals(**row._mapping) for row in rows]
