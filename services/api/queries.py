"""The finance API's reads beyond `ledger.queries`: what an input produced, cash-out history, and
the gifts, cash-outs and money reports. Every statement takes its inputs as bound parameters.

Report ranges are half-open, `[from, to)`, and every report counts by booking time: gifts and
money by when the ledger committed their transfers (`created_at`), cash-outs by when the ledger
recorded the request (their first transition, written in the transaction that decided it), or
by when they were requested (`occurred_at`) when asked (`services.api.report_window`). Amounts
are integers in the asset's minor unit, each with the asset's scale.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.model import TransferCode, TransferFlags
from ledger.rollups import GIFT_COUNTS, day_split, raw_ranges, rolled_days
from schemas.reports import GIFT_GROUPINGS, GiftGrouping
from services.api.report_window import CASHOUT_CLOCKS, CashoutClock

EVENT_TRANSFER_COUNT_MAX: Final = 1_000
DEAD_LETTER_COUNT_MAX: Final = 100
CASHOUT_TRANSITION_COUNT_MAX: Final = 1_000
REPORT_GROUP_COUNT_MAX: Final = 100_000


class TooManyGroupsError(ValueError):
    """A gifts report would hold more than `REPORT_GROUP_COUNT_MAX` groups: refused whole,
    never cut short."""


MONEY_CODES: Final = (
    TransferCode.TIP,
    TransferCode.TIP_FAN_FEE,
    TransferCode.TIP_PROCESSOR_FEE,
    TransferCode.FUND_REWARD,
    TransferCode.MARKETPLACE_PAYMENT,
    TransferCode.MARKETPLACE_FEE,
)


def _flag_names(flags: int) -> list[str]:
    return [
        str(flag.name).lower()
        for flag in TransferFlags
        if flag is not TransferFlags.NONE and flags & flag
    ]


def _json_value(value: object) -> Any:
    """A jsonb column as the driver hands it over (text without a registered codec)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


