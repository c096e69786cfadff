"""Month-end closes: every account's posted totals at a period's end, stored once, hashed with the
head of the transfers' hash chain, and checked by `giftledger verify`.

A close of period P (`close_period`) stores, for every account with a posted transfer before P's
end, its posted debits and credits from the first transfer up to that end (`closing_balances`);
the closing balance is credits minus debits, as everywhere in the ledger. It is refused:
- before P has ended (by the database's clock, the one that stamps transfers);
- when P is closed already, or a later period is (periods close in order);
- while an earlier period holding transfers is open.
A close keeps who made it (`closed_by`, the name `giftledger close` acts as; NULL on the closes
made before migration 0031), beside its hash, not in it.

Transfers are stamped with the clock read once their batch holds its account locks, a moment
before the batch commits; so a batch stamped just before P's end may commit just after it. Before
it reads anything, a close waits for such batches: it takes `accounts` in SHARE mode (through the
owner's `wait_for_ledger_writers`, in a transaction of its own, released at once), which waits
for every transaction that has updated account totals and not finished. A batch that updates
totals after that was stamped after P's end.

Hashing. The transfers' chain (ledger/chain.py) links batches of transfers, and `verify` holds
every link to the transfers it names; a close is not a batch of transfers, so it is not a link of
that chain. Instead each close records the chain's head when it was made (`chain_link_id`,
`chain_hash`) and hashes it with its balances:

    balances_sha256 = SHA-256 of one JSON line per account, [id, name, asset, debits, credits],
                      in account id order;
    hash = sha256(previous close's hash || chain head's hash || period || balances_sha256).

The closes form a chain of their own in period order. A close therefore commits to the whole
history of transfers before it (through the head it names, which covers every transfer committed
before the close) and to the close before it; `verify` checks both chains, the anchor (the link
named still has the hash recorded), the digest, and recomputes every closing balance from the
transfers: opening (the close before's totals) plus the period's movements equals closing, per
account, and the period's debits equal its credits per asset. A changed closing balance, a
removed or added account row, or a transfer written into a closed period after its close shows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.periods import Period, period_of

ZERO_HASH: Final = bytes(32)
CLOSE_LOCK_NAMESPACE: Final = b"giftledger.period_close"
# How long a close waits for the batches in flight to commit (they hold their locks for the
# length of one batch).
WRITERS_WAIT_MS_MAX: Final = 30_000
# How the wait for writers in flight ends when they do not finish: its lock timeout (55P03), or
# the session's statement timeout (57014) when that is the shorter.
_WAIT_ENDED_SQLSTATES: Final = frozenset({"55P03", "57014"})
DIGEST_ROWS_PER_FETCH: Final = 5_000
PROBLEM_COUNT_MAX: Final = 100

CHECK_CHAIN: Final = "closes_chained"
CHECK_DIGEST: Final = "closing_balances_unchanged"
CHECK_ANCHOR: Final = "closes_anchored_in_transfer_chain"
CHECK_BALANCES: Final = "closing_balances_match_transfers"
CHECK_ASSETS: Final = "closed_period_debits_equal_credits"
CHECKS: Final = (CHECK_CHAIN, CHECK_DIGEST, CHECK_ANCHOR, CHECK_BALANCES, CHECK_ASSETS)


def _lock_key() -> int:
    digest = hashlib.sha256(CLOSE_LOCK_NAMESPACE).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


CLOSE_LOCK_KEY: Final = _lock_key()


class CloseRefusedError(Exception):
    """The period cannot be closed now; the message says why."""


@dataclass(frozen=True, slots=True)
class PeriodClose:
    id: int
    period: str
    period_start: datetime
    period_end: datetime
    account_count: int
    balances_sha256: bytes
    chain_link_id: int | None
    chain_hash: bytes
    previous_hash: bytes
    hash: bytes
    closed_at: datetime
    closed_by: str | None  # who closed it; None: closed before migration 0031, which kept none


def balance_line(account_id: int, name: str, asset: str, debits: int, credits: int) -> bytes:
    """One account's line in `balances_sha256`: a JSON array, so no name can forge a line."""
    values = [account_id, name, asset, debits, credits]
    return (json.dumps(values, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def close_hash(
    previous_hash: bytes, chain_hash: bytes, period: str, balances_sha256: bytes
) -> bytes:
    return hashlib.sha256(previous_hash + chain_hash + period.encode() + balances_sha256).digest()


_CLOSE_COLUMNS = """
    id, period, period_start, period_end, account_count, balances_sha256, chain_link_id,
    chain_hash, previous_hash, hash, closed_at, closed_by
"""


def _close(row: Any) -> PeriodClose:
    values = dict(row._mapping)
    for name in ("balances_sha256", "chain_hash", "previous_hash", "hash"):
        values[name] = bytes(values[name])
    return PeriodClose(**values)


async def load_close(conn: AsyncConnection, period: Period) -> PeriodClose | None:
    row = (
        await conn.execute(
            text(f"SELECT {_CLOSE_COLUMNS} FROM period_closes WHERE period = :period"),  # noqa: S608
            {"period": period.text},
        )
    ).first()
    return None if row is None else _close(row)


async def list_closes(conn: AsyncConnection) -> list[PeriodClose]:
    """Every close, in period order (at most one a month, so a short list)."""
    rows = await conn.execute(
        text(f"SELECT {_CLOSE_COLUMNS} FROM period_closes ORDER BY period_start")  # noqa: S608
    )
    return [_close(row) for row in rows]


async def latest_close_before(conn: AsyncConnection, moment: datetime) -> PeriodClose | None:
    """The close of the latest period that starts before `moment`."""
    row = (
        await conn.execute(
            text(
                f"SELECT {_CLOSE_COLUMNS} FROM period_closes WHERE period_start < :moment"  # noqa: S608
                " ORDER BY period_start DESC LIMIT 1"
            ),
            {"moment": moment},
        )
    ).first()
    return None if row is None else _close(row)


# Closing a period ---------------------------------------------------------------------------


async def close_period(engine: AsyncEngine, period: Period, *, closed_by: str) -> PeriodClose:
    """Close `period` as `closed_by` (who closes it, kept on the close's row but not in its hash;
    see the module's docstring); raises `CloseRefusedError` when it may not be closed now."""
    await _wait_for_writers_in_flight(engine, period)
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLOSE_LOCK_KEY})
        base = await _refuse_unless_closable(conn, period)
        close_id = (
            await conn.execute(
                text("SELECT nextval(pg_get_serial_sequence('period_closes', 'id'))")
            )
        ).scalar_one()
        head = (await conn.execute(text("SELECT link_id, hash FROM ledger_chain_head"))).one()
        await conn.execute(
            _WRITE_CLOSING_BALANCES,
            {
                "close_id": close_id,
                "base_close_id": None if base is None else base.id,
                "from_time": None if base is None else base.period_end,
                "to_time": period.end,
            },
        )
        balances_sha256, account_count = await balances_digest(conn, close_id)
        previous_hash = ZERO_HASH if base is None else base.hash
        chain_hash = bytes(head.hash)
        row = (
            await conn.execute(
                text(
                    f"""
                    INSERT INTO period_closes (id, period, period_start, period_end,
                        account_count, balances_sha256, chain_link_id, chain_hash, previous_hash,
                        hash, closed_by)
                    VALUES (:id, :period, :start, :end, :count, :digest, :link_id, :chain_hash,
                        :previous_hash, :hash, :closed_by)
                    RETURNING {_CLOSE_COLUMNS}
                    """  # noqa: S608
                ),
                {
                    "id": close_id,
                    "period": period.text,
                    "start": period.start,
                    "end": period.end,
                    "count": account_count,
                    "digest": balances_sha256,
                    "link_id": head.link_id,
                    "chain_hash": chain_hash,
                    "previous_hash": previous_hash,
                    "hash": close_hash(previous_hash, chain_hash, period.text, balances_sha256),
                    "closed_by": closed_by,
                },
            )
        ).one()
    return _close(row)


