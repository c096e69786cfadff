"""Assets the ledger knows and the scale of their minor unit.

Every amount in giftledger is an integer count of an asset's minor unit: a `USD` amount of 1050
is 10.50 USD, a `DIAMOND` amount of 12500 is 12.500 diamonds (milli-diamonds), a `COIN` amount is
whole coins. The scale is the number of decimal places between the minor and the major unit.
"""

from __future__ import annotations

COIN = "COIN"
DIAMOND = "DIAMOND"

ASSET_SCALES: dict[str, int] = {
    COIN: 0,
    DIAMOND: 3,
    # ISO 4217 currencies a creator may be paid in, with their ISO 4217 minor-unit exponent.
    "AED": 2,
    "ARS": 2,
    "AUD": 2,
    "BHD": 3,
    "BRL": 2,
    "CAD": 2,
    "CHF": 2,
    "CLP": 0,
    "CNY": 2,
    "COP": 2,
    "CZK": 2,
    "DKK": 2,
    "EGP": 2,
    "EUR": 2,
    "GBP": 2,
    "HKD": 2,
    "HUF": 2,
    "IDR": 2,
    "ILS": 2,
    "INR": 2,
    "ISK": 0,
    "JOD": 3,
    "JPY": 0,
    "KES": 2,
    "KRW": 0,
    "KWD": 3,
    "MXN": 2,
    "MYR": 2,
    "NGN": 2,
    "NOK": 2,
    "NZD": 2,
    "OMR": 3,
    "PEN": 2,
    "PHP": 2,
    "PKR": 2,
    "PLN": 2,
    "RON": 2,
    "SAR": 2,
    "SEK": 2,
    "SGD": 2,
    "THB": 2,
    "TRY": 2,
    "TWD": 2,
    "USD": 2,
    "VND": 0,
    "ZAR": 2,
}

CURRENCIES: frozenset[str] = frozenset(ASSET_SCALES) - {COIN, DIAMOND}


def format_amount(amount_minor: int, asset: str) -> str:
    """Render an amount in minor units as a decimal in the major unit: `-5, "USD"` → `-0.05 USD`.

    Integer arithmetic only, so the text is exact for any amount.
    """
    if asset not in ASSET_SCALES:
        raise ValueError(f"unknown asset {asset!r}")
    scale = ASSET_SCALES[asset]
    sign = "-" if amount_minor < 0 else ""
    whole, fraction = divmod(abs(amount_minor), 10**scale)
    if scale == 0:
        return f"{sign}{whole} {asset}"
    return f"{sign}{whole}.{fraction:0{scale}d} {asset}"
