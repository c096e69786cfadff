"""The trial balance as the console's Books page shows it: per asset, the rows of
`giftledger trial-balance` (services/trial_balance_text.py: each platform account, creators'
accounts summed per kind, each balance in its debit or credit column) grouped by accounting type
with a subtotal per type, the asset's totals, and under Diamonds what creators hold valued in money
at the rate card in force.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.chart import AccountType
from ledger.queries import TrialBalanceLine
from schemas.assets import DIAMOND
from services.rates.rate_cards import RateCard
from services.trial_balance_text import (
    TYPE_ORDER,
    VALUATION_CURRENCY,
    Row,
    asset_rows,
    creators_outstanding,
    outstanding_value_cents,
)


@dataclass(frozen=True, slots=True)
class TypeGroup:
    """The rows of one accounting type, and their debit and credit subtotals."""

    account_type: AccountType
    rows: tuple[Row, ...]
    debit_total: int
    credit_total: int


@dataclass(frozen=True, slots=True)
class Outstanding:
    """What creators hold in Diamonds (milli-diamonds), valued in money at a rate card."""

    milli_diamonds: int
    value_minor: int
    currency: str
    rate_card_version: int
    diamonds_per_unit: int


@dataclass(frozen=True, slots=True)
class AssetTrialBalance:
    asset: str
    groups: tuple[TypeGroup, ...]
    debit_total: int
    credit_total: int
    outstanding: Outstanding | None

    @property
    def balanced(self) -> bool:
        return self.debit_total == self.credit_total


def _group(account_type: AccountType, rows: Sequence[Row]) -> TypeGroup:
    return TypeGroup(
        account_type,
        tuple(rows),
        debit_total=sum(row.debit or 0 for row in rows),
        credit_total=sum(row.credit or 0 for row in rows),
    )


def asset_trial_balances(
    lines: Sequence[TrialBalanceLine], card: RateCard
) -> list[AssetTrialBalance]:
    """Every asset's trial balance, assets in name order, types in the printed order."""
    balances: list[AssetTrialBalance] = []
    for asset in sorted({line.asset for line in lines}):
        rows = asset_rows(lines, asset)
        groups = tuple(
            _group(account_type, [row for row in rows if row.account_type is account_type])
            for account_type in TYPE_ORDER
            if any(row.account_type is account_type for row in rows)
        )
        outstanding = None
        if asset == DIAMOND:
            milli = creators_outstanding(lines)
            outstanding = Outstanding(
                milli_diamonds=milli,
                value_minor=outstanding_value_cents(milli, card),
                currency=VALUATION_CURRENCY,
                rate_card_version=card.version,
                diamonds_per_unit=card.diamonds_per_usd,
            )
        balances.append(
            AssetTrialBalance(
                asset,
                groups,
                debit_total=sum(group.debit_total for group in groups),
                credit_total=sum(group.credit_total for group in groups),
                outstanding=outstanding,
            )
        )
    return balances
