"""FX rates: units of a currency per 1 USD, effective-dated like rate cards, added by finance for
future moments only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.assets import CURRENCIES
from schemas.events import OCCURRED_AT_MAX

FX_DECIMAL_PLACES = 18
# Rates are units of a currency per 1 USD, so USD's is 1, always (the migrations seed it; a
# version of another value that an older giftledger let in is ignored: `BASE_RATE`).
BASE_CURRENCY = "USD"
# The columns keeping a rate's numerator and denominator are bigint.
FX_TERM_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class FxRate:
    currency: str
    units_per_usd: Fraction


BASE_RATE = FxRate(BASE_CURRENCY, Fraction(1))


async def fx_in_force(conn: AsyncConnection, currency: str, moment: datetime) -> FxRate | None:
    if currency == BASE_CURRENCY:
        return BASE_RATE
    row = (
        await conn.execute(
            text(
                "SELECT units_per_usd_numerator AS n, units_per_usd_denominator AS d"
                " FROM fx_rates WHERE currency = :currency AND effective_from <= :moment"
                " ORDER BY effective_from DESC LIMIT 1"
            ),
            {"currency": currency, "moment": moment},
        )
    ).first()
    return None if row is None else FxRate(currency, Fraction(row.n, row.d))


def decimal_text(value: Fraction) -> str:
    """A positive fraction as a decimal string, exact when it terminates, else truncated."""
    whole, remainder = divmod(value.numerator, value.denominator)
    digits = []
    for _ in range(FX_DECIMAL_PLACES):
        if remainder == 0:
            break
        digit, remainder = divmod(remainder * 10, value.denominator)
        digits.append(str(digit))
    return f"{whole}.{''.join(digits)}" if digits else str(whole)


@dataclass(frozen=True, slots=True)
class FxVersion:
    currency: str
    effective_from: datetime | None  # None: in force since the beginning of time
    units_per_usd: Fraction
    created_by: str | None  # None: added before migration 0031, which kept no name


async def list_fx_rates(conn: AsyncConnection) -> list[FxVersion]:
    """Every FX version, by currency then start."""
    rows = await conn.execute(
        text(
            "SELECT currency,"
            " CASE WHEN isfinite(effective_from) THEN effective_from END AS effective_from,"
            " units_per_usd_numerator AS n, units_per_usd_denominator AS d, created_by"
            " FROM fx_rates ORDER BY currency, fx_rates.effective_from"
        )
    )
    return [
        FxVersion(row.currency, row.effective_from, Fraction(row.n, row.d), row.created_by)
        for row in rows
    ]


async def add_fx_rate(
    conn: AsyncConnection,
    currency: str,
    units_per_usd: Fraction,
    effective_from: datetime,
    *,
    created_by: str,
) -> None:
    """Add a rate, recording who added it; like rate cards, it must take effect in the future,
    never rewrite the past. A value the table could not keep is refused here, with what to do
    (`ValueError`), rather than by the database."""
    if currency not in CURRENCIES:
        raise ValueError(f"unknown currency {currency!r}: not an ISO 4217 code giftledger pays in")
    if currency == BASE_CURRENCY:
        raise ValueError(f"{BASE_CURRENCY} is 1 per {BASE_CURRENCY} by definition: it has no rate")
    if units_per_usd <= 0:
        raise ValueError("units per USD must be positive")
    if max(units_per_usd.numerator, units_per_usd.denominator) > FX_TERM_MAX:
        raise ValueError(
            f"units per USD {decimal_text(units_per_usd)} is too large or has too many digits:"
            f" as a fraction, its numerator and denominator must each be at most {FX_TERM_MAX}"
        )
    if effective_from > OCCURRED_AT_MAX:
        raise ValueError(
            f"effective_from must be at most {OCCURRED_AT_MAX.isoformat()}, the latest moment"
            " an event may carry"
        )
    now = (await conn.execute(text("SELECT now()"))).scalar_one()
    if effective_from <= now:
        raise ValueError(f"effective_from must be in the future (now is {now.isoformat()})")
    taken = (
        await conn.execute(
            text("SELECT 1 FROM fx_rates WHERE currency = :c AND effective_from = :at"),
            {"c": currency, "at": effective_from},
        )
    ).first()
    if taken is not None:
        raise ValueError(
            f"{currency} has a rate taking effect at {effective_from.isoformat()} already:"
            " a rate is never changed, add one at another moment"
        )
    await conn.execute(
        text(
            "INSERT INTO fx_rates (currency, effective_from, units_per_usd_numerator,"
            " units_per_usd_denominator, created_by) VALUES (:c, :at, :n, :d, :by)"
        ),
        {
            "c": currency,
            "at": effective_from,
            "n": units_per_usd.numerator,
            "d": units_per_usd.denominator,
            "by": created_by,
        },
    )
