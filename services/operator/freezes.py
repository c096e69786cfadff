"""Creator freezes as stored: `creator_freezes` keeps every freeze and unfreeze in order, and the
latest row is the state. A frozen creator's cash-out requests are rejected (`frozen`, by the
cash-out desk); gifts and other earnings still credit. No row means not frozen. And whether a
creator is known at all (`creator_is_known`), which an operator action and an eligibility answer
ask first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


@dataclass(frozen=True, slots=True)
class FreezeState:
    creator_id: str
    frozen: bool
    # The action that set the state and when; None for a creator never frozen.
    action_id: int | None
    since: datetime | None


_LATEST = text(
    "SELECT frozen, action_id, recorded_at FROM creator_freezes"
    " WHERE creator_id = :creator ORDER BY id DESC LIMIT 1"
)


async def freeze_state(conn: AsyncConnection, creator_id: str) -> FreezeState:
    row = (await conn.execute(_LATEST, {"creator": creator_id})).first()
    if row is None:
        return FreezeState(creator_id, frozen=False, action_id=None, since=None)
    return FreezeState(creator_id, row.frozen, row.action_id, row.recorded_at)


async def creator_is_frozen(conn: AsyncConnection, creator_id: str) -> bool:
    """Whether the creator's latest freeze row freezes them (committed rows, as the caller's
    transaction sees them)."""
    return (await freeze_state(conn, creator_id)).frozen


async def creator_is_known(conn: AsyncConnection, creator_id: str) -> bool:
    """Whether anything names the creator: a profile, an account or a cash-out request. One
    that nothing names is unknown: it cannot be frozen or adjusted, `giftledger eligibility`
    exits 2 and the API's eligibility answers 404."""
    found = await conn.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM creators WHERE creator_id = :creator)"
            " OR EXISTS (SELECT 1 FROM accounts WHERE creator_id = :creator)"
            " OR EXISTS (SELECT 1 FROM cashouts WHERE creator_id = :creator)"
        ),
        {"creator": creator_id},
    )
    return bool(found.scalar_one())


async def record_freeze(
    conn: AsyncConnection, creator_id: str, *, frozen: bool, action_id: int
) -> None:
    await conn.execute(
        text(
            "INSERT INTO creator_freezes (creator_id, frozen, action_id)"
            " VALUES (:creator, :frozen, :action)"
        ),
        {"creator": creator_id, "frozen": frozen, "action": action_id},
    )
