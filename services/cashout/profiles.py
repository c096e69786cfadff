"""Creator profiles: the latest `creators.updated` facts about each creator.

The `creators` table is a projection, not part of the ledger: each row is replaced in place by a
later event. "Later" means a greater `(occurred_at, event_id)`: the latest `occurred_at` wins
whatever the delivery order, `event_id` breaks a tie between two events of the same instant (so
that tie, too, ends the same way in any order), and applying the same event again changes nothing.

The upsert runs on the caller's connection and inside its transaction, so a consumer can record
the batch's `applied_events` rows and dead letters in the same commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import CreatorUpdated

# Event ids are visible ASCII; the "C" collation compares them byte by byte, as Python compares
# str, so the in-batch choice below and the statement's WHERE agree on which event is later.
_UPSERT = text(
    """
    INSERT INTO creators AS c (creator_id, birth_date, country, followers, video_views_30d,
                               posts_30d, in_good_standing, identity_verified,
                               payout_account_ref, occurred_at, event_id)
    SELECT * FROM unnest(
        CAST(:creator_ids AS text[]), CAST(:birth_dates AS date[]),
        CAST(:countries AS text[]), CAST(:followers AS bigint[]),
        CAST(:video_views_30d AS bigint[]), CAST(:posts_30d AS bigint[]),
        CAST(:in_good_standing AS boolean[]), CAST(:identity_verified AS boolean[]),
        CAST(:payout_account_refs AS text[]), CAST(:occurred_at AS timestamptz[]),
        CAST(:event_ids AS text[]))
    ON CONFLICT (creator_id) DO UPDATE SET
        birth_date = EXCLUDED.birth_date,
        country = EXCLUDED.country,
        followers = EXCLUDED.followers,
        video_views_30d = EXCLUDED.video_views_30d,
        posts_30d = EXCLUDED.posts_30d,
        in_good_standing = EXCLUDED.in_good_standing,
        identity_verified = EXCLUDED.identity_verified,
        payout_account_ref = EXCLUDED.payout_account_ref,
        occurred_at = EXCLUDED.occurred_at,
        event_id = EXCLUDED.event_id,
        updated_at = now()
    WHERE (c.occurred_at, c.event_id COLLATE "C")
        < (EXCLUDED.occurred_at, EXCLUDED.event_id COLLATE "C")
    """
)

_SELECT = text(
    """
    SELECT creator_id, birth_date, country, followers, video_views_30d, posts_30d,
           in_good_standing, identity_verified, payout_account_ref, occurred_at, event_id,
           updated_at
    FROM creators WHERE creator_id = :creator_id
    """
)


@dataclass(frozen=True, slots=True)
class CreatorProfile:
    """What the latest applied `creators.updated` event said about one creator."""

    creator_id: str
    birth_date: date
    country: str
    followers: int
    video_views_30d: int
    posts_30d: int
    in_good_standing: bool
    identity_verified: bool
    payout_account_ref: str | None
    occurred_at: datetime
    event_id: str
    updated_at: datetime


def _recency(event: CreatorUpdated) -> tuple[datetime, str]:
    return event.occurred_at, event.event_id


def latest_per_creator(events: Sequence[CreatorUpdated]) -> list[CreatorUpdated]:
    """The latest event of each creator, ordered by creator_id.

    One statement cannot update a row twice, so several updates of one creator in a batch are
    reduced to the one that would win anyway. The fixed order makes concurrent upserts lock rows
    in the same order, so they wait for each other instead of deadlocking."""
    latest: dict[str, CreatorUpdated] = {}
    for event in events:
        current = latest.get(event.creator_id)
        if current is None or _recency(current) < _recency(event):
            latest[event.creator_id] = event
    return [latest[creator_id] for creator_id in sorted(latest)]


async def apply_creator_updates(conn: AsyncConnection, events: Sequence[CreatorUpdated]) -> int:
    """Upsert the creators' latest facts in one statement; returns the rows inserted or changed.

    An event older than (or the same as) the stored one changes nothing and is not counted."""
    latest = latest_per_creator(events)
    if not latest:
        return 0
    result = await conn.execute(
        _UPSERT,
        {
            "creator_ids": [event.creator_id for event in latest],
            "birth_dates": [event.birth_date for event in latest],
            "countries": [event.country for event in latest],
            "followers": [event.followers for event in latest],
            "video_views_30d": [event.video_views_30d for event in latest],
            "posts_30d": [event.posts_30d for event in latest],
            "in_good_standing": [event.in_good_standing for event in latest],
            "identity_verified": [event.identity_verified for event in latest],
            "payout_account_refs": [event.payout_account_ref for event in latest],
            "occurred_at": [event.occurred_at for event in latest],
            "event_ids": [event.event_id for event in latest],
        },
    )
    return result.rowcount


async def creator_profile(conn: AsyncConnection, creator_id: str) -> CreatorProfile | None:
    """The stored profile of `creator_id`, or None when no `creators.updated` event was applied."""
    row = (await conn.execute(_SELECT, {"creator_id": creator_id})).first()
    if row is None:
        return None
    return CreatorProfile(
        creator_id=row.creator_id,
        birth_date=row.birth_date,
        country=row.country,
        followers=row.followers,
        video_views_30d=row.video_views_30d,
        posts_30d=row.posts_30d,
        in_good_standing=row.in_good_standing,
        identity_verified=row.identity_verified,
        payout_account_ref=row.payout_account_ref,
        occurred_at=row.occurred_at,
        event_id=row.event_id,
        updated_at=row.updated_at,
    )
