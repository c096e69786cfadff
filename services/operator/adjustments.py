"""Balance adjustments as stored, and the transfer an approval posts.

An adjustment moves `amount_minor` (signed, in the asset's minor unit) between the creator's
account of the asset (their available Diamonds, or their wallet in a currency) and the platform's
`operator_adjustments` account of that asset: a credit (> 0) from the platform to the creator, a
debit (< 0) from the creator to the platform. A debit is a `funded` transfer, refused when it
would take the creator's available balance below zero. The transfer's code is
`operator_adjustment`; its id is derived from the adjustment, so it is posted once however often
the approval runs.

An adjustment's id is the id of the action that proposed it (`operator_actions`); it is
`proposed` until its approval row exists (`approved`: posted) or its withdrawal row does
(`withdrawn`: never posted). The database refuses an adjustment with both (migration 0033).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger import chart
from ledger.chart import AccountKind, AccountSpec
from ledger.ids import transfer_id
from ledger.model import Transfer, TransferCode, TransferFlags
from schemas import topics
from schemas.assets import CURRENCIES, DIAMOND
from schemas.events import AMOUNT_MAX

ADJUSTMENT_AMOUNT_MAX: Final = AMOUNT_MAX
ADJUSTABLE_ASSETS: Final = frozenset(CURRENCIES | {DIAMOND})
ADJUSTMENT_LIST_LIMIT_MAX: Final = 1_000
AdjustmentStatus = Literal["proposed", "approved", "withdrawn"]
ADJUSTMENT_STATUSES: Final[tuple[AdjustmentStatus, ...]] = ("proposed", "approved", "withdrawn")


@dataclass(frozen=True, slots=True)
class Adjustment:
    id: int
    creator_id: str
    asset: str
    scale: int
    amount_minor: int
    reason: str
    ticket: str | None
    proposed_by: str
    proposed_at: datetime
    approved_by: str | None
    approved_at: datetime | None
    approval_action_id: int | None
    transfer_id: uuid.UUID | None
    withdrawn_by: str | None
    withdrawn_at: datetime | None
    withdrawal_action_id: int | None

    @property
    def status(self) -> AdjustmentStatus:
        if self.approval_action_id is not None:
            return "approved"
        if self.withdrawal_action_id is not None:
            return "withdrawn"
        return "proposed"


def adjustment_problem(asset: str, amount_minor: int) -> str | None:
    """Why an adjustment of `amount_minor` `asset` cannot be proposed, or None."""
    if asset not in ADJUSTABLE_ASSETS:
        return f"asset {asset!r} cannot be adjusted: DIAMOND or a currency such as USD"
    if amount_minor == 0:
        return "amount_minor must not be 0: > 0 credits the creator, < 0 debits them"
    if abs(amount_minor) > ADJUSTMENT_AMOUNT_MAX:
        return f"amount_minor is at most {ADJUSTMENT_AMOUNT_MAX} either way"
    return None


def creator_account(creator_id: str, asset: str) -> AccountSpec:
    if asset == DIAMOND:
        return chart.creator_diamonds_available(creator_id)
    return chart.creator_wallet(creator_id, asset)


def platform_account(asset: str) -> AccountSpec:
    return chart.platform(AccountKind.OPERATOR_ADJUSTMENTS, asset)


def adjustment_accounts(adjustment: Adjustment) -> list[AccountSpec]:
    return [
        creator_account(adjustment.creator_id, adjustment.asset),
        platform_account(adjustment.asset),
    ]


def adjustment_transfer_id(adjustment_id: int) -> uuid.UUID:
    return transfer_id(topics.OPERATOR_ACTIONS, f"adjustment:{adjustment_id}", "post")


def adjustment_transfer(
    adjustment: Adjustment, account_ids: dict[str, int], event_id: str, approved_by: str
) -> Transfer:
    """The transfer that posts an approved adjustment (`event_id`: the approval's event)."""
    creator = account_ids[creator_account(adjustment.creator_id, adjustment.asset).name]
    platform = account_ids[platform_account(adjustment.asset).name]
    credit = adjustment.amount_minor > 0
    return Transfer(
        id=adjustment_transfer_id(adjustment.id),
        debit_account_id=platform if credit else creator,
        credit_account_id=creator if credit else platform,
        amount=abs(adjustment.amount_minor),
        code=TransferCode.OPERATOR_ADJUSTMENT,
        flags=TransferFlags.NONE if credit else TransferFlags.FUNDED,
        event_id=event_id,
        metadata={
            "adjustment_id": adjustment.id,
            "proposed_by": adjustment.proposed_by,
            "approved_by": approved_by,
        },
    )


# Rows --------------------------------------------------------------------------------------

_ADJUSTMENTS = """
    SELECT a.id, a.creator_id, a.asset, s.scale, a.amount_minor, p.reason, p.ticket,
           a.proposed_by, a.proposed_at, v.approved_by, v.approved_at, v.approval_action_id,
           v.transfer_id, w.withdrawn_by, w.withdrawn_at, w.withdrawal_action_id
    FROM balance_adjustments a
    JOIN operator_actions p ON p.id = a.id
    JOIN assets s ON s.code = a.asset
    LEFT JOIN balance_adjustment_approvals v ON v.adjustment_id = a.id
    LEFT JOIN balance_adjustment_withdrawals w ON w.adjustment_id = a.id
"""


def _adjustment(row: Any) -> Adjustment:
    return Adjustment(**row._mapping)


async def insert_adjustment(
    conn: AsyncConnection,
    *,
    proposal_action_id: int,
    creator_id: str,
    asset: str,
    amount_minor: int,
    proposed_by: str,
) -> None:
    await conn.execute(
        text(
            "INSERT INTO balance_adjustments (id, creator_id, asset, amount_minor, proposed_by)"
            " VALUES (:id, :creator, :asset, :amount, :by)"
        ),
        {
            "id": proposal_action_id,
            "creator": creator_id,
            "asset": asset,
            "amount": amount_minor,
            "by": proposed_by,
        },
    )


async def insert_approval(
    conn: AsyncConnection,
    adjustment: Adjustment,
    *,
    approved_by: str,
    approval_action_id: int,
    posted_transfer_id: uuid.UUID,
) -> None:
    await conn.execute(
        text(
            "INSERT INTO balance_adjustment_approvals (adjustment_id, proposed_by, approved_by,"
            " approval_action_id, transfer_id) VALUES (:id, :proposed_by, :approved_by,"
            " :action, :transfer)"
        ),
        {
            "id": adjustment.id,
            "proposed_by": adjustment.proposed_by,
            "approved_by": approved_by,
            "action": approval_action_id,
            "transfer": posted_transfer_id,
        },
    )


async def insert_withdrawal(
    conn: AsyncConnection, adjustment_id: int, *, withdrawn_by: str, withdrawal_action_id: int
) -> None:
    await conn.execute(
        text(
            "INSERT INTO balance_adjustment_withdrawals (adjustment_id, withdrawn_by,"
            " withdrawal_action_id) VALUES (:id, :withdrawn_by, :action)"
        ),
        {"id": adjustment_id, "withdrawn_by": withdrawn_by, "action": withdrawal_action_id},
    )


async def load_adjustment(conn: AsyncConnection, adjustment_id: int) -> Adjustment | None:
    row = (
        await conn.execute(text(_ADJUSTMENTS + " WHERE a.id = :id"), {"id": adjustment_id})
    ).first()
    return None if row is None else _adjustment(row)


async def list_adjustments(
    conn: AsyncConnection,
    *,
    status: AdjustmentStatus | None = None,
    creator_id: str | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[Adjustment]:
    """Adjustments, oldest first, by status and creator; after the adjustment `after_id` (the
    cursor) when given."""
    if not 1 <= limit <= ADJUSTMENT_LIST_LIMIT_MAX:
        raise ValueError(f"limit must be between 1 and {ADJUSTMENT_LIST_LIMIT_MAX}")
    rows = await conn.execute(
        text(
            _ADJUSTMENTS
            + """
            WHERE (CAST(:creator AS text) IS NULL OR a.creator_id = :creator)
              AND (CAST(:after AS bigint) IS NULL OR a.id > :after)
              AND CASE CAST(:status AS text)
                  WHEN 'approved' THEN v.adjustment_id IS NOT NULL
                  WHEN 'withdrawn' THEN w.adjustment_id IS NOT NULL
                  WHEN 'proposed' THEN v.adjustment_id IS NULL AND w.adjustment_id IS NULL
                  ELSE CAST(:status AS text) IS NULL
              END
            ORDER BY a.id
            LIMIT :limit
            """
        ),
        {"creator": creator_id, "status": status, "after": after_id, "limit": limit},
    )
    return [_adjustment(row) for row in rows]


async def available_balance(conn: AsyncConnection, account_id: int) -> int:
    """Credits posted minus debits posted and pending: what a funded debit may take."""
    found = await conn.execute(
        text("SELECT credits_posted - debits_posted - debits_pending FROM accounts WHERE id = :id"),
        {"id": account_id},
    )
    return int(found.scalar_one())