async def _wait_for_writers_in_flight(engine: AsyncEngine, period: Period) -> None:
    """Refuse a period that has not ended; else wait until every batch that may have been
    stamped before its end has committed or rolled back."""
    async with engine.begin() as conn:
        now = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
        if now < period.end:
            raise CloseRefusedError(
                f"{period} has not ended: it ends at {period.end.isoformat()} (UTC)"
            )
        try:
            await conn.execute(
                text("SELECT wait_for_ledger_writers(:wait_ms)"),
                {"wait_ms": WRITERS_WAIT_MS_MAX},
            )
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) not in _WAIT_ENDED_SQLSTATES:
                raise
            raise CloseRefusedError(
                f"batches of transfers were still being written after {WRITERS_WAIT_MS_MAX:,} ms"
                " (or the session's statement timeout): a batch holds the ledger's accounts for"
                " well under a second, so try again; if it happens again, a writer is stuck"
                " (pg_stat_activity shows which)"
            ) from error


async def _refuse_unless_closable(conn: AsyncConnection, period: Period) -> PeriodClose | None:
    """The close before `period` (None for the first), once `period` is found closable."""
    if await load_close(conn, period) is not None:
        raise CloseRefusedError(f"{period} is closed already")
    later = (
        await conn.execute(
            text(
                "SELECT period FROM period_closes WHERE period_start > :start"
                " ORDER BY period_start LIMIT 1"
            ),
            {"start": period.start},
        )
    ).scalar_one_or_none()
    if later is not None:
        raise CloseRefusedError(f"{later} is closed already: periods close in order")
    base = await latest_close_before(conn, period.start)
    first_open = (
        await conn.execute(
            text(
                "SELECT min(created_at) FROM transfers"
                " WHERE created_at >= coalesce(CAST(:from_time AS timestamptz), '-infinity')"
                " AND created_at < :to_time"
            ),
            {"from_time": None if base is None else base.period_end, "to_time": period.start},
        )
    ).scalar_one_or_none()
    if first_open is not None:
        raise CloseRefusedError(
            f"{period_of(first_open)} holds transfers and is not closed: close it before {period}"
        )
    return base


