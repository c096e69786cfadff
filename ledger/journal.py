"""The journal of a period: per UTC day, account and transfer code, the posted debit and credit
totals, each line with the account's balance at the start and at the end of its day.

Lines run in (day, account name, code) order. The lines of one account and day share their
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

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.closes import PeriodClose, latest_close_before, load_close
from ledger.periods import Period
from ledger.rollups import day_split, raw_ranges, rolled_days

JOURNAL_PAGE_SIZE_MAX: Final = 10_000
JOURNAL_ROWS_PER_FETCH: Final = 5_000


@dataclass(frozen=True, slots=True)
class JournalLine:
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
# is `day, account_id, code, sum(debit), sum(credit)`. One definition for `_MOVES` and
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

# The period's posted movements (neither pending nor void) per UTC day, account and code: the
# rolled days' totals (`ledger.rollups`), and the transfers of the rest of the period summed. A
# day is wholly rolled or wholly not, so no line comes from both.
_MOVES = f"""
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
    WITH {_MOVES}, before AS (
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
    WHERE line_no > :after_line
    ORDER BY line_no
    LIMIT :limit
    """  # noqa: S608 (constant filters)

# The same movements summed per asset.
_ASSET_TOTALS = f"""
    WITH {_MOVES}
    SELECT a.asset, s.scale, sum(m.debits)::bigint AS debits, sum(m.credits)::bigint AS credits
    FROM moves m JOIN accounts a ON a.id = m.account_id JOIN assets s ON s.code = a.asset
    GROUP BY a.asset, s.scale
    ORDER BY a.asset
    """  # noqa: S608 (constant filters)


async def _parameters(
    conn: AsyncConnection, basis: JournalBasis, after_line: int, limit: int | None
) -> dict[str, Any]:
    base = basis.base
    period = await day_split(conn, basis.period.start, basis.period.end)
    before = await day_split(conn, None if base is None else base.period_end, basis.period.start)
    return {
        **period.parameters("p_"),
        **before.parameters("b_"),
        "base_close_id": None if base is None else base.id,
        "after_line": after_line,
        "limit": limit,
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
# order, from the `:offset`th on. Each line's closing balance is the account's balance at the
# start (as in `_JOURNAL_LINES`) plus the account's movements of the period up to the end of the
# line's day, its opening that less the day's movements, read for the page's accounts only.
_JOURNAL_PAGE = f"""
    WITH {_RAW_MOVES}, moves AS (
        SELECT day, account_id, code, debits_minor AS debits, credits_minor AS credits
        FROM day_account_totals
        WHERE {rolled_days("p_")} AND day >= :from_day AND day <= :to_day
        UNION ALL
        SELECT day, account_id, code, debits, credits FROM raw_moves
        WHERE day >= :from_day AND day <= :to_day
    ), page AS MATERIALIZED (
        SELECT m.day, m.account_id, a.name AS account, a.asset, s.scale, c.name AS code,
               m.debits, m.credits
        FROM moves m
        JOIN accounts a ON a.id = m.account_id
        JOIN assets s ON s.code = a.asset
        JOIN transfer_codes c ON c.code = m.code
        ORDER BY m.day, a.name, c.name
        OFFSET :offset
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
        SELECT p.day, p.account, p.asset, p.scale, p.code, p.debits, p.credits,
               (coalesce(max(o.balance), 0) + sum(e.change))::bigint AS closing,
               (sum(e.change) FILTER (WHERE e.day = p.day))::bigint AS day_change
        FROM page p
        JOIN account_moves e ON e.account_id = p.account_id AND e.day <= p.day
        LEFT JOIN opening o ON o.account_id = p.account_id
        GROUP BY p.day, p.account_id, p.account, p.asset, p.scale, p.code, p.debits, p.credits
    )
    SELECT CAST(:after_line AS bigint)
               + row_number() OVER (ORDER BY day, account, code) AS line_no,
           day, account, asset, scale, code, debits, credits,
           closing - day_change AS opening, closing
    FROM lines
    ORDER BY line_no
    """  # noqa: S608 (constant filters)


def _page_days(
    day_counts: list[tuple[date, int]], after_line: int, limit: int
) -> tuple[date, date, int] | None:
    """The days holding lines `after_line + 1` to `after_line + limit` (the first and last) and
    how many lines of the first come before line `after_line + 1`; None when there are none."""
    before = 0
    first: tuple[date, int] | None = None
    last_day: date | None = None
    for day, count in day_counts:
        if first is None and before + count > after_line:
            first = (day, after_line - before)
        if first is not None:
            last_day = day
        before += count
        if before >= after_line + limit:
            break
    if first is None or last_day is None:
        return None
    return first[0], last_day, first[1]


async def _day_line_counts(
    conn: AsyncConnection, parameters: dict[str, Any]
) -> list[tuple[date, int]]:
    """How many lines each day of the period has, in day order (days without lines left out)."""
    counts: dict[date, int] = {}
    for row in await conn.execute(text(_DAY_LINE_COUNTS), parameters):
        counts[row.day] = counts.get(row.day, 0) + row.line_count
    return sorted(counts.items())


async def journal_page(
    conn: AsyncConnection, basis: JournalBasis, *, after_line: int = 0, limit: int = 1_000
) -> list[JournalLine]:
    """Up to `limit` lines after line number `after_line` (the cursor: the last line's number).

    The lines are numbered from each day's count of lines (rolled days' rows are counted, not
    built), so a page builds only the lines of the days it spans, and running balances only for
    its accounts: its cost follows the page and its days, not the whole period."""
    if not 1 <= limit <= JOURNAL_PAGE_SIZE_MAX:
        raise ValueError(f"limit must be between 1 and {JOURNAL_PAGE_SIZE_MAX}")
    parameters = await _parameters(conn, basis, after_line, limit)
    days = _page_days(await _day_line_counts(conn, parameters), after_line, limit)
    if days is None:
        return []
    from_day, to_day, offset = days
    rows = await conn.execute(
        text(_JOURNAL_PAGE),
        {**parameters, "from_day": from_day, "to_day": to_day, "offset": offset},
    )
    return [JournalLine(**row._mapping) for row in rows]


async def journal_lines(conn: AsyncConnection, basis: JournalBasis) -> AsyncIterator[JournalLine]:
    """Every line of the period, read a slice at a time (bounded memory); inside a transaction."""
    result = await conn.stream(text(_JOURNAL_LINES), await _parameters(conn, basis, 0, None))
    async for rows in result.partitions(JOURNAL_ROWS_PER_FETCH):
        for row in rows:
            yield JournalLine(**row._mapping)


async def asset_totals(conn: AsyncConnection, basis: JournalBasis) -> list[AssetTotals]:
    """The period's posted debits and credits per asset: equal, when the ledger is sound."""
    period = await day_split(conn, basis.period.start, basis.period.end)
    rows = await conn.execute(text(_ASSET_TOTALS), period.parameters("p_"))
    return [AssetTotals(**row._mapping) for row in rows]
