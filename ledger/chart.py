"""The chart of accounts: readable account names for creators and for the platform.

Names are stable keys (`creator:c42:DIAMOND:available`, `platform:USD:payouts_payable`); each
account belongs to one asset and has a kind that says what it is for. Balance rules are flags.

Every kind has an accounting type and a normal side (`KIND_TYPES`, the one place; migration 0017
writes the same into the `account_kinds` table, and a test holds the two equal). What each type
means here, and the journal entries of every event, are in docs/accounting.md.
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
    CASH_AT_BANK = "cash_at_bank"
    SYNTHETIC = "synthetic"


class AccountType(enum.StrEnum):
    """What an account is to the platform's books."""

    ASSET = "asset"
    LIABILITY = "liability"
    REVENUE = "revenue"
    EXPENSE = "expense"
    # Holds one side of something until its other side is booked; nets to what is in flight.
    CLEARING = "clearing"


class NormalSide(enum.StrEnum):
    """The side on which an account's balance normally stands."""

    DEBIT = "debit"
    CREDIT = "credit"


@dataclass(frozen=True, slots=True)
class KindType:
    account_type: AccountType
    normal_side: NormalSide


_ASSET = KindType(AccountType.ASSET, NormalSide.DEBIT)
_LIABILITY = KindType(AccountType.LIABILITY, NormalSide.CREDIT)
_REVENUE = KindType(AccountType.REVENUE, NormalSide.CREDIT)
_EXPENSE = KindType(AccountType.EXPENSE, NormalSide.DEBIT)
_CLEARING_DEBIT = KindType(AccountType.CLEARING, NormalSide.DEBIT)
_CLEARING_CREDIT = KindType(AccountType.CLEARING, NormalSide.CREDIT)

# The accounting type and normal side of every kind (docs/accounting.md says why each).
KIND_TYPES: dict[AccountKind, KindType] = {
    AccountKind.CREATOR_DIAMONDS_AVAILABLE: _LIABILITY,
    AccountKind.CREATOR_DIAMONDS_HELD: _LIABILITY,
    AccountKind.CREATOR_WALLET: _LIABILITY,
    AccountKind.DIAMOND_ISSUANCE: _EXPENSE,
    AccountKind.DIAMONDS_REDEEMED: _CLEARING_CREDIT,
    AccountKind.COINS_SPENT: _LIABILITY,
    AccountKind.COIN_GIFT_REVENUE: _REVENUE,
    AccountKind.TIPS_CLEARING: _CLEARING_DEBIT,
    AccountKind.TIP_FEES: _REVENUE,
    AccountKind.PROCESSOR_FEES: _EXPENSE,
    AccountKind.PAYOUTS_PAYABLE: _LIABILITY,
    AccountKind.CASHOUT_CONVERSION: _CLEARING_DEBIT,
    AccountKind.CREATOR_FUND_EXPENSE: _EXPENSE,
    AccountKind.MARKETPLACE_CLEARING: _CLEARING_DEBIT,
    AccountKind.MARKETPLACE_FEES: _REVENUE,
    AccountKind.ROUNDING: _REVENUE,
    AccountKind.OPERATOR_ADJUSTMENTS: _EXPENSE,
    AccountKind.CASH_AT_BANK: _ASSET,
    AccountKind.SYNTHETIC: _CLEARING_DEBIT,
}
assert set(KIND_TYPES) == set(AccountKind), "every account kind has a type"


def kind_type(kind: str) -> KindType:
    """The type and normal side of an account kind (its `accounts.kind` text)."""
    return KIND_TYPES[AccountKind(kind)]


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