# Posted debits and credits of every account, cumulative: the base close's totals plus the
# posted transfers (neither pending nor void) stamped in [from_time, to_time).
_WRITE_CLOSING_BALANCES = text(
    """
    INSERT INTO closing_balances (close_id, account_id, debits_minor, credits_minor)
    SELECT :close_id, account_id, sum(debits)::bigint, sum(credits)::bigint
    FROM (
        SELECT account_id, debits_minor AS debits, credits_minor AS credits
        FROM closing_balances WHERE close_id = CAST(:base_close_id AS bigint)
        UNION ALL
        SELECT debit_account_id, amount, 0 FROM transfers
        WHERE flags & 10 = 0
          AND created_at >= coalesce(CAST(:from_time AS timestamptz), '-infinity')
          AND created_at < :to_time
        UNION ALL
        SELECT credit_account_id, 0, amount FROM transfers
        WHERE flags & 10 = 0
          AND created_at >= coalesce(CAST(:from_time AS timestamptz), '-infinity')
          AND created_at < :to_time
    ) totals
    GROUP BY account_id
    """
)


async def balances_digest(conn: AsyncConnection, close_id: int) -> tuple[bytes, int]:
    """SHA-256 of the close's balance lines in account id order, and their count; read a slice
    at a time, so memory stays bounded however many accounts there are."""
    hasher = hashlib.sha256()
    count = 0
    result = await conn.stream(
        text(
            "SELECT b.account_id, a.name, a.asset, b.debits_minor, b.credits_minor"
            " FROM closing_balances b JOIN accounts a ON a.id = b.account_id"
            " WHERE b.close_id = :close_id ORDER BY b.account_id"
        ),
        {"close_id": close_id},
    )
    async for rows in result.partitions(DIGEST_ROWS_PER_FETCH):
        for row in rows:
            hasher.update(balance_line(*row))
            count += 1
    return hasher.digest(), count


