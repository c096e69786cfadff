"""Converting Diamonds to money: exact integers, rounding down, the remainder kept."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from services.cashout.conversion import convert
from services.rates.fx import FxRate, decimal_text

USD = FxRate("USD", Fraction(1))
EUR = FxRate("EUR", Fraction(92, 100))
JPY = FxRate("JPY", Fraction(150))


def test_two_thousand_diamonds_pay_ten_dollars_with_nothing_left() -> None:
    conversion = convert("DIAMOND", 2_000_000, 200, None, USD)
    assert (conversion.payout_amount, conversion.redeemed_amount, conversion.rounding_amount) == (
        1_000,
        2_000_000,
        0,
    )


def test_a_diamond_worth_half_a_cent_goes_to_rounding() -> None:
    conversion = convert("DIAMOND", 2_001_000, 200, None, USD)
    assert (conversion.payout_amount, conversion.redeemed_amount, conversion.rounding_amount) == (
        1_000,
        2_000_000,
        1_000,
    )


def test_fx_applies_the_payout_currencys_scale() -> None:
    assert convert("DIAMOND", 2_000_000, 200, None, JPY).payout_amount == 1_500
    assert convert("DIAMOND", 2_000_000, 200, None, EUR).payout_amount == 920


def test_a_currency_balance_pays_out_in_its_own_currency() -> None:
    conversion = convert("EUR", 5_000, 200, EUR, EUR)
    assert (conversion.payout_amount, conversion.rounding_amount) == (5_000, 0)


def test_fx_rates_print_as_exact_decimals() -> None:
    assert decimal_text(Fraction(92, 100)) == "0.92"
    assert decimal_text(Fraction(150)) == "150"
    assert decimal_text(Fraction(1, 3)) == "0.333333333333333333"


@given(
    milli_diamonds=st.integers(1, 10**12),
    diamonds_per_usd=st.integers(1, 10_000),
    fx=st.fractions(
        min_value=Fraction(1, 1000), max_value=Fraction(100_000), max_denominator=10**6
    ),
    scale=st.sampled_from([("JPY", 0), ("USD", 2), ("KWD", 3)]),
)
def test_conversion_never_creates_value_and_keeps_the_remainder_below_one_minor_unit(
    milli_diamonds: int, diamonds_per_usd: int, fx: Fraction, scale: tuple[str, int]
) -> None:
    currency, digits = scale
    conversion = convert("DIAMOND", milli_diamonds, diamonds_per_usd, None, FxRate(currency, fx))
    per_milli = Fraction(1, 1000 * diamonds_per_usd) * fx * 10**digits
    assert conversion.redeemed_amount + conversion.rounding_amount == milli_diamonds
    assert conversion.payout_amount <= milli_diamonds * per_milli
    assert conversion.redeemed_amount * per_milli >= conversion.payout_amount
    assert conversion.rounding_amount * per_milli < 1
    assert conversion.redeemed_amount * per_milli - conversion.payout_amount < per_milli
    assert conversion.payout_amount == int(milli_diamonds * per_milli)


# The minor-unit scales of the assets the test draws (the currencies' from ISO 4217), and the
# FX rates it draws.
SCALES = {"DIAMOND": 3, "JPY": 0, "USD": 2, "EUR": 2, "KWD": 3}
RATES = st.fractions(
    min_value=Fraction(1, 1000), max_value=Fraction(100_000), max_denominator=10**6
)


def _by_the_definition(
    asset: str, amount: int, diamonds_per_usd: int, source_fx: FxRate, payout_fx: FxRate
) -> tuple[Fraction, int, int, int]:
    """The formula of `services.cashout.conversion`, in fractions: what `convert` must give."""
    if asset == "DIAMOND":
        usd = Fraction(amount, 1000 * diamonds_per_usd)
    else:
        usd = Fraction(amount, 10 ** SCALES[asset]) / source_fx.units_per_usd
    per_unit = usd / amount * payout_fx.units_per_usd * 10 ** SCALES[payout_fx.currency]
    payout = math.floor(amount * per_unit)
    redeemed = min(amount, math.ceil(payout / per_unit))
    return usd, payout, redeemed, amount - redeemed


@given(
    asset=st.sampled_from(sorted(SCALES)),
    amount=st.integers(1, 10**12),
    diamonds_per_usd=st.integers(1, 10_000),
    source_rate=RATES,
    payout=st.sampled_from(["JPY", "USD", "KWD"]),
    payout_rate=RATES,
)
def test_conversion_gives_what_the_formula_gives_in_fractions(
    asset: str,
    amount: int,
    diamonds_per_usd: int,
    source_rate: Fraction,
    payout: str,
    payout_rate: Fraction,
) -> None:
    source_fx, payout_fx = FxRate(asset, source_rate), FxRate(payout, payout_rate)
    conversion = convert(asset, amount, diamonds_per_usd, source_fx, payout_fx)
    assert (
        conversion.usd_value,
        conversion.payout_amount,
        conversion.redeemed_amount,
        conversion.rounding_amount,
    ) == _by_the_definition(asset, amount, diamonds_per_usd, source_fx, payout_fx)
