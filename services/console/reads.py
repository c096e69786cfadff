"""The console's reads beyond `ledger.queries`, `services.api.queries` and the operator modules:
totals for the overview, lists with the console's filters, and who touched what. Every statement
takes its inputs as bound parameters and returns a bounded number of rows; the lists a page
cannot show whole (the operator actions, the frozen creators, a creator's cash-outs) come a page
at a time, with the cursor the next page starts from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final, Generic, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.chart import AccountKind
from ledger.model import TransferCode
from ledger.rollups import GIFT_COUNTS, day_split, raw_ranges, rolled_days
from schemas.assets import DIAMOND
from services.api.queries import gift_counts
from services.cashout.store import CashoutKey

LIST_ROW_COUNT_MAX: Final = 200
TOP_CREATOR_COUNT: Final = 10
TRANSITION_COUNT_MAX: Final = 5_000
DETAIL_CHARACTERS_MAX: Final = 4_000

Row = TypeVar("Row")
Cursor = TypeVar("Cursor")


@dataclass(frozen=True, slots=True)
class Page(Generic[Row, Cursor]):
    """At most a page of rows, and the cursor the next page starts from (None: none left)."""

    rows: list[Row]
    next_cursor: Cursor | None


def _page(rows: list[Row], count: int, cursor_of: Callable[[Row], Cursor]) -> Page[Row, Cursor]:
    """A page of `count` rows out of `rows`, read with one more: the cursor is the last row's
    when there was one more."""
    if len(rows) > count:
        return Page(rows[:count], cursor_of(rows[count - 1]))
    return Page(rows, None)


async def creator_diamond_liability(conn: AsyncConnection) -> tuple[int, int]:
    """What the platform owes creators in milli-diamonds: posted (available and held together)
    and pending (held by open cash-outs), over every creator's Diamond accounts."""
    row = (
        await conn.execute(
            text(
                "SELECT coalesce(sum(credits_posted - debits_posted), 0)::bigint AS posted,"
                " coalesce(sum(debits_pending), 0)::bigint AS pending"
                " FROM accounts WHERE creator_id IS NOT NULL AND asset = :asset"
            ),
            {"asset": DIAMOND},
        )
    ).one()
    return int(row.posted), int(row.pending)


async def top_creators(conn: AsyncConnection) -> list[tuple[str, int]]:
    """The creators with the most Diamonds available (milli-diamonds), most first."""
    rows = await conn.execute(
        text(
            "SELECT creator_id, credits_posted - debits_posted - debits_pending AS available"
            " FROM accounts WHERE creator_id IS NOT NULL AND asset = :asset AND kind = :kind"
            " ORDER BY available DESC, creator_id LIMIT :limit"
        ),
        {
            "asset": DIAMOND,
            "kind": AccountKind.CREATOR_DIAMONDS_AVAILABLE.value,
            "limit": TOP_CREATOR_COUNT,
        },
    )
    return [(row.creator_id, int(row.available)) for row in rows]


@dataclass(frozen=True, slots=True)
class StatusCount:
    status: str
    count: int
    milli_diamonds: int


async def cashouts_by_status(conn: AsyncConnection) -> list[StatusCount]:
    """Every cash-out by state: how many, and the Diamonds of those that cash out Diamonds."""
    rows = await conn.execute(
        text(
            "SELECT status, count(*) AS row_count,"
            " coalesce(sum(amount) FILTER (WHERE asset = :asset), 0)::bigint AS milli_diamonds"
            " FROM cashouts GROUP BY status ORDER BY status"
        ),
        {"asset": DIAMOND},
    )
    return [StatusCount(row.status, int(row.row_count), int(row.milli_diamonds)) for row in rows]


@dataclass(frozen=True, slots=True)
class DeadLetterCount:
    topic: str
    error: str
    count: int


async def dead_letters_by_reason(conn: AsyncConnection, topic_prefix: str) -> list[DeadLetterCount]:
    rows = await conn.execute(
        text(
            "SELECT topic, error, count(*) AS row_count FROM dead_letters"
            " WHERE topic_prefix = :prefix GROUP BY topic, error ORDER BY topic, error"
            " LIMIT :limit"
        ),
        {"prefix": topic_prefix, "limit": LIST_ROW_COUNT_MAX},
    )
    return [DeadLetterCount(row.topic, row.error, int(row.row_count)) for row in rows]


