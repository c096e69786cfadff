"""Read side of the ledger: balances, point-in-time balances, statements and the trial balance.

Balances are signed credit-normal: credits minus debits. A creator's Diamonds account that has
received 5 diamonds shows +5000 (milli-diamonds); the issuance account that funded it shows -5000.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.journal import POSTED_MOVES
from ledger.model import TransferFlags
from ledger.rollups import day_split

STATEMENT_PAGE_SIZE_MAX = 1_000


@dataclass(frozen=True, slots=True)
class AccountBalance:
    account_id: int
    name: str
    asset: str
    scale: int
    kind: str
    creator_id: str | None
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int

    @property
    def posted(self) -> int:
        """Credits minus debits, posted only."""
        return self.credits_posted - self.debits_posted

    @property
    def pending(self) -> int:
        """Amount reserved by pending transfers (debits pending, e.g. a cash-out hold)."""
        return self.debits_pending

    @property
    def available(self) -> int:
        """Posted balance less what pending debits reserve."""
        return self.credits_posted - self.debits_posted - self.debits_pending


_BALANCE_COLUMNS = """
    a.id AS account_id, a.name, a.asset, s.scale, a.kind, a.creator_id,
    a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending
"""


def _balance(row: object) -> AccountBalance:
    return AccountBalance(**row._mapping)  # type: ignore[attr-defined]


async def account_balance(conn: AsyncConnection, account_name: str) -> AccountBalance | None:
    row = (
        await conn.execute(
            text(
                f"SELECT {_BALANCE_COLUMNS} FROM accounts a JOIN assets s ON s.code = a.asset "  # noqa: S608
                "WHERE a.name = :name"
            ),
            {"name": account_name},
        )
    ).first()
    return None if row is None else _balance(row)


async def creator_balances(conn: AsyncConnection, creator_id: str) -> list[AccountBalance]:
    rows = await conn.execute(
        text(
            f"SELECT {_BALANCE_COLUMNS} FROM accounts a JOIN assets s ON s.code = a.asset "  # noqa: S608
            "WHERE a.creator_id = :creator_id ORDER BY a.name"
        ),
        {"creator_id": creator_id},
    )
    return [_balance(row) for row in rows]


async def posted_balance_as_of(conn: AsyncConnection, account_id: int, as_of: datetime) -> int:
    """The account's posted balance (credits minus debits) as of `as_of`: after every transfer
    posted before `as_of`, none stamped at it (periods are `[start, end)`, so the balance as of a
    period's end is its closing balance).

    Each transfer stores both sides' balance right after it, so this is one index probe: the
    latest transfer touching the account before `as_of`.
    """
    row = (
        await conn.execute(
            text(
                """
                SELECT balance FROM (
                    (SELECT seq, debit_balance_after AS balance FROM transfers
                     WHERE debit_account_id = :account AND created_at < :as_of
                     ORDER BY seq DESC LIMIT 1)
                    UNION ALL
                    (SELECT seq, credit_balance_after FROM transfers
                     WHERE credit_account_id = :account AND created_at < :as_of
                     ORDER BY seq DESC LIMIT 1)
                ) latest ORDER BY seq DESC LIMIT 1
                """
            ),
            {"account": account_id, "as_of": as_of},
        )
    ).first()
    return 0 if row is None else int(row.balance)


_PENDING = int(TransferFlags.PENDING)
_POST_PENDING = int(TransferFlags.POST_PENDING)
_VOID_PENDING = int(TransferFlags.VOID_PENDING)


@dataclass(frozen=True, slots=True)
class StatementLine:
    seq: int
    transfer_id: uuid.UUID
    created_at: datetime
    code: str
    event_id: str | None
    counterparty: str
    debit: int
    credit: int
    # True for a line that moves pending amounts only (a hold, or the release of one): its debit
    # or credit is in `pending_after`, not in `balance_after`
    pending: bool
    # the account's posted balance after the line, credits minus debits
    balance_after: int
    # the account's pending amounts after the line, credits minus debits (a hold debiting the
    # account makes it negative: what the hold would take if it were posted)
    pending_after: int


@dataclass(frozen=True, slots=True)
class StatementPage:
    lines: list[StatementLine]
    next_cursor: int | None


# A page of the account's transfers (each side read in `seq` order from its own index, a page's
# worth at most, and merged), with, for a post, the amount of the hold it released (the hold found
# by its key's commit time, so in its own partition), and the account's pending amount before the
# page's first transfer: the holds before it (through the indexes of pending transfers, migration
# 0041) not yet posted, voided or expired by then. One statement, so one snapshot.
_STATEMENT_PAGE = text(
    """
    WITH page AS MATERIALIZED (
        SELECT * FROM (
            (SELECT seq, id, created_at, code, event_id, flags, amount, pending_id,
                    true AS is_debit, debit_balance_after AS balance_after,
                    credit_account_id AS counterparty_id
             FROM transfers
             WHERE debit_account_id = :account AND seq > :after_seq
               AND created_at >= coalesce(CAST(:from_time AS timestamptz), '-infinity')
               AND created_at < coalesce(CAST(:to_time AS timestamptz), 'infinity')
             ORDER BY seq
             LIMIT :limit)
            UNION ALL
            (SELECT seq, id, created_at, code, event_id, flags, amount, pending_id,
                    false, credit_balance_after, debit_account_id
             FROM transfers
             WHERE credit_account_id = :account AND seq > :after_seq
               AND created_at >= coalesce(CAST(:from_time AS timestamptz), '-infinity')
               AND created_at < coalesce(CAST(:to_time AS timestamptz), 'infinity')
             ORDER BY seq
             LIMIT :limit)
        ) sides
        ORDER BY seq
        LIMIT :limit
    ), first_line AS (
        SELECT min(seq) AS seq FROM page
    ), holds_before AS (
        (SELECT h.id, -h.amount AS pending
         FROM transfers h, first_line f
         WHERE h.debit_account_id = :account AND h.flags & 2 <> 0 AND h.seq < f.seq
         ORDER BY h.seq)
        UNION ALL
        (SELECT h.id, h.amount
         FROM transfers h, first_line f
         WHERE h.credit_account_id = :account AND h.flags & 2 <> 0 AND h.seq < f.seq
         ORDER BY h.seq)
    ), opening AS (
        -- each hold's end looked up by its key (a subquery per hold: never a join that reads
        -- every transfer before the page to match them)
        SELECT coalesce(sum(b.pending), 0)::bigint AS pending_before
        FROM holds_before b
        WHERE coalesce(
            (SELECT e.seq
             FROM pending_resolutions r
             JOIN transfers e ON e.id = r.resolved_by AND e.created_at = r.created_at
             WHERE r.pending_id = b.id),
            9223372036854775807) >= (SELECT seq FROM first_line)
    )
    SELECT p.seq, p.id, p.created_at, c.name AS code, p.event_id, p.flags, p.amount,
           p.is_debit, p.balance_after, o.name AS counterparty,
           CASE WHEN p.flags & 4 <> 0 THEN (
               SELECT h.amount
               FROM transfer_keys k
               JOIN transfers h ON h.id = k.id AND h.created_at = k.created_at
               WHERE k.id = p.pending_id) END AS released,
           opening.pending_before
    FROM page p
    JOIN transfer_codes c ON c.code = p.code
    JOIN accounts o ON o.id = p.counterparty_id
    CROSS JOIN opening
    ORDER BY p.seq
    """
)


def _line(
    row: Row[Any],
    on_debit: bool,
    amount: int,
    *,
    moves_pending: bool,
    balance_after: int,
    pending_after: int,
) -> StatementLine:
    return StatementLine(
        seq=row.seq,
        transfer_id=row.id,
        created_at=row.created_at,
        code=row.code,
        event_id=row.event_id,
        counterparty=row.counterparty,
        debit=amount if on_debit else 0,
        credit=0 if on_debit else amount,
        pending=moves_pending,
        balance_after=balance_after,
        pending_after=pending_after,
    )


def _statement_lines(rows: Sequence[Row[Any]]) -> list[StatementLine]:
    """The page's transfers as lines, each side as the account sees it: a hold on its side,
    pending; a void on the other side, pending (it releases the hold); a post as two lines, the
    release of the whole hold (pending, on the other side) and then the amount posted."""
    lines: list[StatementLine] = []
    pending = int(rows[0].pending_before) if rows else 0
    for row in rows:
        side = -1 if row.is_debit else 1  # what the transfer's amount does to a credit balance
        if row.flags & _PENDING:
            pending += side * row.amount
            lines.append(
                _line(
                    row,
                    row.is_debit,
                    row.amount,
                    moves_pending=True,
                    balance_after=row.balance_after,
                    pending_after=pending,
                )
            )
            continue
        if not row.flags & (_VOID_PENDING | _POST_PENDING):
            lines.append(
                _line(
                    row,
                    row.is_debit,
                    row.amount,
                    moves_pending=False,
                    balance_after=row.balance_after,
                    pending_after=pending,
                )
            )
            continue
        # A hold ended: released whole (a hold whose row is gone, its month detached, is taken
        # as posted whole), then, for a post, the amount posted.
        released = row.amount if row.released is None else int(row.released)
        posted = row.amount if row.flags & _POST_PENDING else 0
        pending -= side * released
        lines.append(
            _line(
                row,
                not row.is_debit,
                released,
                moves_pending=True,
                balance_after=row.balance_after - side * posted,
                pending_after=pending,
            )
        )
        if posted:
            lines.append(
                _line(
                    row,
                    row.is_debit,
                    posted,
                    moves_pending=False,
                    balance_after=row.balance_after,
                    pending_after=pending,
                )
            )
    return lines


async def statement(
    conn: AsyncConnection,
    account_id: int,
    *,
    from_time: datetime | None = None,
    to_time: datetime | None = None,
    after_seq: int = 0,
    page_size: int = 100,
) -> StatementPage:
    """The account's transfers in commit order, `page_size` at most, as lines with the running
    posted balance (`balance_after`) and the running pending amount (`pending_after`).

    `after_seq` is the cursor: pass the previous page's `next_cursor` to continue. The lines
    marked `pending` move pending amounts only and add up to the change in `pending_after`; the
    others add up to the change in `balance_after`. A hold is listed on its side, pending; what
    ends it is listed against it: a void (a cash-out released, a hold expired) on the other side,
    pending, so that the two cancel out; a post as two lines of one transfer, the release of the
    whole hold (pending, on the other side) and the amount posted (on the hold's side). So the
    pending lines of an account's whole statement add up to its pending amounts now, and the
    others to its balance. Only the presentation: the ledger's rows are as they were written.

    A page of `page_size` transfers may hold more lines (a post is two): a page never splits
    a transfer, and `next_cursor` is the `seq` of its last one.
    """
    if not 1 <= page_size <= STATEMENT_PAGE_SIZE_MAX:
        raise ValueError(f"page_size must be between 1 and {STATEMENT_PAGE_SIZE_MAX}")
    rows = (
        await conn.execute(
            _STATEMENT_PAGE,
            {
                "account": account_id,
                "after_seq": after_seq,
                "from_time": from_time,
                "to_time": to_time,
                "limit": page_size + 1,
            },
        )
    ).all()
    next_cursor = rows[page_size - 1].seq if len(rows) > page_size else None
    return StatementPage(_statement_lines(rows[:page_size]), next_cursor)


@dataclass(frozen=True, slots=True)
class TrialBalanceLine:
    asset: str
    scale: int
    account_name: str
    kind: str
    debits: int
    credits: int
    # 1 for an account's own line; in `trial_balance_creators_summed`, a line of creators'
    # accounts of one kind (named `creator:*:ASSET:SUFFIX`) counts the accounts it sums
    account_count: int = 1

    @property
    def balance(self) -> int:
        return self.credits - self.debits


_TRIAL_BALANCE_NOW = """
    SELECT a.asset, s.scale, a.name AS account_name, a.kind,
           a.debits_posted AS debits, a.credits_posted AS credits
    FROM accounts a
    JOIN assets s ON s.code = a.asset
    WHERE a.debits_posted <> 0 OR a.credits_posted <> 0
    ORDER BY a.asset, a.name
"""


# Platform accounts one line each; creators' accounts one line per asset and kind, named by what
# their names share (`creator:*:DIAMOND:available`: the part after the last colon).
_TRIAL_BALANCE_NOW_CREATORS_SUMMED = """
    SELECT a.asset, s.scale, a.name AS account_name, a.kind,
           a.debits_posted AS debits, a.credits_posted AS credits, 1 AS account_count
    FROM accounts a
    JOIN assets s ON s.code = a.asset
    WHERE (a.debits_posted <> 0 OR a.credits_posted <> 0) AND a.name NOT LIKE 'creator:%'
    UNION ALL
    SELECT a.asset, s.scale, 'creator:*:' || a.asset || ':' || min(substring(a.name FROM '[^:]*$')),
           a.kind, sum(a.debits_posted)::bigint, sum(a.credits_posted)::bigint,
           count(*)::integer
    FROM accounts a
    JOIN assets s ON s.code = a.asset
    WHERE (a.debits_posted <> 0 OR a.credits_posted <> 0) AND a.name LIKE 'creator:%'
    GROUP BY a.asset, s.scale, a.kind
    ORDER BY 1, 3
"""


async def trial_balance_creators_summed(conn: AsyncConnection) -> list[TrialBalanceLine]:
    """The trial balance as of now with creators' accounts summed per asset and kind in the
    database: the lines `giftledger trial-balance` and the console print, without reading one row
    per creator account (10,000 creators hold some 30,000 accounts)."""
    rows = await conn.execute(text(_TRIAL_BALANCE_NOW_CREATORS_SUMMED))
    return [TrialBalanceLine(**row._mapping) for row in rows]


# Each account's posted movements before a time summed: the rolled days' totals and the
# transfers of the rest (`POSTED_MOVES` of the split of everything before it).
_TRIAL_BALANCE_AS_OF = f"""
    WITH {POSTED_MOVES}
    SELECT a.asset, s.scale, a.name AS account_name, a.kind,
           sum(m.debits)::bigint AS debits, sum(m.credits)::bigint AS credits
    FROM moves m
    JOIN accounts a ON a.id = m.account_id
    JOIN assets s ON s.code = a.asset
    GROUP BY a.asset, s.scale, a.name, a.kind
    ORDER BY a.asset, a.name
"""  # noqa: S608 (constant filters)


async def trial_balance(
    conn: AsyncConnection, as_of: datetime | None = None
) -> list[TrialBalanceLine]:
    """Posted debits and credits per account as of a time (now when None), by asset: the
    transfers posted before `as_of`, none stamped at it, as periods are `[start, end)`; so the
    trial balance as of a month's first instant is the previous month's close.

    Within each asset the lines sum to zero: every transfer debits and credits the same amount.

    As of now, each account's posted totals are the ones it stores (`ledger.verify` holds them
    equal to its posted transfers summed), so the lines are read from the accounts, one row per
    account, instead of from every transfer; an account no transfer has posted to has no line.

    As of a time, the whole UTC days before it that are rolled up (`ledger.rollups`) are read
    from their per-day totals, and only the rest from the transfers: the days not rolled yet and
    the part of `as_of`'s own day before it. A rolled day is final (no transfer can be stamped in
    it any more) and its totals are its posted transfers summed (`verify` holds them equal), so
    the lines are the transfers' sums whether the roll-up is complete, behind, or empty. What is
    read grows with the rolled days' rows (a row per day, account and code) and the transfers
    not rolled, not with every transfer of the ledger.
    """
    if as_of is None:
        rows = await conn.execute(text(_TRIAL_BALANCE_NOW))
        return [TrialBalanceLine(**row._mapping) for row in rows]
    split = await day_split(conn, None, as_of)
    rows = await conn.execute(text(_TRIAL_BALANCE_AS_OF), split.parameters("p_"))
    return [TrialBalanceLine(**row._mapping) for row in rows]
