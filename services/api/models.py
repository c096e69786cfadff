"""The finance API's answers, one pydantic model per document, for `/openapi.json` and for the
check of each answer on its way out.

They describe the documents of services/api/documents.py and services/api/queries.py,
`EligibilityReport.to_document` and `cashout_document` as they are: the same field names, in the
same order (the order of the JSON written), with the same nullability. Amounts are integers in
the asset's minor unit; timestamps are the RFC 3339 text those functions write. Every model
refuses a field it does not name, so a document and its model cannot drift apart unnoticed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import CashoutStatus, CashoutUpdated
from schemas.reports import GiftGrouping
from schemas.topics import ConsumedTopic
from services.api.report_window import CashoutClock

TimestampText = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
DateText = Annotated[str, Field(json_schema_extra={"format": "date"})]
UuidText = Annotated[str, Field(json_schema_extra={"format": "uuid"})]


class Document(BaseModel):
    """An answer as the API writes it: exact JSON types, no field beyond those named."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ErrorDocument(Document):
    """An error other than 422: what went wrong."""

    detail: str


class RequestProblem(Document):
    """One problem with a request: where (`["query", "to"]`, `["path", "creator_id"]`, or `[]`
    for the request as a whole), what, and its kind (`missing`, `int_parsing`, `value_error`...)."""

    loc: list[str | int]
    msg: str
    type: str


class InvalidRequestDocument(Document):
    """Every 422: the list of problems found (the shape of FastAPI's `HTTPValidationError`)."""

    detail: list[RequestProblem] = Field(min_length=1)


# Service ------------------------------------------------------------------------------------


class HealthDocument(Document):
    status: Literal["ok", "unavailable"]


# Creators -----------------------------------------------------------------------------------


class AssetBalance(Document):
    asset: str
    available: int
    pending: int
    scale: int


class CreatorBalancesDocument(Document):
    """Per asset, the sums over the creator's accounts of that asset."""

    creator_id: str
    balances: list[AssetBalance]


class RuleResultDocument(Document):
    rule: str
    passed: bool
    seen: str
    required: str


class EligibilityDocument(Document):
    """Every Creator Next rule, in order, with the value seen and what it requires."""

    creator_id: str
    eligible: bool
    rules: list[RuleResultDocument]


# Statements ---------------------------------------------------------------------------------


class StatementLineDocument(Document):
    seq: int
    created_at: TimestampText
    transfer_id: UuidText
    code: str
    event_id: str | None
    counterparty: str
    debit: int
    credit: int
    pending: bool = Field(
        description="True for a line that moves only pending amounts: a pending transfer (a "
        "hold), or the release of one (a void, listed on the other side of the hold, or the "
        "first of a post's two lines); its debit or credit is in `pending_after`, not in "
        "`balance_after`."
    )
    balance_after: int = Field(
        description="The account's posted balance after the line, credits minus debits."
    )
    pending_after: int = Field(
        description="The account's pending amounts after the line (the holds not yet posted, "
        "voided or expired), credits minus debits: a hold debiting the account makes it "
        "negative."
    )


class StatementDocument(Document):
    """One page of an account's statement; `next_cursor` is null on the last page."""

    account: str
    asset: str
    scale: int
    lines: list[StatementLineDocument]
    next_cursor: int | None


# Events -------------------------------------------------------------------------------------


class KafkaSource(Document):
    partition: int
    offset: int


class AppliedEventDocument(Document):
    topic: ConsumedTopic
    creator_id: str | None
    occurred_at: TimestampText
    applied_at: TimestampText
    source: KafkaSource


class EventTransferDocument(Document):
    transfer_id: UuidText
    seq: int
    created_at: TimestampText
    code: str
    asset: str
    scale: int
    amount: int
    debit_account: str
    credit_account: str
    flags: list[str]
    pending_id: UuidText | None
    rate_card_version: int | None
    metadata: dict[str, Any] | None


class DeadLetterDocument(Document):
    topic: str
    error: str
    detail: str
    source: KafkaSource
    recorded_at: TimestampText


class DeadLetterEntry(Document):
    """A dead letter of the list: its id (what a re-drive names), source topic (without the
    deployment's prefix), partition and offset, event id when one could be read, error and
    detail (at most 4,000 characters), when it was recorded and, once re-driven, when and by
    which operator action."""

    id: int
    topic: str
    source: KafkaSource
    event_id: str | None
    error: str
    detail: str
    recorded_at: TimestampText
    redriven_at: TimestampText | None
    redrive_action_id: int | None


class DeadLetterListDocument(Document):
    """A page of dead letters, newest first; `next_cursor` is the next page's `cursor` (null on
    the last page)."""

    dead_letters: list[DeadLetterEntry]
    next_cursor: int | None


class EventDocument(Document):
    """What an input event produced: `applied` is null and `transfers` empty unless applied."""

    event_id: str
    status: Literal["applied", "dead_lettered"]
    applied: AppliedEventDocument | None
    transfers: list[EventTransferDocument]
    dead_letters: list[DeadLetterDocument]


