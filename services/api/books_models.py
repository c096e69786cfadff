"""The answers of the books routes (services/api/routes/books.py): reconciliations and the
journal. They describe the documents of services/reconcile/store.py and `journal_document` as
they are: the same field names, in the same order, with the same nullability; `giftledger
reconcile --json` prints the reconciliation documents too.

Amounts are integers in minor units (the asset's `scale` says where the point goes); days are
`YYYY-MM-DD`; hashes are lowercase hex.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from services.api.models import DateText, Document, Range, TimestampText

ItemKindName = Literal[
    "missing_in_ledger",
    "missing_in_bank",
    "amount_or_currency_differs",
    "status_differs",
    "matched",
]
HexText = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class KindCounts(Document):
    """Cash-outs of the reconciliation in each class."""

    missing_in_ledger: int
    missing_in_bank: int
    amount_or_currency_differs: int
    status_differs: int
    matched: int


class ReconciliationFileDocument(Document):
    name: str
    settlement_day: DateText
    sha256: HexText
    line_count: int


class ReconciliationSummary(Document):
    """A reconciliation: the days it covers (a day without a file is a missing day), its files,
    and how many cash-outs fell in each class; `break_count` counts all but `matched`."""

    id: int
    reconciled_at: TimestampText
    first_day: DateText
    last_day: DateText
    missing_days: list[DateText]
    line_count: int
    item_count: int
    break_count: int
    kinds: KindCounts
    content_sha256: HexText
    files: list[ReconciliationFileDocument]


class ReconciliationItemDocument(Document):
    """One cash-out: its class, why, and what each side says (`bank_*` from the files' first
    line for it, `ledger_*` from the cash-out and the bank results the ledger booked)."""

    item_no: int
    cashout_id: str
    kind: ItemKindName
    detail: str
    provider_reference: str | None
    bank_statuses: list[str]
    bank_amount: int | None
    bank_currency: str | None
    bank_value_date: DateText | None
    ledger_status: str | None
    ledger_statuses: list[str]
    ledger_amount: int | None
    ledger_currency: str | None
    ledger_value_date: DateText | None


class ReconciliationListDocument(Document):
    reconciliations: list[ReconciliationSummary]
    next_cursor: int | None = Field(description="The next page's `cursor`; null on the last page.")


class ReconciliationDocument(ReconciliationSummary):
    items: list[ReconciliationItemDocument]
    next_cursor: int | None = Field(description="The next page's `cursor`; null on the last page.")


class PeriodCloseDocument(Document):
    """The period's close: its hash, the close before's, the head of the transfers' hash chain
    it was hashed with (`chain_link_id` null: the chain was empty), and who closed it."""

    id: int
    closed_at: TimestampText
    closed_by: str | None = Field(
        description="Who closed the period (`giftledger close --as NAME`, else OPERATOR_NAME); "
        "null for a close made before the ledger kept the name (migration 0031)."
    )
    account_count: int
    balances_sha256: HexText
    chain_link_id: int | None
    chain_hash: HexText
    previous_hash: HexText
    hash: HexText


class JournalAssetDocument(Document):
    """The period's posted debits and credits in one asset: equal in a sound ledger."""

    asset: str
    scale: int
    debits: int
    credits: int


class JournalLineDocument(Document):
    """One day, account and transfer code: posted debits and credits, and the account's balance
    (credits minus debits) at the start and at the end of the day, the same on each line of the
    account and day (the day's codes together take the one to the other)."""

    line_no: int = Field(
        description="The line's place in the period's journal as read for its page: on an open "
        "month a line added before the cursor moves the numbers of later pages."
    )
    day: DateText
    account: str
    asset: str
    scale: int
    code: str
    debits: int
    credits: int
    opening: int
    closing: int


class JournalDocument(Range):
    period: str
    closed: bool
    close: PeriodCloseDocument | None
    assets: list[JournalAssetDocument]
    lines: list[JournalLineDocument]
    next_cursor: str | None = Field(description="The next page's `cursor`; null on the last page.")
