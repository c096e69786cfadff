"""The trial balance as finance reads it, printed by `giftledger trial-balance` and the demo.

Per asset: the accounts grouped by accounting type (asset, liability, revenue, expense,
clearing), each posted balance in the debit or the credit column, creators' accounts summed into
one line per kind, and a total line whose debits equal its credits. Amounts carry thousands
separators. Under Diamonds, what creators hold is valued in money at the rate card in force:
`outstanding 841,432.000 DIAMOND ≈ 4,207.16 USD`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ledger.chart import AccountType, NormalSide, kind_type
from ledger.queries import TrialBalanceLine
from schemas.assets import ASSET_SCALES, DIAMOND
from services.rates.rate_cards import MILLI_DIAMONDS_PER_DIAMOND, RateCard

TYPE_ORDER: tuple[AccountType, ...] = (
    AccountType.ASSET,
    AccountType.LIABILITY,
    AccountType.REVENUE,
    AccountType.EXPENSE,
    AccountType.CLEARING,
)
VALUATION_CURRENCY = "USD"
USD_CENTS_PER_USD = 100


@dataclass(frozen=True, slots=True)
class Row:
    """One line of an asset's trial balance: an account, or a kind of creators' accounts."""

    label: str
    account_type: AccountType
    normal_side: NormalSide
    balance: int  # credits minus debits, minor units

    @property
    def debit(self) -> int | None:
        """The balance in the debit column, or None when it stands on the credit side (a zero
        balance stands on the normal side)."""
        if self.balance < 0 or (self.balance == 0 and self.normal_side is NormalSide.DEBIT):
            return -self.balance
        return None

    @property
    def credit(self) -> int | None:
        return None if self.debit is not None else self.balance


def grouped_amount(amount_minor: int, asset: str) -> str:
    """`84143200, "DIAMOND"` → `84,143.200`: the major unit with thousands separators, exact."""
    scale = ASSET_SCALES[asset]
    sign = "-" if amount_minor < 0 else ""
    whole, fraction = divmod(abs(amount_minor), 10**scale)
    if scale == 0:
        return f"{sign}{whole:,}"
    return f"{sign}{whole:,}.{fraction:0{scale}d}"


def asset_rows(lines: Sequence[TrialBalanceLine], asset: str) -> list[Row]:
    """The asset's rows: each platform account, and one summed row per kind of creators'
    accounts (`creator:*:DIAMOND:available (3 accounts)`), ordered by type, then label. The lines
    may be one per account or creators' already summed per kind (`account_count`)."""
    rows: list[Row] = []
    creators: dict[str, tuple[int, int]] = {}  # kind -> (balance, accounts)
    suffixes: dict[str, str] = {}
    for line in lines:
        if line.asset != asset:
            continue
        if line.account_name.startswith("creator:"):
            balance, count = creators.get(line.kind, (0, 0))
            creators[line.kind] = (balance + line.balance, count + line.account_count)
            suffixes[line.kind] = line.account_name.rsplit(":", 1)[1]
            continue
        kind = kind_type(line.kind)
        rows.append(Row(line.account_name, kind.account_type, kind.normal_side, line.balance))
    for kind_name, (balance, count) in creators.items():
        kind = kind_type(kind_name)
        noun = "account" if count == 1 else "accounts"
        label = f"creator:*:{asset}:{suffixes[kind_name]} ({count:,} {noun})"
        rows.append(Row(label, kind.account_type, kind.normal_side, balance))
    return sorted(rows, key=lambda row: (TYPE_ORDER.index(row.account_type), row.label))


def creators_outstanding(lines: Sequence[TrialBalanceLine]) -> int:
    """Milli-diamonds creators hold, posted: what the platform owes them in Diamonds."""
    return sum(
        line.balance
        for line in lines
        if line.asset == DIAMOND and line.account_name.startswith("creator:")
    )


def outstanding_value_cents(milli_diamonds: int, card: RateCard) -> int:
    """Diamonds valued in USD cents at the card's cash-out rate, rounded down (toward zero)."""
    divisor = MILLI_DIAMONDS_PER_DIAMOND * card.diamonds_per_usd
    cents = abs(milli_diamonds) * USD_CENTS_PER_USD // divisor
    return cents if milli_diamonds >= 0 else -cents


def _cell(amount_minor: int | None, asset: str) -> str:
    return "" if amount_minor is None else grouped_amount(amount_minor, asset)


def render_trial_balance(
    lines: Sequence[TrialBalanceLine], card: RateCard, as_of: datetime | None
) -> list[str]:
    """The printed trial balance (`card`: the rate card in force at `as_of`, or now)."""
    moment = "now" if as_of is None else as_of.isoformat()
    title = f"Trial balance, posted as of {moment}: each account's balance on its side"
    if not lines:
        return [title, "  no posted transfers"]
    # (label, debit, credit), or a line printed as it is (None, text)
    cells: list[tuple[str, str, str] | tuple[None, str]] = [("", "debit", "credit")]
    for asset in sorted({line.asset for line in lines}):
        rows = asset_rows(lines, asset)
        cells.append((None, f"  {asset}"))
        for row in rows:
            label = f"    {row.account_type.value:<9}  {row.label}"
            cells.append((label, _cell(row.debit, asset), _cell(row.credit, asset)))
        debits = sum(row.debit or 0 for row in rows)
        credits = sum(row.credit or 0 for row in rows)
        total = (grouped_amount(debits, asset), grouped_amount(credits, asset))
        cells.append((f"    total {asset}", *total))
        if asset == DIAMOND:
            milli = creators_outstanding(lines)
            value = grouped_amount(outstanding_value_cents(milli, card), VALUATION_CURRENCY)
            cells.append(
                (
                    None,
                    f"    outstanding {grouped_amount(milli, DIAMOND)} DIAMOND ≈ {value}"
                    f" {VALUATION_CURRENCY} at rate card {card.version}"
                    f" ({card.diamonds_per_usd:,} diamonds per {VALUATION_CURRENCY})",
                )
            )
    tabular = [cell for cell in cells if cell[0] is not None]
    widths = [max(len(str(cell[column])) for cell in tabular) for column in range(3)]
    out = [title]
    for cell in cells:
        if cell[0] is None:
            out.append(cell[1])
            continue
        label, debit, credit = cell
        line = f"{label:<{widths[0]}}  {debit:>{widths[1]}}  {credit:>{widths[2]}}"
        out.append(line.rstrip())
    return out
