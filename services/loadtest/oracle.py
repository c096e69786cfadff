"""The contract's rules and defaults, re-derived for the load test's expected end state.

This is an independent oracle: it imports nothing of the ledger, the ingestion or the cash-out
code, so that a load test compares the ledger with what the contract says rather than with the
ledger's own reading of it. `tests/test_loadgen.py` checks that the two agree.

- Diamonds: `MILLI_DIAMONDS_PER_COIN` per coin of a gift; 200 diamonds = 1 USD.
- Cash-outs: eligibility (the Creator Next defaults, `first_failed_rule`), a payout account, the
  payout currency, the minimum (10 USD), the daily limit (1,000 USD per creator per UTC day) and
  the available balance (`cashout_value` gives what a request holds and pays).
- The books (docs/accounting.md): what the stream's cash-outs, all paid, leave in the platform's
  accounts (`cashout_platform_movements`): nothing payable, the money out of cash at the bank.

The rules and rates this assumes are written into the expected state as `assumptions()`; the load
test refuses to compare against a deployment configured otherwise.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

MILLI_DIAMONDS_PER_COIN = 500
MILLI_PER_DIAMOND = 1_000
DIAMONDS_PER_USD = 200
USD_MICROS = 1_000_000
CASHOUT_MINIMUM_USD_CENTS = 1_000
CASHOUT_DAILY_LIMIT_USD_CENTS = 100_000
FX_CURRENCIES = ("USD",)  # the only FX rate the migrations seed: 1 USD per USD
AGE_MIN_YEARS = 18
ENABLED_COUNTRIES = ("US", "GB", "DE", "FR", "IT", "ES")
COMING_SOON_COUNTRIES = ("CA", "AU")
FOLLOWER_MINIMUM_BY_COUNTRY = {"US": 10_000}
FOLLOWER_MINIMUM_DEFAULT = 10_000
VIDEO_VIEWS_30D_MIN = 1_000
POSTS_30D_MIN = 3
PROFILE_MAX_AGE_DAYS = 30


def assumptions() -> dict[str, Any]:
    """The rules and rates the expected state is derived from (the contract's defaults)."""
    return {
        "milli_diamonds_per_coin": MILLI_DIAMONDS_PER_COIN,
        "diamonds_per_usd": DIAMONDS_PER_USD,
        "fx_units_per_usd": {currency: "1" for currency in FX_CURRENCIES},
        "cashout_minimum_usd_cents": CASHOUT_MINIMUM_USD_CENTS,
        "cashout_daily_limit_usd_cents": CASHOUT_DAILY_LIMIT_USD_CENTS,
        "payout_rail_failure_rate": 0.0,
        "payout_rail_return_rate": 0.0,
        "eligibility": {
            "age_min_years": AGE_MIN_YEARS,
            "enabled_countries": list(ENABLED_COUNTRIES),
            "follower_minimum_by_country": dict(FOLLOWER_MINIMUM_BY_COUNTRY),
            "follower_minimum_default": FOLLOWER_MINIMUM_DEFAULT,
            "video_views_30d_min": VIDEO_VIEWS_30D_MIN,
            "posts_30d_min": POSTS_30D_MIN,
            "profile_max_age_days": PROFILE_MAX_AGE_DAYS,
        },
    }


def age_in_years(birth_date: date, today: date) -> int:
    """Whole years; a birthday counts from its month and day (29 February: from 1 March)."""
    return (
        today.year
        - birth_date.year
        - int((today.month, today.day) < (birth_date.month, birth_date.day))
    )


def age_day(moment: datetime) -> date:
    """The day the age rule judges a request made at `moment` on (README, "Cash-outs"): the
    date at UTC-12, where a day begins last."""
    return (moment.astimezone(UTC) - timedelta(hours=12)).date()


def first_failed_rule(
    profile: dict[str, Any] | None, today: date, profile_age: timedelta
) -> str | None:
    """The first Creator Next rule `profile` breaks, its age judged on `today` (`age_day`), or
    None: the contract's order. `profile_age` is how long before the request the profile is
    dated: its video views and posts of the last 30 days say nothing of the request's when it
    is more than `PROFILE_MAX_AGE_DAYS` days."""
    if profile is None:
        return "profile_known"
    if age_in_years(date.fromisoformat(profile["birth_date"]), today) < AGE_MIN_YEARS:
        return "age"
    country = profile["country"]
    if country not in ENABLED_COUNTRIES:
        return "country"
    minimum = FOLLOWER_MINIMUM_BY_COUNTRY.get(country, FOLLOWER_MINIMUM_DEFAULT)
    if profile["followers"] < minimum:
        return "followers"
    recent = profile_age <= timedelta(days=PROFILE_MAX_AGE_DAYS)
    if not recent or profile["video_views_30d"] < VIDEO_VIEWS_30D_MIN:
        return "video_views_30d"
    if profile["posts_30d"] < POSTS_30D_MIN:
        return "posts_30d"
    if not profile["in_good_standing"]:
        return "in_good_standing"
    if not profile["identity_verified"]:
        return "identity_verified"
    return None


def cashout_value(asset: str, amount: int) -> tuple[int, int, int]:
    """(source minor units held, USD micros, payout cents) of a request paid in USD.

    `amount` is whole diamonds for DIAMOND, cents for USD. 200 diamonds = 1 USD, rounded down to
    the cent; USD micros are exact for both (5,000 per diamond, 10,000 per cent)."""
    if asset == "DIAMOND":
        return amount * MILLI_PER_DIAMOND, amount * USD_MICROS // DIAMONDS_PER_USD, amount // 2
    assert asset == "USD", asset
    return amount, amount * (USD_MICROS // 100), amount


def cashout_platform_movements(totals: dict[str, int]) -> dict[str, int]:
    """What the stream's paid cash-outs move in the platform's accounts (credits minus debits,
    minor units), zero movements left out, from the generator's totals: a submitted cash-out
    makes its money payable, and the bank's `paid` settles the payable against cash at the bank;
    the Diamonds that bought whole cents are redeemed (2,000 milli-diamonds a cent), the rest go
    to rounding."""
    payout_cents = totals.get("cashouts_payout_usd_cents", 0)
    diamond_cents = payout_cents - totals.get("cashouts_paid_usd_minor", 0)
    redeemed = diamond_cents * MILLI_PER_DIAMOND * DIAMONDS_PER_USD // 100
    movements = {
        "platform:USD:payouts_payable": 0,
        "platform:USD:cash_at_bank": payout_cents,  # credited: the money left the bank
        "platform:USD:cashout_conversion": -diamond_cents,
        "platform:DIAMOND:diamonds_redeemed": redeemed,
        "platform:DIAMOND:rounding": totals.get("cashouts_paid_milli_diamonds", 0) - redeemed,
    }
    return {name: change for name, change in movements.items() if change}
