"""The chart of accounts: readable account names for creators and for the platform.

Names are stable keys (`creator:c42:DIAMOND:available`, `platform:USD:payouts_payable`); each
account belongs to one asset and has a kind that says what it is for. Balance rules are flags.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from ledger.model import AccountFlags

PLATFORM_SPECS_CACHED_MAX = 1_024
# Every gift names its creator's Diamonds account; creators' gifts follow a long tail, so the
# most recent few thousand specs answer nearly every gift (about 2.5 MB at this bound).
CREATOR_DIAMOND_SPECS_CACHED_MAX = 8_192


class AccountKind(enum.StrEnum):
    CREATOR_DIAMONDS_AVAILABLE = "creator_diamonds_available"
    CREATOR_DIAMONDS_HELD = "creator_diamonds_held"
    CREATOR_WALLET = "creator_wallet"
    DIAMOND_ISSUANCE = "diamond_issuance"
    DIAMONDS_REDEEMED = "diamonds_redeemed"
    COINS_SPENT = "coins_spent"
    COIN_GIFT_REVENUE = "coin_gift_revenue"
    TIPS_CLEARING = "tips_clearing"
    TIP_FEES = "tip_fees"
    PROCESSOR_FEES = "processor_fees"
    PAYOUTS_PAYABLE = "payouts_payable"
    CASHOUT_CONVERSION = "cashout_conversion"
    CREATOR_FUND_EXPENSE = "creator_fund_expense"
    MARKETPLACE_CLEARING = "marketplace_clearing"
    MARKETPLACE_FEES = "marketplace_fees"
    ROUNDING = "rounding"
    OPERATOR_ADJUSTMENTS = "operator_adjustments"
    SYNTHETIC = "synthetic"


@dataclass(frozen=True, slots=True)
class AccountSpec:
    """Everything needed to create an account on first use."""

    name: str
    asset: str
    kind: AccountKind
    creator_id: str | None = None
    flags: AccountFlags = AccountFlags.NONE


@functools.lru_cache(maxsize=CREATOR_DIAMOND_SPECS_CACHED_MAX)
def creator_diamonds_available(creator_id: str) -> AccountSpec:
    """Diamonds the creator has earned and not cashed out. May go negative after a reversal."""
    return AccountSpec(
        f"creator:{creator_id}:DIAMOND:available",
        "DIAMOND",
        AccountKind.CREATOR_DIAMONDS_AVAILABLE,
        creator_id,
    )


def creator_diamonds_held(creator_id: str) -> AccountSpec:
    """Diamonds set aside for a cash-out in flight; never negative."""
    return AccountSpec(
        f"creator:{creator_id}:DIAMOND:held",
        "DIAMOND",
        AccountKind.CREATOR_DIAMONDS_HELD,
        creator_id,
        AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
    )


def creator_wallet(creator_id: str, currency: str) -> AccountSpec:
    """Real money owed to the creator in one currency (tips, fund rewards, marketplace deals)."""
    return AccountSpec(
        f"creator:{creator_id}:{currency}:wallet",
        currency,
        AccountKind.CREATOR_WALLET,
        creator_id,
    )


@functools.lru_cache(maxsize=PLATFORM_SPECS_CACHED_MAX)
def platform(kind: AccountKind, asset: str) -> AccountSpec:
    """A platform account of the given kind in the given asset; no balance rule. There are a
    few dozen and every event names one or two, so each spec is built once."""
    return AccountSpec(f"platform:{asset}:{kind.value}", asset, kind)