# Cash-outs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CashoutRow:
    cashout_id: str
    creator_id: str
    asset: str
    amount: int
    payout_currency: str
    payout_amount: int | None
    status: str
    rejected_rule: str | None
    failure_code: str | None
    occurred_at: datetime
    updated_at: datetime


_CASHOUT_COLUMNS: Final = (
    "cashout_id, creator_id, asset, amount, payout_currency, payout_amount, status,"
    " rejected_rule, failure_code, occurred_at, updated_at"
)


async def find_cashouts(
    conn: AsyncConnection,
    *,
    status: str | None,
    creator_id: str | None,
    from_time: datetime | None,
    to_time: datetime | None,
    stale_after_s: float | None = None,
) -> list[CashoutRow]:
    """Cash-outs requested in `[from_time, to_time)`, newest first, by state and creator; with
    `stale_after_s`, only holds the bank has not answered for longer than that."""
    rows = await conn.execute(
        text(
            f"SELECT {_CASHOUT_COLUMNS} FROM cashouts"  # noqa: S608 (constant columns)
            " WHERE (CAST(:status AS text) IS NULL OR status = :status)"
            " AND (CAST(:creator AS text) IS NULL OR creator_id = :creator)"
            " AND (CAST(:from_time AS timestamptz) IS NULL OR occurred_at >= :from_time)"
            " AND (CAST(:to_time AS timestamptz) IS NULL OR occurred_at < :to_time)"
            " AND (CAST(:stale_s AS double precision) IS NULL"
            "      OR (status IN ('held', 'submitted')"
            "          AND updated_at < clock_timestamp() - make_interval(secs => :stale_s)))"
            " ORDER BY occurred_at DESC, cashout_id LIMIT :limit"
        ),
        {
            "status": status,
            "creator": creator_id,
            "from_time": from_time,
            "to_time": to_time,
            "stale_s": stale_after_s,
            "limit": LIST_ROW_COUNT_MAX,
        },
    )
    return [CashoutRow(**row._mapping) for row in rows]


async def creator_cashouts(
    conn: AsyncConnection,
    creator_id: str,
    *,
    after: CashoutKey | None = None,
    count: int = LIST_ROW_COUNT_MAX,
) -> Page[CashoutRow, CashoutKey]:
    """A creator's cash-outs, newest first (`occurred_at` descending, then by id), from just
    after the cash-out `after` names (the newest when None), `count` a page. The cursor is the
    last row's place in that order, so paging visits every cash-out once, however many share an
    instant, and a cash-out requested while paging shows on the first page, not twice."""
    assert 1 <= count <= LIST_ROW_COUNT_MAX, count
    rows = await conn.execute(
        text(
            f"SELECT {_CASHOUT_COLUMNS} FROM cashouts"  # noqa: S608 (constant columns)
            " WHERE creator_id = :creator"
            " AND (CAST(:after_at AS timestamptz) IS NULL"
            "      OR (occurred_at <= :after_at"
            "          AND (occurred_at < :after_at OR cashout_id > CAST(:after_id AS text))))"
            " ORDER BY occurred_at DESC, cashout_id LIMIT :limit"
        ),
        {
            "creator": creator_id,
            "after_at": None if after is None else after.occurred_at,
            "after_id": None if after is None else after.cashout_id,
            "limit": count + 1,  # one more: whether a next page exists
        },
    )
    found = [CashoutRow(**row._mapping) for row in rows]
    return _page(found, count, lambda row: CashoutKey(row.occurred_at, row.cashout_id))


@dataclass(frozen=True, slots=True)
class Transition:
    cashout_id: str
    status: str
    at: datetime
    detail: str


async def transitions_of(conn: AsyncConnection, cashout_ids: Sequence[str]) -> list[Transition]:
    """The transitions of these cash-outs, each cash-out's in order."""
    rows = await conn.execute(
        text(
            "SELECT cashout_id, status, at, detail FROM cashout_transitions"
            " WHERE cashout_id = ANY(CAST(:ids AS text[])) ORDER BY cashout_id, seq LIMIT :limit"
        ),
        {"ids": list(cashout_ids), "limit": TRANSITION_COUNT_MAX},
    )
    return [Transition(row.cashout_id, row.status, row.at, row.detail) for row in rows]


