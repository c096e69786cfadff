"""Cash-outs as stored: the `Cashout` record, its rows, its transitions and the outbox rows each
change queues (`cashouts.updated`, `payouts.requested`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas import topics
from schemas.events import ID_LENGTH_MAX, CashoutUpdated
from services.rates.fx import decimal_text
from services.runtime.outbox_rows import queue

CASHOUT_LIST_LIMIT_MAX = 1_000
OPEN_STATUSES = ("held", "submitted")


def cashout_event_id(cashout_id: str, what: str) -> str:
    """The event_id of an event giftledger publishes about a cash-out (`what`: a status, or
    `payout`): the same every time, and never another cash-out's.

    `<cashout_id>:<what>` while that fits in an event_id, else `<what>#<sha256 of cashout_id>`,
    which holds no `:`, so the two forms never meet (cutting the long form at 128 characters, as
    before, gave two long ids that differ only at the end the same event ids)."""
    readable = f"{cashout_id}:{what}"
    if len(readable) <= ID_LENGTH_MAX:
        return readable
    return f"{what}#{hashlib.sha256(cashout_id.encode()).hexdigest()}"


@dataclass(slots=True, kw_only=True)
class Cashout:
    cashout_id: str
    creator_id: str
    asset: str
    amount: int
    payout_currency: str
    payout_amount: int | None
    usd_value_micros: int
    rate_card_version: int | None
    fx_numerator: int | None
    fx_denominator: int | None
    status: str
    rejected_rule: str | None
    failure_code: str | None
    payout_account_ref: str | None
    occurred_at: datetime
    # When the cash-out last changed state: its latest transition's time, the `occurred_at` of
    # the `cashouts.updated` record of its current state (None until it is first stored).
    transitioned_at: datetime | None = None

    def updated_event(self, moment: datetime) -> CashoutUpdated:
        fx = None
        if self.fx_numerator is not None and self.fx_denominator is not None:
            fx = decimal_text(Fraction(self.fx_numerator, self.fx_denominator))
        return CashoutUpdated(
            event_id=cashout_event_id(self.cashout_id, self.status),
            occurred_at=moment,
            cashout_id=self.cashout_id,
            creator_id=self.creator_id,
            status=self.status,  # type: ignore[arg-type]
            asset=self.asset,
            amount=self.amount,
            payout_currency=self.payout_currency,
            payout_amount=self.payout_amount,
            rate_card_version=self.rate_card_version,
            fx_rate=fx,
            failure_code=self.failure_code,
            rejected_rule=self.rejected_rule,
        )


async def record_transition(
    conn: AsyncConnection, cashout: Cashout, topic_prefix: str, detail: str = ""
) -> None:
    """Store the state change with its time and queue it for `cashouts.updated` (on the topics
    of the deployment with `topic_prefix`)."""
    moment = (
        await conn.execute(
            text(
                "INSERT INTO cashout_transitions (cashout_id, status, detail)"
                " VALUES (:id, :status, :detail) RETURNING at"
            ),
            {"id": cashout.cashout_id, "status": cashout.status, "detail": detail},
        )
    ).scalar_one()
    cashout.transitioned_at = moment
    event = cashout.updated_event(moment)
    await queue(
        conn, topic_prefix, topics.CASHOUTS_UPDATED, cashout.creator_id, event.model_dump_json()
    )


_CASHOUT_ROWS = """
    SELECT cashout_id, creator_id, asset, amount, payout_currency, payout_amount,
           usd_value_micros, rate_card_version, fx_numerator, fx_denominator, status,
           rejected_rule, failure_code, payout_account_ref, occurred_at,
           (SELECT t.at FROM cashout_transitions t WHERE t.cashout_id = cashouts.cashout_id
            ORDER BY t.seq DESC LIMIT 1) AS transitioned_at
    FROM cashouts
"""
_SELECT_CASHOUT = _CASHOUT_ROWS + " WHERE cashout_id = :id"
_SELECT_LOCKED_CASHOUT = _SELECT_CASHOUT + " FOR UPDATE"


async def load_cashout(
    conn: AsyncConnection, cashout_id: str, *, lock: bool = False
) -> Cashout | None:
    row = (
        await conn.execute(
            text(_SELECT_LOCKED_CASHOUT if lock else _SELECT_CASHOUT),
            {"id": cashout_id},
        )
    ).first()
    return None if row is None else Cashout(**row._mapping)


async def load_cashouts(
    conn: AsyncConnection, cashout_ids: list[str], *, lock: bool = False
) -> dict[str, Cashout]:
    """The stored cash-outs among `cashout_ids`, by id, read `CASHOUT_LIST_LIMIT_MAX` ids per
    statement; unknown ids are left out. With `lock`, their rows are locked in id order: a
    transaction that locks all its cash-outs so, before any account, never waits on another in
    a cycle (the ledger locks accounts in id order too)."""
    found: dict[str, Cashout] = {}
    ordered = sorted(set(cashout_ids))
    suffix = " ORDER BY cashout_id FOR UPDATE" if lock else ""
    for start in range(0, len(ordered), CASHOUT_LIST_LIMIT_MAX):
        rows = await conn.execute(
            text(_CASHOUT_ROWS + " WHERE cashout_id = ANY(CAST(:ids AS text[]))" + suffix),
            {"ids": ordered[start : start + CASHOUT_LIST_LIMIT_MAX]},
        )
        found.update((row.cashout_id, Cashout(**row._mapping)) for row in rows)
    return found


def cashout_document(cashout: Cashout) -> dict[str, Any]:
    """The cash-out as the `cashouts.updated` record of its current state: the same fields, its
    `occurred_at` the time of that state change, so every read gives the same document."""
    if cashout.transitioned_at is None:
        raise ValueError(f"cash-out {cashout.cashout_id} has not been stored")
    event = cashout.updated_event(cashout.transitioned_at)
    return json.loads(event.model_dump_json())  # type: ignore[no-any-return]


async def list_cashouts(
    conn: AsyncConnection,
    *,
    status: str | None = None,
    creator_id: str | None = None,
    stale_after_s: float | None = None,
    limit: int = 100,
) -> list[Cashout]:
    """Cash-outs, newest first, filtered by status and creator; with `stale_after_s`, only the
    holds that have waited longer than that for the bank's answer."""
    if not 1 <= limit <= CASHOUT_LIST_LIMIT_MAX:
        raise ValueError(f"limit must be between 1 and {CASHOUT_LIST_LIMIT_MAX}")
    rows = await conn.execute(
        text(
            _CASHOUT_ROWS
            + """
            WHERE (CAST(:status AS text) IS NULL OR status = :status)
              AND (CAST(:creator AS text) IS NULL OR creator_id = :creator)
              AND (CAST(:stale_s AS double precision) IS NULL
                   OR (status IN ('held', 'submitted')
                       AND updated_at < clock_timestamp() - make_interval(secs => :stale_s)))
            ORDER BY occurred_at DESC, cashout_id
            LIMIT :limit
            """
        ),
        {"status": status, "creator": creator_id, "stale_s": stale_after_s, "limit": limit},
    )
    return [Cashout(**row._mapping) for row in rows]
