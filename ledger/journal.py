"""The journal of a period: per UTC day, account and transfer code, the posted debit and credit
totals, each line with the account's balance before and after it.

Lines run in (day, account name, code) order. Within one account the lines chain: a line's
opening is the closing of the account's line before it, the account's first line opens at its
balance at the period's start, and its last line closes at its balance at the period's end. The
balance at the start is the latest close's totals (when the period before is closed, that is
all it takes) plus the posted transfers after that close and before the start.

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


# The period's posted movements (neither pending nor void) per UTC day, account and code: the
# rolled days' totals (`ledger.rollups`), and the transfers of the rest of the period summed. A
# day is wholly rolled or wholly not, so no line comes from both.
_MOVES = f"""
    moves AS (
        SELECT day, account_id, code, debits_minor AS debits, credits_minor AS credits
        FROM day_account_totals WHERE {rolled_days("p_")}
        UNION ALL
        SELECT day, account_id, code, sum(debit)::bigint, sum(credit)::bigint
        FROM (
            SELECT (created_at AT TIME ZONE 'UTC')::date AS day, debit_account_id AS account_id,
                   code, amount AS debit, 0::bigint AS credit
            FROM transfers WHERE flags & 10 = 0 AND {raw_ranges("p_")}
            UNION ALL
            SELECT (created_at AT TIME ZONE 'UTC')::date, credit_account_id, code, 0, amount
            FROM transfers WHERE flags & 10 = 0 AND {raw_ranges("p_")}
        ) raw
        GROUP BY 1, 2, 3
    )"""  # noqa: S608 (constant filters)

# Each line with the account's running balance from its balance at the start: the base close's
# totals plus the posted movements from its end to the period's start (rolled days' totals and
# the transfers of the rest).
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
                       PARTITION BY m.account_id ORDER BY m.day, c.name
                       ROWS UNBOUNDED PRECEDING))::bigint AS closing
        FROM moves m
        JOIN accounts a ON a.id = m.account_id
        JOIN assets s ON s.code = a.asset
        JOIN transfer_codes c ON c.code = m.code
        LEFT JOIN opening o ON o.account_id = m.account_id
    ), numbered AS (
        SELECT row_number() OVER (ORDER BY day, account, code) AS line_no, day, account, asset,
               scale, code, debits, credits, closing - credits + debits AS opening, closing
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


async def journal_page(
    conn: AsyncConnection, basis: JournalBasis, *, after_line: int = 0, limit: int = 1_000
) -> list[JournalLine]:
    """Up to `limit` lines after line number `after_line` (the cursor: the last line's number)."""
    if not 1 <= limit <= JOURNAL_PAGE_SIZE_MAX:
        raise ValueError(f"limit must be between 1 and {JOURNAL_PAGE_SIZE_MAX}")
    rows = await conn.execute(
        text(_JOURNAL_LINES), await _parameters(conn, basis, after_line, limit)
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