# Checks for `verify` ------------------------------------------------------------------------


async def check_closed_periods(
    conn: AsyncConnection, *, recomputed_up_to_id: int = 0
) -> list[tuple[str, str]]:
    """Every problem with the closes, as (check name, detail); empty when every close holds.

    Closes with an id up to `recomputed_up_to_id` (checked whole by an earlier clean `verify`)
    are held to both chains and their anchor only: their balances are not read again."""
    problems: list[tuple[str, str]] = []
    previous: PeriodClose | None = None
    for close in await list_closes(conn):
        if len(problems) >= PROBLEM_COUNT_MAX:
            break
        recompute = close.id > recomputed_up_to_id
        problems += _chain_problems(close, previous)
        if recompute:
            problems += await _digest_problems(conn, close)
        problems += await _anchor_problems(conn, close)
        if recompute:
            problems += await _balance_problems(conn, close, previous)
            problems += await _asset_problems(conn, close, previous)
        previous = close
    return problems[:PROBLEM_COUNT_MAX]


def _chain_problems(close: PeriodClose, previous: PeriodClose | None) -> list[tuple[str, str]]:
    expected_previous = ZERO_HASH if previous is None else previous.hash
    problems = []
    if close.previous_hash != expected_previous:
        problems.append(
            (CHECK_CHAIN, f"close of {close.period} does not follow the close before it")
        )
    recomputed = close_hash(
        close.previous_hash, close.chain_hash, close.period, close.balances_sha256
    )
    if recomputed != close.hash:
        problems.append(
            (CHECK_CHAIN, f"close of {close.period}: its hash does not cover its fields")
        )
    return problems


async def _digest_problems(conn: AsyncConnection, close: PeriodClose) -> list[tuple[str, str]]:
    digest, count = await balances_digest(conn, close.id)
    if (digest, count) == (close.balances_sha256, close.account_count):
        return []
    return [
        (
            CHECK_DIGEST,
            f"close of {close.period}: its {count} closing balances were changed after the close"
            f" ({close.account_count} were stored)",
        )
    ]


async def _anchor_problems(conn: AsyncConnection, close: PeriodClose) -> list[tuple[str, str]]:
    if close.chain_link_id is None:
        if close.chain_hash == ZERO_HASH:
            return []
        return [(CHECK_ANCHOR, f"close of {close.period} names no link but a chain hash")]
    link_hash = (
        await conn.execute(
            text("SELECT hash FROM ledger_links WHERE id = :id"), {"id": close.chain_link_id}
        )
    ).scalar_one_or_none()
    if link_hash is not None and bytes(link_hash) == close.chain_hash:
        return []
    return [
        (
            CHECK_ANCHOR,
            f"close of {close.period}: link {close.chain_link_id} of the transfers' chain is gone"
            " or has another hash than the close recorded",
        )
    ]


