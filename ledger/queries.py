"""Read side of the ledger: balances, point-in-time balances, statements and the trial balance.

Balances are signed credit-normal: credits minus debits. A creator's Diamonds account that has
received 5 diamonds shows +5000 (milli-diamonds); the issuance account that funded it shows -5000.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.model import TransferFlags

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


# A pending transfer reserves and the void that releases it gives back: both move pending amounts
# only, never the posted balance. (A post moves the posted balance by the amount it posts.)
_MOVES_PENDING_ONLY = int(TransferFlags.PENDING | TransferFlags.VOID_PENDING)


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
    # True for a line that moves pending amounts only (a pending transfer, or the void that
    # releases one): its debit or credit is not in `balance_after`
    pending: bool
    balance_after: int


@dataclass(frozen=True, slots=True)
class StatementPage:
    lines: list[StatementLine]
    next_cursor: int | None


async def statement(
    conn: AsyncConnection,
    account_id: int,
    *,
    from_time: datetime | None = None,
    to_time: datetime | None = None,
    after_seq: int = 0,
    page_size: int = 100,
) -> StatementPage:
    """Transfers touching the account in commit order, each with the running posted balance.

    `after_seq` is the cursor: pass the previous page's `next_cursor` to continue. Pending
    transfers and the voids that release them (a cash-out released, a hold expired) move pending
    amounts only: they are listed marked `pending` and leave the posted balance unchanged, so
    the lines not marked pending add up to the change in balance.

    The debit side and the credit side are each read in `seq` order from their own index, a
    page's worth at most, and merged: an account with many transfers costs one page, not a sort
    of all its transfers (a transfer never debits and credits the same account).
    """
    if not 1 <= page_size <= STATEMENT_PAGE_SIZE_MAX:
        raise ValueError(f"page_size must be between 1 and {STATEMENT_PAGE_SIZE_MAX}")
    rows = (
        await conn.execute(
            text(
                """
                SELECT t.seq, t.id, t.created_at, c.name AS code, t.event_id, t.flags,
                       t.amount, t.is_debit, t.balance_after, o.name AS counterparty
                FROM (
                    (SELECT seq, id, created_at, code, event_id, flags, amount,
                            true AS is_debit, debit_balance_after AS balance_after,
                            credit_account_id AS counterparty_id
                     FROM transfers
                     WHERE debit_account_id = :account AND seq > :after_seq
                       AND created_at >= coalesce(CAST(:from_time AS timestamptz), '-infinity')
                       AND created_at < coalesce(CAST(:to_time AS timestamptz), 'infinity')
                     ORDER BY seq
                     LIMIT :limit)
                    UNION ALL
                    (SELECT seq, id, created_at, code, event_id, flags, amount,
                            false, credit_balance_after, debit_account_id
                     FROM transfers
                     WHERE credit_account_id = :account AND seq > :after_seq
                       AND created_at >= coalesce(CAST(:from_time AS timestamptz), '-infinity')
                       AND created_at < coalesce(CAST(:to_time AS timestamptz), 'infinity')
                     ORDER BY seq
                     LIMIT :limit)
                ) t
                JOIN transfer_codes c ON c.code = t.code
                JOIN accounts o ON o.id = t.counterparty_id
                ORDER BY t.seq
                LIMIT :limit
                """
            ),
            {
                "account": account_id,
                "after_seq": after_seq,
                "from_time": from_time,
                "to_time": to_time,
                "limit": page_size + 1,
            },
        )
    ).all()
    lines = [
        StatementLine(
            seq=row.seq,
            transfer_id=row.id,
            created_at=row.created_at,
            code=row.code,
            event_id=row.event_id,
            counterparty=row.counterparty,
            debit=row.amount if row.is_debit else 0,
            credit=0 if row.is_debit else row.amount,
            pending=bool(row.flags & _MOVES_PENDING_ONLY),
            balance_after=row.balance_after,
        )
        for row in rows[:page_size]
    ]
    next_cursor = lines[-1].seq if len(rows) > page_size else None
    return StatementPage(lines, next_cursor)


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
    """
    if as_of is None:
        rows = await conn.execute(text(_TRIAL_BALANCE_NOW))
        return [TrialBalanceLine(**row._mapping) for row in rows]
    rows = await conn.execute(
        text(
            """
            WITH posted_transfers AS (
                SELECT * FROM transfers
                WHERE flags & 10 = 0
                  AND created_at < coalesce(CAST(:as_of AS timestamptz), 'infinity')
            ), posted AS (
                SELECT debit_account_id AS account_id, amount AS debit, 0::bigint AS credit
                FROM posted_transfers
                UNION ALL
                SELECT credit_account_id, 0, amount FROM posted_transfers
            )
            SELECT a.asset, s.scale, a.name AS account_name, a.kind,
                   sum(p.debit)::bigint AS debits, sum(p.credit)::bigint AS credits
            FROM posted p
            JOIN accounts a ON a.id = p.account_id
            JOIN assets s ON s.code = a.asset
            GROUP BY a.asset, s.scale, a.name, a.kind
            ORDER BY a.asset, a.name
            """
        ),
        {"as_of": as_of},
    )
    return [TrialBalanceLine(**row._mapping) for row in rows]