# Operator actions ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActionRow:
    id: int
    actor: str
    role: str
    action: str
    target: str
    reason: str
    ticket: str | None
    details: str
    recorded_at: datetime


_ACTION_COLUMNS: Final = (
    "id, actor, role, action, target, reason, ticket, left(details::text, :detail_max) AS details,"
    " recorded_at"
)


async def actions_on(
    conn: AsyncConnection,
    targets: Sequence[str],
    *,
    before_id: int | None = None,
    count: int = LIST_ROW_COUNT_MAX,
) -> Page[ActionRow, int]:
    """The operator actions on any of `targets` (a creator, their cash-outs), newest first, from
    just before `before_id` (the newest when None), `count` a page."""
    assert 1 <= count <= LIST_ROW_COUNT_MAX, count
    rows = await conn.execute(
        text(
            f"SELECT {_ACTION_COLUMNS} FROM operator_actions"  # noqa: S608 (constant columns)
            " WHERE target = ANY(CAST(:targets AS text[]))"
            " AND (CAST(:before AS bigint) IS NULL OR id < :before)"
            " ORDER BY id DESC LIMIT :limit"
        ),
        {
            "targets": list(targets),
            "before": before_id,
            "detail_max": DETAIL_CHARACTERS_MAX,
            "limit": count + 1,
        },
    )
    return _page([ActionRow(**row._mapping) for row in rows], count, lambda action: action.id)


async def actions_on_creator(
    conn: AsyncConnection,
    creator_id: str,
    *,
    before_id: int | None = None,
    count: int = LIST_ROW_COUNT_MAX,
) -> Page[ActionRow, int]:
    """The operator actions on a creator and on every cash-out of theirs, newest first, from just
    before `before_id` (the newest when None), `count` a page. Each target (the creator, each of
    their cash-outs) gives at most a page from its own entries of the log's index by target, so
    the read is bounded by the creator's cash-outs, not by the log."""
    assert 1 <= count <= LIST_ROW_COUNT_MAX, count
    rows = await conn.execute(
        text(
            f"SELECT {_ACTION_COLUMNS} FROM ("  # noqa: S608 (constant columns)
            " SELECT CAST(:creator AS text) AS target_id"
            " UNION ALL SELECT cashout_id FROM cashouts WHERE creator_id = :creator) targets"
            " CROSS JOIN LATERAL ("
            "  SELECT id, actor, role, action, target, reason, ticket, details, recorded_at"
            "  FROM operator_actions WHERE target = targets.target_id"
            "  AND (CAST(:before AS bigint) IS NULL OR id < :before)"
            "  ORDER BY id DESC LIMIT :limit) actions"
            " ORDER BY id DESC LIMIT :limit"
        ),
        {
            "creator": creator_id,
            "before": before_id,
            "detail_max": DETAIL_CHARACTERS_MAX,
            "limit": count + 1,
        },
    )
    return _page([ActionRow(**row._mapping) for row in rows], count, lambda action: action.id)


async def actions_before(
    conn: AsyncConnection, before_id: int | None, count: int
) -> Page[ActionRow, int]:
    """The log, newest first, from just before `before_id` (the newest when None), `count` a
    page."""
    assert 1 <= count <= LIST_ROW_COUNT_MAX, count
    rows = await conn.execute(
        text(
            f"SELECT {_ACTION_COLUMNS} FROM operator_actions"  # noqa: S608 (constant columns)
            " WHERE (CAST(:before AS bigint) IS NULL OR id < :before)"
            " ORDER BY id DESC LIMIT :limit"
        ),
        {"before": before_id, "detail_max": DETAIL_CHARACTERS_MAX, "limit": count + 1},
    )
    return _page([ActionRow(**row._mapping) for row in rows], count, lambda action: action.id)


@dataclass(frozen=True, slots=True)
class FrozenCreator:
    creator_id: str
    action_id: int
    since: datetime