# Opening (the close before's totals) plus the posted movements stamped between the close
# before's end and this one's, against the stored closing totals, per account.
_BALANCE_MISMATCHES = text(
    """
    WITH posted AS (
        SELECT debit_account_id AS account_id, amount AS debit, 0::bigint AS credit
        FROM transfers
        WHERE flags & 10 = 0
          AND created_at >= coalesce(CAST(:from_time AS timestamptz), '-infinity')
          AND created_at < :to_time
        UNION ALL
        SELECT credit_account_id, 0, amount FROM transfers
        WHERE flags & 10 = 0
          AND created_at >= coalesce(CAST(:from_time AS timestamptz), '-infinity')
          AND created_at < :to_time
    ), movements AS (
        SELECT account_id, sum(debit)::bigint AS debits, sum(credit)::bigint AS credits
        FROM posted GROUP BY account_id
    ), opening AS (
        SELECT account_id, debits_minor AS debits, credits_minor AS credits
        FROM closing_balances WHERE close_id = CAST(:previous_id AS bigint)
    ), closing AS (
        SELECT account_id, debits_minor AS debits, credits_minor AS credits
        FROM closing_balances WHERE close_id = :close_id
    ), expected AS (
        SELECT coalesce(o.account_id, m.account_id) AS account_id,
               coalesce(o.debits, 0) + coalesce(m.debits, 0) AS debits,
               coalesce(o.credits, 0) + coalesce(m.credits, 0) AS credits
        FROM opening o FULL JOIN movements m ON m.account_id = o.account_id
    )
    SELECT coalesce(a.name, '#' || coalesce(c.account_id, e.account_id)) AS account,
           e.debits AS expected_debits, e.credits AS expected_credits,
           c.debits AS stored_debits, c.credits AS stored_credits
    FROM closing c
    FULL JOIN expected e ON e.account_id = c.account_id
    LEFT JOIN accounts a ON a.id = coalesce(c.account_id, e.account_id)
    WHERE c.account_id IS NULL OR e.account_id IS NULL
       OR (c.debits, c.credits) <> (e.debits, e.credits)
    ORDER BY 1
    LIMIT :limit
    """
)


async def _balance_problems(
    conn: AsyncConnection, close: PeriodClose, previous: PeriodClose | None
) -> list[tuple[str, str]]:
    rows = await conn.execute(
        _BALANCE_MISMATCHES,
        {
            "from_time": None if previous is None else previous.period_end,
            "to_time": close.period_end,
            "previous_id": None if previous is None else previous.id,
            "close_id": close.id,
            "limit": PROBLEM_COUNT_MAX,
        },
    )
    return [
        (
            CHECK_BALANCES,
            f"close of {close.period}: {row.account} closed with (debits, credits) "
            f"{_pair(row.stored_debits, row.stored_credits)} but opening plus the period's "
            f"transfers give {_pair(row.expected_debits, row.expected_credits)}",
        )
        for row in rows
    ]


def _pair(debits: int | None, credits: int | None) -> str:
    if debits is None or credits is None:
        return "nothing"
    return f"({debits}, {credits})"


_ASSET_MISMATCHES = text(
    """
    SELECT a.asset,
           sum(c.debits_minor - coalesce(o.debits_minor, 0))::bigint AS debits,
           sum(c.credits_minor - coalesce(o.credits_minor, 0))::bigint AS credits,
           sum(c.credits_minor - c.debits_minor)::bigint AS balance
    FROM closing_balances c
    JOIN accounts a ON a.id = c.account_id
    LEFT JOIN closing_balances o
           ON o.close_id = CAST(:previous_id AS bigint) AND o.account_id = c.account_id
    WHERE c.close_id = :close_id
    GROUP BY a.asset
    HAVING sum(c.debits_minor - coalesce(o.debits_minor, 0))
           <> sum(c.credits_minor - coalesce(o.credits_minor, 0))
        OR sum(c.credits_minor - c.debits_minor) <> 0
    ORDER BY a.asset
    """
)


async def _asset_problems(
    conn: AsyncConnection, close: PeriodClose, previous: PeriodClose | None
) -> list[tuple[str, str]]:
    rows = await conn.execute(
        _ASSET_MISMATCHES,
        {"previous_id": None if previous is None else previous.id, "close_id": close.id},
    )
    return [
        (
            CHECK_ASSETS,
            f"close of {close.period}: {row.asset} debits {row.debits} and credits {row.credits}"
            f" in the period, closing balances sum to {row.balance}",
        )
        for row in rows
    ]
