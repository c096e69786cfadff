"""The documents the CLI prints and the finance API serves: one shape for both.

`giftledger balance --json` and `GET /v1/creators/{creator_id}/balances` print the same
document, as do `giftledger trial-balance --json` and `GET /v1/reports/trial-balance`, and the
statement CSV has the same columns from `giftledger statement --csv` and from
`GET /v1/accounts/{account}/statement` with `Accept: text/csv` (and from the console's
download). Amounts are integers in the asset's minor unit, with the asset's scale: in the CSV,
on every line (`asset`, `scale`), so that a line read alone says what its amounts count.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ledger.chart import kind_type
from ledger.queries import AccountBalance, StatementLine, TrialBalanceLine
from services.api.spreadsheet import spreadsheet_text

STATEMENT_CSV_COLUMNS = (
    "seq",
    "created_at",
    "transfer_id",
    "code",
    "event_id",
    "counterparty",
    "asset",
    "scale",
    "debit",
    "credit",
    "pending",
    "balance_after",
    "pending_after",
)


def creator_balances_document(
    creator_id: str, accounts: Sequence[AccountBalance]
) -> dict[str, Any]:
    """`GET /v1/creators/{creator_id}/balances`: per asset, the sums over the creator's accounts
    of that asset of `available` and `pending`, in minor units, with the asset's scale."""
    by_asset: dict[str, dict[str, Any]] = {}
    for account in sorted(accounts, key=lambda account: account.asset):
        line = by_asset.setdefault(
            account.asset,
            {"asset": account.asset, "available": 0, "pending": 0, "scale": account.scale},
        )
        line["available"] += account.available
        line["pending"] += account.pending
    return {"creator_id": creator_id, "balances": list(by_asset.values())}


def statement_csv_row(account: AccountBalance, line: StatementLine) -> list[object]:
    """One line of `account`'s statement as the values of `STATEMENT_CSV_COLUMNS`."""
    return [
        line.seq,
        line.created_at.isoformat(),
        line.transfer_id,
        line.code,
        spreadsheet_text(line.event_id or ""),
        spreadsheet_text(line.counterparty),
        account.asset,
        account.scale,
        line.debit,
        line.credit,
        "true" if line.pending else "false",
        line.balance_after,
        line.pending_after,
    ]


def trial_balance_document(
    lines: Sequence[TrialBalanceLine], as_of: datetime | None
) -> dict[str, Any]:
    """Per asset: each account's posted debits, credits and balance, its accounting type and
    normal side, and the asset's totals (whose balance is zero in a sound ledger). Amounts in
    minor units."""
    assets: dict[str, dict[str, Any]] = {}
    for line in lines:
        entry = assets.setdefault(
            line.asset,
            {
                "asset": line.asset,
                "scale": line.scale,
                "accounts": [],
                "total": {"debits": 0, "credits": 0, "balance": 0},
            },
        )
        kind = kind_type(line.kind)
        entry["accounts"].append(
            {
                "account": line.account_name,
                "kind": line.kind,
                "debits": line.debits,
                "credits": line.credits,
                "balance": line.balance,
                "type": kind.account_type.value,
                "normal_side": kind.normal_side.value,
            }
        )
        entry["total"]["debits"] += line.debits
        entry["total"]["credits"] += line.credits
        entry["total"]["balance"] += line.balance
    return {
        "as_of": None if as_of is None else as_of.isoformat(),
        "assets": list(assets.values()),
    }
