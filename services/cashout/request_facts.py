"""What the checks of a batch of cash-out requests read, one statement per kind for the whole
batch, where one request at a time read them once per request: which creators are frozen, their
profiles (`services.cashout.eligibility.creator_profiles`), the FX rates in force when the batch
is approved, and what each creator cashed out on each day.

Every read is on the caller's connection, inside the transaction that holds the creators' locks
(`services.runtime.creator_locks.lock_creators`), so what a creator cashed out cannot change
under it, nor whether the creator is frozen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from fractions import Fraction

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import CashoutRequested
from services.cashout.eligibility import creator_profiles
from services.cashout.profiles import CreatorProfile
from services.rates.fx import BASE_CURRENCY, BASE_RATE, FxRate

# The latest freeze row of each creator is its state (services/operator/freezes.py).
_FROZEN = text(
    """
    SELECT DISTINCT ON (creator_id) creator_id, frozen
    FROM creator_freezes WHERE creator_id = ANY(CAST(:creator_ids AS text[]))
    ORDER BY creator_id, id DESC
    """
)

# Per (currency, moment), the rate in force then, as `services.rates.fx.fx_in_force` reads it.
_FX_IN_FORCE = text(
    """
    SELECT w.position, r.n, r.d
    FROM unnest(CAST(:currencies AS text[]), CAST(:moments AS timestamptz[]))
         WITH ORDINALITY AS w(currency, moment, position)
    JOIN LATERAL (
        SELECT units_per_usd_numerator AS n, units_per_usd_denominator AS d
        FROM fx_rates
        WHERE currency = w.currency AND effective_from <= w.moment
        ORDER BY effective_from DESC LIMIT 1
    ) r ON true
    """
)

# Per (creator, UTC day), the USD value of the creator's cash-outs of that day that were not
# rejected, failed or returned, leaving out the cash-outs being checked: one probe of the index
# `cashouts_creator_day` per pair.
_SPENT = text(
    """
    SELECT w.creator_id, w.day, s.micros
    FROM unnest(CAST(:creator_ids AS text[]), CAST(:days AS date[])) AS w(creator_id, day)
    CROSS JOIN LATERAL (
        SELECT coalesce(sum(c.usd_value_micros), 0) AS micros
        FROM cashouts c
        WHERE c.creator_id = w.creator_id AND c.requested_on = w.day
          AND c.status NOT IN ('rejected', 'failed', 'returned')
          AND c.cashout_id <> ALL(CAST(:checked_ids AS text[]))
    ) s
    """
)


async def day_spent_micros(conn: AsyncConnection, creator_id: str, day: date) -> int:
    """The USD micros the creator's cash-outs of `day` (UTC) count against the daily limit:
    those not rejected, failed or returned. Correct only under the creator's lock."""
    row = (
        await conn.execute(_SPENT, {"creator_ids": [creator_id], "days": [day], "checked_ids": []})
    ).one()
    return int(row.micros)


def request_day(event: CashoutRequested) -> date:
    """The UTC day a request counts against for the daily limit."""
    return event.occurred_at.astimezone(UTC).date()


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the checks of a batch's requests need that does not change while the batch runs."""

    frozen: frozenset[str]
    profiles: dict[str, CreatorProfile]
    # The moment the batch is approved, and the FX rate of each payout currency in force then.
    approved_at: datetime
    fx_rates: dict[str, FxRate | None]

    def is_frozen(self, creator_id: str) -> bool:
        return creator_id in self.frozen

    def profile(self, creator_id: str) -> CreatorProfile | None:
        return self.profiles.get(creator_id)

    def fx_in_force(self, currency: str) -> FxRate | None:
        """The rate of `currency` in force when the batch is approved (None: no rate yet)."""
        return self.fx_rates[currency]


async def frozen_creators(conn: AsyncConnection, creator_ids: Iterable[str]) -> frozenset[str]:
    """Those of these creators whose latest freeze row freezes them."""
    wanted = sorted(set(creator_ids))
    if not wanted:
        return frozenset()
    rows = await conn.execute(_FROZEN, {"creator_ids": wanted})
    return frozenset(row.creator_id for row in rows if row.frozen)


async def fx_rates_in_force(
    conn: AsyncConnection, wanted: Iterable[tuple[str, datetime]]
) -> dict[tuple[str, datetime], FxRate | None]:
    """The rate of each currency in force at each moment (None: no rate yet)."""
    pairs = sorted(set(wanted))
    if not pairs:
        return {}
    rows = await conn.execute(
        _FX_IN_FORCE,
        {"currencies": [c for c, _ in pairs], "moments": [m for _, m in pairs]},
    )
    found: dict[tuple[str, datetime], FxRate | None] = dict.fromkeys(pairs)
    for row in rows:
        currency, moment = pairs[row.position - 1]
        found[currency, moment] = FxRate(currency, Fraction(row.n, row.d))
    for currency, moment in pairs:
        if currency == BASE_CURRENCY:  # 1, whatever an older version let into the table
            found[currency, moment] = BASE_RATE
    return found


async def read_request_facts(
    conn: AsyncConnection, events: Sequence[CashoutRequested], approved_at: datetime
) -> RequestFacts:
    """The freezes, profiles and FX rates (in force at `approved_at`) the checks of `events`
    read: three statements."""
    creator_ids = {event.creator_id for event in events}
    rates = await fx_rates_in_force(
        conn, ((event.payout_currency, approved_at) for event in events)
    )
    return RequestFacts(
        frozen=await frozen_creators(conn, creator_ids),
        profiles=await creator_profiles(conn, creator_ids),
        approved_at=approved_at,
        fx_rates={currency: rate for (currency, _), rate in rates.items()},
    )


async def spent_micros(
    conn: AsyncConnection, events: Sequence[CashoutRequested]
) -> dict[tuple[str, date], int]:
    """Per (creator, UTC day) of `events`, the USD micros the creator's other cash-outs of that
    day count against the daily limit. Correct only under the creators' locks."""
    pairs = sorted({(event.creator_id, request_day(event)) for event in events})
    if not pairs:
        return {}
    rows = await conn.execute(
        _SPENT,
        {
            "creator_ids": [c for c, _ in pairs],
            "days": [d for _, d in pairs],
            "checked_ids": [event.event_id for event in events],
        },
    )
    return {(row.creator_id, row.day): int(row.micros) for row in rows}