async def applied_events(
    conn: AsyncConnection, event_id: str, topics: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The `applied_events` rows of `event_id` in `topics` (one primary-key probe per topic)."""
    rows = await conn.execute(
        text(
            """
            SELECT topic, creator_id, occurred_at, applied_at, kafka_partition, kafka_offset
            FROM applied_events
            WHERE topic = ANY(CAST(:topics AS text[])) AND event_id = :event_id
            ORDER BY topic
            """
        ),
        {"topics": list(topics), "event_id": event_id},
    )
    return [
        {
            "topic": row.topic,
            "creator_id": row.creator_id,
            "occurred_at": row.occurred_at.isoformat(),
            "applied_at": row.applied_at.isoformat(),
            "source": {"partition": row.kafka_partition, "offset": row.kafka_offset},
        }
        for row in rows
    ]


async def event_transfers(conn: AsyncConnection, event_id: str, topic: str) -> list[dict[str, Any]]:
    """Every transfer posted for the event `event_id` of `topic`, in commit order.

    Event ids are unique per topic only, and a transfer records its event's id, not its topic:
    its code names the topic (`transfer_code_topics`, as in the `transfer_details` view), so a
    transfer of another topic's event with the same id is left out.

    `transfers` has no index on `event_id`: this scans the transfers (every partition), which is
    fine for a look-up by a person, not for a program polling it."""
    rows = await conn.execute(
        text(
            """
            SELECT t.id, t.seq, t.created_at, c.name AS code, t.asset, s.scale, t.amount,
                   t.flags, t.pending_id, t.rate_card_version, t.metadata,
                   d.name AS debit_account, k.name AS credit_account
            FROM transfers t
            JOIN transfer_codes c ON c.code = t.code
            JOIN assets s ON s.code = t.asset
            JOIN accounts d ON d.id = t.debit_account_id
            JOIN accounts k ON k.id = t.credit_account_id
            JOIN transfer_code_topics ct ON ct.code = t.code AND ct.topic = :topic
            WHERE t.event_id = :event_id
            ORDER BY t.seq
            LIMIT :limit
            """
        ),
        {"event_id": event_id, "topic": topic, "limit": EVENT_TRANSFER_COUNT_MAX},
    )
    return [
        {
            "transfer_id": str(row.id),
            "seq": row.seq,
            "created_at": row.created_at.isoformat(),
            "code": row.code,
            "asset": row.asset,
            "scale": row.scale,
            "amount": row.amount,
            "debit_account": row.debit_account,
            "credit_account": row.credit_account,
            "flags": _flag_names(row.flags),
            "pending_id": None if row.pending_id is None else str(row.pending_id),
            "rate_card_version": row.rate_card_version,
            "metadata": _json_value(row.metadata),
        }
        for row in rows
    ]


async def event_dead_letters(
    conn: AsyncConnection, topic_prefix: str, event_id: str, topic: str | None
) -> list[dict[str, Any]]:
    """This deployment's (`topic_prefix`) dead letters that named `event_id` (of `topic`, when
    given), oldest first."""
    rows = await conn.execute(
        text(
            """
            SELECT topic, kafka_partition, kafka_offset, error, detail, recorded_at
            FROM dead_letters
            WHERE event_id = :event_id AND topic_prefix = :prefix
              AND (CAST(:topic AS text) IS NULL OR topic = :topic)
            ORDER BY recorded_at, id
            LIMIT :limit
            """
        ),
        {
            "event_id": event_id,
            "prefix": topic_prefix,
            "topic": topic,
            "limit": DEAD_LETTER_COUNT_MAX,
        },
    )
    return [
        {
            "topic": row.topic,
            "error": row.error,
            "detail": row.detail,
            "source": {"partition": row.kafka_partition, "offset": row.kafka_offset},
            "recorded_at": row.recorded_at.isoformat(),
        }
        for row in rows
    ]


async def cashout_transitions(conn: AsyncConnection, cashout_id: str) -> list[dict[str, Any]]:
    """Every state the cash-out went through, with its time and detail, in order."""
    rows = await conn.execute(
        text(
            "SELECT status, at, detail FROM cashout_transitions WHERE cashout_id = :id"
            " ORDER BY seq LIMIT :limit"
        ),
        {"id": cashout_id, "limit": CASHOUT_TRANSITION_COUNT_MAX},
    )
    return [{"status": row.status, "at": row.at.isoformat(), "detail": row.detail} for row in rows]


# A gift's group per grouping, from a transfer `t` and its credited account `a`.
_GIFT_GROUP_KEY = """
    CASE CAST(:group_by AS text)
        WHEN 'surface' THEN t.metadata ->> 'surface'
        WHEN 'gift' THEN t.metadata ->> 'gift_id'
        WHEN 'creator' THEN a.creator_id
        ELSE to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')
    END"""

# Gifts per creator or gift: the transfers of the range.
_GIFTS_FROM_TRANSFERS = f"""
    SELECT {_GIFT_GROUP_KEY} AS group_key,
           count(*) AS gift_events,
           count(t.metadata -> 'count') AS counted_events,
           coalesce(sum(CAST(t.metadata ->> 'count' AS bigint)), 0)::bigint AS counted_gifts,
           coalesce(sum(CAST(t.metadata ->> 'coins' AS bigint)), 0)::bigint AS coins,
           sum(t.amount)::bigint AS milli_diamonds
    FROM transfers t
    JOIN accounts a ON a.id = t.credit_account_id
    WHERE t.code = :code AND t.created_at >= :raw_start AND t.created_at < :raw_end
    GROUP BY 1
    ORDER BY 1
    LIMIT :limit
    """  # noqa: S608 (constant expression)

# Gifts per surface or day: the rolled days' totals per day and surface (`ledger.rollups`) and
# the transfers of the rest of the range, summed per group.
_GIFTS_FROM_DAY_TOTALS = f"""
    SELECT group_key, sum(gift_events)::bigint AS gift_events,
           sum(counted_events)::bigint AS counted_events,
           sum(counted_gifts)::bigint AS counted_gifts, sum(coins)::bigint AS coins,
           sum(milli_diamonds)::bigint AS milli_diamonds
    FROM (
        SELECT CASE CAST(:group_by AS text)
                   WHEN 'surface' THEN surface
                   ELSE to_char(day, 'YYYY-MM-DD')
               END AS group_key,
               gift_events, counted_events, counted_gifts, coins, milli_diamonds
        FROM day_gift_totals WHERE {rolled_days()}
        UNION ALL
        SELECT CASE CAST(:group_by AS text)
                   WHEN 'surface' THEN metadata ->> 'surface'
                   ELSE to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')
               END,
               {GIFT_COUNTS},
               coalesce(sum(CAST(metadata ->> 'coins' AS bigint)), 0)::bigint,
               sum(amount)::bigint
        FROM transfers
        WHERE code = :code AND {raw_ranges()}
        GROUP BY 1
    ) parts
    GROUP BY 1
    ORDER BY 1
    LIMIT :limit
    """  # noqa: S608 (constant filters)

# The groupings the day totals hold (one row per UTC day and surface).
_DAY_TOTAL_GROUPINGS: Final[tuple[GiftGrouping, ...]] = ("surface", "day")


def gift_counts(gift_events: int, counted_events: int, counted_gifts: int) -> dict[str, Any]:
    """A group's gift events and the gifts they sent: each event's `count`, which the ledger
    records from migration 0042 on. An event booked before has none, and nothing tells it: a
    group holding one has no gift count (None), and says how many such events it holds."""
    return {
        "gift_events": gift_events,
        "gift_count": counted_gifts if counted_events == gift_events else None,
        "gift_events_without_count": gift_events - counted_events,
    }


def uncounted_events_text(event_count: int) -> str:
    """Why a gift count is not given: `event_count` gift events booked without their count."""
    booked = "1 gift event was" if event_count == 1 else f"{event_count:,} gift events were"
    return (
        f"{booked} booked before giftledger recorded a gift event's count;"
        " each sent one gift or more"
    )


async def gifts_report(
    conn: AsyncConnection, from_time: datetime, to_time: datetime, group_by: GiftGrouping
) -> list[dict[str, Any]]:
    """Gift events (transfers with code `gift_diamonds`) booked in the range, per group: how
    many, the gifts they sent (`gift_counts`), their coins and the milli-diamonds they credited;
    `TooManyGroupsError` past `REPORT_GROUP_COUNT_MAX` groups. Reversals are not netted out. A
    day is the UTC day of the booking. Per surface or day, the days rolled up (`ledger.rollups`)
    are read from their totals and the rest of the range from the transfers: the same figures
    either way."""
    assert group_by in GIFT_GROUPINGS, group_by
    values: dict[str, Any] = {
        "group_by": group_by,
        "code": int(TransferCode.GIFT_DIAMONDS),
        "limit": REPORT_GROUP_COUNT_MAX + 1,  # one more, to tell a full report from a cut one
    }
    if group_by in _DAY_TOTAL_GROUPINGS:
        split = await day_split(conn, from_time, to_time)
        rows = await conn.execute(text(_GIFTS_FROM_DAY_TOTALS), {**values, **split.parameters()})
    else:
        rows = await conn.execute(
            text(_GIFTS_FROM_TRANSFERS), {**values, "raw_start": from_time, "raw_end": to_time}
        )
    groups = [
        {
            group_by: row.group_key,
            **gift_counts(row.gift_events, row.counted_events, row.counted_gifts),
            "coins": row.coins,
            "milli_diamonds": row.milli_diamonds,
        }
        for row in rows
    ]
    if len(groups) > REPORT_GROUP_COUNT_MAX:
        raise TooManyGroupsError(
            f"more than {REPORT_GROUP_COUNT_MAX:,} groups by {group_by} in the range: ask for a"
            " shorter range, or group by surface or day"
        )
    return groups


# The cash-outs a range holds, by clock: booked (a transition in the range, through the index on
# `at`, that the primary key shows to be its cash-out's first) or requested.
_CASHOUTS_IN_RANGE: Final[dict[CashoutClock, str]] = {
    "booked": """
        SELECT t.cashout_id FROM cashout_transitions t
        WHERE t.at >= :from_time AND t.at < :to_time
          AND t.seq = (SELECT min(f.seq) FROM cashout_transitions f
                       WHERE f.cashout_id = t.cashout_id)
    """,
    "requested": """
        SELECT r.cashout_id FROM cashouts r
        WHERE r.occurred_at >= :from_time AND r.occurred_at < :to_time
    """,
}
assert set(_CASHOUTS_IN_RANGE) == set(CASHOUT_CLOCKS)


async def cashouts_report(
    conn: AsyncConnection, from_time: datetime, to_time: datetime, clock: CashoutClock
) -> list[dict[str, Any]]:
    """Cash-outs booked (or, with `clock="requested"`, requested) in the range, per status now:
    how many, and their amounts per source asset and payout currency. The payout amount (what
    was or would be paid) and the USD value sum the priced cash-outs, `priced_count` of them: a
    request refused before it was priced (frozen, an eligibility rule, no payout account, the
    payout currency, no FX rate) has neither."""
    in_range = _CASHOUTS_IN_RANGE[clock]
    rows = await conn.execute(
        text(
            f"""
            SELECT c.status, c.asset, s.scale, c.payout_currency, p.scale AS payout_scale,
                   count(*) AS cashout_count, sum(c.amount)::bigint AS amount,
                   count(*) FILTER (WHERE c.fx_numerator IS NOT NULL) AS priced_count,
                   coalesce(sum(c.payout_amount), 0)::bigint AS payout_amount,
                   coalesce(sum(c.usd_value_micros) FILTER (WHERE c.fx_numerator IS NOT NULL),
                            0)::bigint AS usd_value_micros
            FROM cashouts c
            JOIN assets s ON s.code = c.asset
            JOIN assets p ON p.code = c.payout_currency
            WHERE c.cashout_id IN ({in_range})
            GROUP BY c.status, c.asset, s.scale, c.payout_currency, p.scale
            ORDER BY c.status, c.asset, c.payout_currency
            LIMIT :limit
            """  # noqa: S608 (one of two fixed statements)
        ),
        {"from_time": from_time, "to_time": to_time, "limit": REPORT_GROUP_COUNT_MAX},
    )
    statuses: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = statuses.setdefault(row.status, {"status": row.status, "count": 0, "lines": []})
        entry["count"] += row.cashout_count
        entry["lines"].append(
            {
                "asset": row.asset,
                "scale": row.scale,
                "amount": row.amount,
                "payout_currency": row.payout_currency,
                "payout_scale": row.payout_scale,
                "payout_amount": row.payout_amount,
                "usd_value_micros": row.usd_value_micros,
                "count": row.cashout_count,
                "priced_count": row.priced_count,
            }
        )
    return list(statuses.values())


async def money_report(
    conn: AsyncConnection, from_time: datetime, to_time: datetime
) -> list[dict[str, Any]]:
    """Tips, their fees, fund rewards and marketplace payments and fees booked in the range, per
    currency and code."""
    rows = await conn.execute(
        text(
            """
            SELECT t.asset, s.scale, c.name AS code, count(*) AS transfer_count,
                   sum(t.amount)::bigint AS amount
            FROM transfers t
            JOIN transfer_codes c ON c.code = t.code
            JOIN assets s ON s.code = t.asset
            WHERE t.code = ANY(CAST(:codes AS smallint[]))
              AND t.created_at >= :from_time AND t.created_at < :to_time
            GROUP BY t.asset, s.scale, c.name
            ORDER BY t.asset, c.name
            LIMIT :limit
            """
        ),
        {
            "codes": [int(code) for code in MONEY_CODES],
            "from_time": from_time,
            "to_time": to_time,
            "limit": REPORT_GROUP_COUNT_MAX,
        },
    )
    currencies: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = currencies.setdefault(
            row.asset, {"currency": row.asset, "scale": row.scale, "totals": []}
        )
        entry["totals"].append(
            {"code": row.code, "amount": row.amount, "transfer_count": row.transfer_count}
        )
    return list(currencies.values())