# Cash-outs ----------------------------------------------------------------------------------


class CashoutDocument(CashoutUpdated):
    """A cash-out as the `cashouts.updated` document: `event_id` and `occurred_at` are those of
    its current state's event, written now."""

    # The contract's model, read from the API's own JSON (its timestamps are text here).
    model_config = ConfigDict(strict=False)


class CashoutTransition(Document):
    status: CashoutStatus
    at: TimestampText
    detail: str


class CashoutHistoryDocument(CashoutDocument):
    """A cash-out with every state it went through, in order."""

    transitions: list[CashoutTransition]


class CashoutListDocument(Document):
    """A page of cash-outs, newest first; `next_cursor` is the next page's `cursor` (null on the
    last page)."""

    cashouts: list[CashoutDocument]
    next_cursor: str | None


# Reports ------------------------------------------------------------------------------------


class TrialBalanceAccount(Document):
    account: str
    kind: str
    debits: int
    credits: int
    balance: int
    type: Literal["asset", "liability", "revenue", "expense", "clearing"] = Field(
        description="The account's accounting type (docs/accounting.md)."
    )
    normal_side: Literal["debit", "credit"] = Field(
        description="The side its balance normally stands on; `balance` is credits minus debits."
    )


class TrialBalanceTotal(Document):
    debits: int
    credits: int
    balance: int


class TrialBalanceAsset(Document):
    asset: str
    scale: int
    accounts: list[TrialBalanceAccount]
    total: TrialBalanceTotal


class TrialBalanceDocument(Document):
    """Posted debits, credits and balance per account, of the transfers posted before `as_of`;
    `as_of` is null for "now"."""

    as_of: TimestampText | None
    assets: list[TrialBalanceAsset]


class Range(Document):
    """A report's range, `[from, to)`: as asked, the ends left out filled in."""

    from_: TimestampText = Field(alias="from")
    to: TimestampText


# A gifts report group's figures, after its key (named by `group_by`).
GiftEvents = Annotated[
    int,
    Field(
        description="Gift events booked (`gifts.sent` events applied: transfers with code "
        "`gift_diamonds`)."
    ),
]
GiftCount = Annotated[
    int | None,
    Field(
        description="The gifts those events sent: each event's `count` (one event may send up "
        "to 10,000). Null when some of them were booked before giftledger recorded a gift "
        "event's count (`gift_events_without_count`): how many gifts those sent is not known."
    ),
]
GiftEventsWithoutCount = Annotated[
    int,
    Field(
        description="Gift events booked before giftledger recorded a gift event's count "
        "(migration 0042): each sent one gift or more."
    ),
]
GiftCoins = Annotated[int, Field(description="The coins of all their gifts.")]
GiftMilliDiamonds = Annotated[
    int, Field(description="The Diamonds they credited, in milli-diamonds.")
]


class GiftsBySurface(Document):
    surface: str | None
    gift_events: GiftEvents
    gift_count: GiftCount
    gift_events_without_count: GiftEventsWithoutCount
    coins: GiftCoins
    milli_diamonds: GiftMilliDiamonds


class GiftsByCreator(Document):
    creator: str | None
    gift_events: GiftEvents
    gift_count: GiftCount
    gift_events_without_count: GiftEventsWithoutCount
    coins: GiftCoins
    milli_diamonds: GiftMilliDiamonds


class GiftsByGift(Document):
    gift: str | None
    gift_events: GiftEvents
    gift_count: GiftCount
    gift_events_without_count: GiftEventsWithoutCount
    coins: GiftCoins
    milli_diamonds: GiftMilliDiamonds


class GiftsByDay(Document):
    day: DateText
    gift_events: GiftEvents
    gift_count: GiftCount
    gift_events_without_count: GiftEventsWithoutCount
    coins: GiftCoins
    milli_diamonds: GiftMilliDiamonds


# One group's key is named by `group_by`.
GiftGroup = GiftsBySurface | GiftsByCreator | GiftsByGift | GiftsByDay


class GiftsReportDocument(Range):
    group_by: GiftGrouping
    asset: str
    scale: int
    groups: list[GiftGroup]


class CashoutReportLine(Document):
    """`payout_amount` and `usd_value_micros` sum the `priced_count` cash-outs that were priced:
    a request refused before pricing (frozen, an eligibility rule, no payout account, the payout
    currency, no FX rate) has neither."""

    asset: str
    scale: int
    amount: int
    payout_currency: str
    payout_scale: int
    payout_amount: int
    usd_value_micros: int
    count: int
    priced_count: int


class CashoutStatusTotals(Document):
    status: CashoutStatus
    count: int
    lines: list[CashoutReportLine]


class CashoutsReportDocument(Range):
    clock: CashoutClock
    statuses: list[CashoutStatusTotals]


class CodeTotal(Document):
    code: str
    amount: int
    transfer_count: int


class CurrencyTotals(Document):
    currency: str
    scale: int
    totals: list[CodeTotal]


class MoneyReportDocument(Range):
    currencies: list[CurrencyTotals]