async def frozen_creators(
    conn: AsyncConnection, *, before_action_id: int | None = None, count: int = LIST_ROW_COUNT_MAX
) -> Page[FrozenCreator, int]:
    """Creators whose latest freeze row freezes them, most recently frozen first (by the freeze's
    action: the log's ids ascend in the order actions are recorded), from just before the freeze
    `before_action_id` (the most recent when None), `count` a page."""
    assert 1 <= count <= LIST_ROW_COUNT_MAX, count
    rows = await conn.execute(
        text(
            "SELECT creator_id, action_id, recorded_at FROM ("
            " SELECT DISTINCT ON (creator_id) creator_id, frozen, action_id, recorded_at"
            " FROM creator_freezes ORDER BY creator_id, id DESC) latest"
            " WHERE frozen AND (CAST(:before AS bigint) IS NULL OR action_id < :before)"
            " ORDER BY action_id DESC LIMIT :limit"
        ),
        {"before": before_action_id, "limit": count + 1},
    )
    found = [FrozenCreator(row.creator_id, row.action_id, row.recorded_at) for row in rows]
    return _page(found, count, lambda frozen: frozen.action_id)


# Gifts for the overview ---------------------------------------------------------------------

OVERVIEW_GIFT_GROUP_COUNT_MAX: Final = 10_000


@dataclass(frozen=True, slots=True)
class OverviewGifts:
    """The overview's gifts, each list as `services.api.queries.gifts_report` gives it: today's
    and the month's per surface, and the month's per UTC day."""

    today: list[dict[str, Any]]
    month: list[dict[str, Any]]
    by_day: list[dict[str, Any]]


def _summed(rows: Sequence[Any], name: str) -> list[dict[str, Any]]:
    """Rows of (day, surface, gift_events, counted_events, counted_gifts, coins, milli_diamonds)
    summed per `name`, in its order (None last, as PostgreSQL sorts NULL), as `gifts_report`
    gives them."""
    totals: dict[str | None, tuple[int, int, int, int, int]] = {}
    for row in rows:
        events, counted, gifts, coins, milli = totals.get(getattr(row, name), (0, 0, 0, 0, 0))
        totals[getattr(row, name)] = (
            events + row.gift_events,
            counted + row.counted_events,
            gifts + row.counted_gifts,
            coins + row.coins,
            milli + row.milli_diamonds,
        )
    ordered = sorted(totals.items(), key=lambda item: (item[0] is None, item[0] or ""))
    return [
        {
            name: key,
            **gift_counts(events, counted, gifts),
            "coins": coins,
            "milli_diamonds": milli,
        }
        for key, (events, counted, gifts, coins, milli) in ordered
    ]


async def overview_gifts(
    conn: AsyncConnection, month_start: datetime, today: date, end: datetime
) -> OverviewGifts:
    """Gifts (transfers with code `gift_diamonds`) booked in `[month_start, end)`, read once per
    UTC day and surface and summed here: the same figures as `gifts_report` by surface for
    `today` and for the month, and by day for the month, for one read of the month's gifts
    instead of three. The days rolled up (`ledger.rollups`) are read from their totals, the rest
    of the range from the transfers."""
    split = await day_split(conn, month_start, end)
    rows = (
        await conn.execute(
            text(
                "SELECT to_char(day, 'YYYY-MM-DD') AS day, surface, gift_events,"  # noqa: S608 (constant filters)
                " counted_events, counted_gifts, coins, milli_diamonds"
                f" FROM day_gift_totals WHERE {rolled_days()}"
                " UNION ALL"
                " SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'),"
                f" metadata ->> 'surface', {GIFT_COUNTS},"
                " coalesce(sum(CAST(metadata ->> 'coins' AS bigint)), 0)::bigint,"
                " sum(amount)::bigint"
                f" FROM transfers WHERE code = :code AND {raw_ranges()}"
                " GROUP BY 1, 2 LIMIT :limit"
            ),
            {
                **split.parameters(),
                "code": int(TransferCode.GIFT_DIAMONDS),
                "limit": OVERVIEW_GIFT_GROUP_COUNT_MAX,
            },
        )
    ).all()
    today_text = today.isoformat()
    return OverviewGifts(
        today=_summed([row for row in rows if row.day == today_text], "surface"),
        month=_summed(rows, "surface"),
        by_day=_summed(rows, "day"),
    )
