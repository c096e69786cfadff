"""What a cash-out is worth and pays: exact integer arithmetic (fractions), rounding down to the
payout currency's minor unit: `payout = floor(milli_diamonds / 1000 / diamonds_per_usd * fx *
10^scale)`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from schemas.assets import ASSET_SCALES, DIAMOND
from services.rates.fx import FxRate

MILLI_PER_DIAMOND = 1_000
USD_MICROS = 1_000_000


@dataclass(frozen=True, slots=True)
class Conversion:
    """What a cash-out is worth and pays, all in integers (minor units)."""

    usd_value: Fraction
    payout_amount: int
    redeemed_amount: int  # of the source asset: the part that buys payout_amount exactly
    rounding_amount: int  # of the source asset: worth less than one payout minor unit


def convert(
    asset: str, amount: int, diamonds_per_usd: int, source_fx: FxRate | None, payout_fx: FxRate
) -> Conversion:
    """Value `amount` minor units of `asset` in USD and in the payout currency, rounding down."""
    if asset == DIAMOND:
        usd = Fraction(amount, MILLI_PER_DIAMOND * diamonds_per_usd)
    else:
        assert source_fx is not None
        usd = Fraction(amount, 10 ** ASSET_SCALES[asset]) / source_fx.units_per_usd
    payout_per_source_unit = (
        usd / amount * payout_fx.units_per_usd * 10 ** ASSET_SCALES[payout_fx.currency]
    )
    payout = math.floor(amount * payout_per_source_unit)
    redeemed = min(amount, math.ceil(payout / payout_per_source_unit))
    return Conversion(usd, payout, redeemed, amount - redeemed)
