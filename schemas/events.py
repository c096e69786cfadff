"""The events on giftledger's Kafka topics, one pydantic model per topic.

The wire format is fixed by the contract: field names are the contract's, unknown fields are
refused, and validation is strict, so `"5"` is not a number and `true` is not `1`. Timestamps are
RFC 3339 strings with a timezone; dates are ISO `YYYY-MM-DD`. Every number and string is bounded,
so a malformed or hostile input fails here, before it can reach the ledger. Amounts are integers in
the minor unit of their asset (see `schemas.assets`); there are no floats.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from schemas import topics
from schemas.assets import CURRENCIES, DIAMOND

ID_LENGTH_MAX = 128
FAILURE_CODE_LENGTH_MAX = 64
RULE_NAME_LENGTH_MAX = 64
COINS_PER_GIFT_MAX = 100_000
GIFT_COUNT_MAX = 10_000
AMOUNT_MAX = 10**12
TALLY_MAX = 10**12
# Whole diamonds, stored as milli-diamonds: at most AMOUNT_MAX milli-diamonds.
DIAMOND_CASHOUT_MAX = AMOUNT_MAX // 1_000
RATE_CARD_VERSION_MAX = 2**31 - 1
BIRTH_DATE_MIN = date(1900, 1, 1)
# Business events happen in this window; outside it a timestamp is a mistake, and near the ends of
# the calendar it would overflow date arithmetic and PostgreSQL's timestamp range.
OCCURRED_AT_MIN = datetime(2000, 1, 1, tzinfo=UTC)
OCCURRED_AT_MAX = datetime(2999, 12, 31, 23, 59, 59, tzinfo=UTC)

# Visible ASCII: letters, digits and punctuation; no spaces, no control characters.
VISIBLE_ASCII_PATTERN = r"^[!-~]+$"


def _check_currency(value: str) -> str:
    if value not in CURRENCIES:
        raise ValueError(f"unknown currency {value!r}: expected an ISO 4217 code such as 'USD'")
    return value


def _check_cashout_asset(value: str) -> str:
    if value != DIAMOND and value not in CURRENCIES:
        raise ValueError(f"unknown asset {value!r}: expected 'DIAMOND' or a currency such as 'USD'")
    return value


def _check_account_ref(value: str) -> str:
    if value.isdigit():
        raise ValueError("payout_account_ref must be an opaque token, not a raw account number")
    return value


Identifier = Annotated[
    str, Field(min_length=1, max_length=ID_LENGTH_MAX, pattern=VISIBLE_ASCII_PATTERN)
]
FailureCode = Annotated[
    str, Field(min_length=1, max_length=FAILURE_CODE_LENGTH_MAX, pattern=VISIBLE_ASCII_PATTERN)
]
RuleName = Annotated[
    str, Field(min_length=1, max_length=RULE_NAME_LENGTH_MAX, pattern=VISIBLE_ASCII_PATTERN)
]
AccountRef = Annotated[Identifier, AfterValidator(_check_account_ref)]
Amount = Annotated[int, Field(ge=1, le=AMOUNT_MAX)]
Fee = Annotated[int, Field(ge=0, le=AMOUNT_MAX)]
Tally = Annotated[int, Field(ge=0, le=TALLY_MAX)]
Currency = Annotated[
    str,
    AfterValidator(_check_currency),
    Field(json_schema_extra={"enum": sorted(CURRENCIES)}),
]
CashoutAsset = Annotated[
    str,
    AfterValidator(_check_cashout_asset),
    Field(json_schema_extra={"enum": sorted(CURRENCIES | {DIAMOND})}),
]
# A positive decimal written as text so no float ever carries a rate: up to 12 + 18 digits.
DecimalText = Annotated[str, Field(max_length=31, pattern=r"^[0-9]{1,12}(\.[0-9]{1,18})?$")]

GiftSurface = Literal["video", "live"]
ReversalReason = Literal["refund", "chargeback", "fraud", "policy"]
PayoutStatus = Literal["paid", "failed", "returned"]
CashoutStatus = Literal["requested", "held", "submitted", "paid", "rejected", "failed", "returned"]

_CREATOR_ID = "The creator the event is about; also the Kafka message key."
_CURRENCY = "ISO 4217 code of the currency the amounts are in."
_CASHOUT_ID = "The cash-out this is about."
_FAILURE_CODE = "Why the transfer failed or came back, as the bank or rail names it."
_ACCOUNT_REF = (
    "Opaque token naming the creator's payout account at the rail; never a raw account number."
)


class Event(BaseModel):
    """The two fields every event carries."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    event_id: Identifier = Field(
        description="Idempotency key: the same event_id with the same payload is applied once; "
        "with a different payload it is a conflict. 1-128 visible ASCII characters.",
        examples=["gift-01JC9W6W2Q0R4S8T"],
    )
    # A timezone is required and the bounds hold in pydantic's own validator: a Python
    # validator here cost a third of a gift's validation time.
    occurred_at: AwareDatetime = Field(
        ge=OCCURRED_AT_MIN,
        le=OCCURRED_AT_MAX,
        description="When it happened: an RFC 3339 timestamp with a timezone offset, between"
        " 2000-01-01 and 2999-12-31 (UTC).",
        examples=["2026-11-03T18:25:43.511Z"],
    )


class GiftSent(Event):
    """A fan sent `count` gifts of `coins` coins each to a creator, on a video or a LIVE."""

    sender_id: Identifier = Field(description="The fan who sent the gift.", examples=["fan-1001"])
    creator_id: Identifier = Field(description=_CREATOR_ID, examples=["creator-42"])
    surface: GiftSurface = Field(
        description="Where the gift was sent: on a short `video` or a `live` stream.",
        examples=["live"],
    )
    video_id: Identifier | None = Field(
        default=None,
        description="The video; required when surface is `video`, absent otherwise.",
        examples=["video-7731"],
    )
    live_id: Identifier | None = Field(
        default=None,
        description="The LIVE stream; required when surface is `live`, absent otherwise.",
        examples=["live-5520"],
    )
    gift_id: Identifier = Field(description="Which gift from the catalogue.", examples=["rose"])
    coins: Annotated[int, Field(ge=1, le=COINS_PER_GIFT_MAX)] = Field(
        description="Price of one gift in COIN (scale 0: whole coins).", examples=[1, 99]
    )
    count: Annotated[int, Field(ge=1, le=GIFT_COUNT_MAX)] = Field(
        default=1, description="How many of this gift were sent at once.", examples=[1, 5]
    )

    @model_validator(mode="after")
    def _surface_names_its_target(self) -> Self:
        if self.surface == "video":
            if self.video_id is None:
                raise ValueError("a gift on surface 'video' needs video_id")
            if self.live_id is not None:
                raise ValueError("a gift on surface 'video' must not carry live_id")
        else:
            if self.live_id is None:
                raise ValueError("a gift on surface 'live' needs live_id")
            if self.video_id is not None:
                raise ValueError("a gift on surface 'live' must not carry video_id")
        return self


class GiftReversed(Event):
    """A gift's coin purchase was refunded, charged back or found fraudulent: claw back."""

    creator_id: Identifier = Field(description=_CREATOR_ID, examples=["creator-42"])
    gift_event_id: Identifier = Field(
        description="event_id of the `gifts.sent` event being reversed.",
        examples=["gift-01JC9W6W2Q0R4S8T"],
    )
    reason: ReversalReason = Field(description="Why the gift is reversed.", examples=["chargeback"])


class TipReceived(Event):
    """A fan tipped a creator through the card processor; the creator gets the whole amount."""

    sender_id: Identifier = Field(description="The fan who tipped.", examples=["fan-1001"])
    creator_id: Identifier = Field(description=_CREATOR_ID, examples=["creator-42"])
    amount: Amount = Field(
        description="The tip, in minor units of `currency`; all of it goes to the creator.",
        examples=[500],
    )
    currency: Currency = Field(description=_CURRENCY, examples=["USD"])
    fan_fee: Fee = Field(
        description="Fee paid by the fan on top of the tip, in minor units of `currency`.",
        examples=[25],
    )
    processor_fee: Fee = Field(
        description="Card processor's fee, borne by the platform, in minor units of `currency`.",
        examples=[45],
    )
    charge_id: Identifier = Field(
        description="The card processor's charge reference.", examples=["ch_3PxQ2b"]
    )


class FundRewarded(Event):
    """A Creator Fund reward for one period."""

    creator_id: Identifier = Field(description=_CREATOR_ID, examples=["creator-42"])
    period: str = Field(
        pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$",
        description="The month rewarded, as YYYY-MM.",
        examples=["2026-11"],
    )
    amount: Amount = Field(description="The reward, in minor units of `currency`.", examples=[2500])
    currency: Currency = Field(description=_CURRENCY, examples=["USD"])


class MarketplacePaid(Event):
    """A brand paid for a Creator Marketplace deal; the platform keeps `platform_fee`."""

    creator_id: Identifier = Field(description=_CREATOR_ID, examples=["creator-42"])
    brand_id: Identifier = Field(description="The paying brand.", examples=["brand-acme"])
    deal_id: Identifier = Field(description="The Marketplace deal.", examples=["deal-2026-0917"])
    amount: Amount = Field(
        description="What the brand paid, in minor units of `currency`, fee included.",
        examples=[150000],
    )
    currency: Currency = Field(description=_CURRENCY, examples=["USD"])
    platform_fee: Fee = Field(
        description="The platform's share of `amount`, in minor units of `currency`; "
        "less than `amount`.",
        examples=[15000],
    )

    @model_validator(mode="after")
    def _fee_below_amount(self) -> Self:
        if self.platform_fee >= self.amount:
            raise ValueError("platform_fee must be less than amount")
        return self


class CreatorUpdated(Event):
    """Eligibility facts about a creator; the latest event wins."""

    creator_id: Identifier = Field(description=_CREATOR_ID, examples=["creator-42"])
    birth_date: date = Field(
        ge=BIRTH_DATE_MIN,
        description="Date of birth, ISO YYYY-MM-DD; not after the day of `occurred_at`.",
        examples=["1998-04-17"],
    )
    country: str = Field(
        pattern=r"^[A-Z]{2}$",
        description="Country of residence, ISO 3166-1 alpha-2.",
        examples=["US"],
    )
    followers: Tally = Field(description="Follower count.", examples=[12500])
    video_views_30d: Tally = Field(description="Video views in the last 30 days.", examples=[48000])
    posts_30d: Tally = Field(description="Posts in the last 30 days.", examples=[9])
    in_good_standing: bool = Field(
        description="The creator is in good standing with the platform.", examples=[True]
    )
    identity_verified: bool = Field(description="Identity check passed.", examples=[True])
    payout_account_ref: AccountRef | None = Field(
        default=None,
        description=_ACCOUNT_REF + " Absent while the creator has linked no account.",
        examples=["pa_9fK2mQ7x"],
    )

    @model_validator(mode="after")
    def _born_before_the_event(self) -> Self:
        if self.birth_date > self.occurred_at.date():
            raise ValueError("birth_date is after occurred_at")
        return self


class CashoutRequested(Event):
    """A creator asks to turn Diamonds, or a currency balance, into money on their account."""

    creator_id: Identifier = Field(description=_CREATOR_ID, examples=["creator-42"])
    asset: CashoutAsset = Field(
        description="What to cash out: `DIAMOND` or a currency balance.", examples=["DIAMOND"]
    )
    amount: Amount = Field(
        description="How much: whole diamonds when `asset` is `DIAMOND` (not milli-diamonds), "
        "minor units of `asset` when it is a currency.",
        examples=[2000],
    )
    payout_currency: Currency = Field(
        description="ISO 4217 code of the currency to pay out in.", examples=["USD"]
    )

    @model_validator(mode="after")
    def _diamonds_fit_in_milli_diamonds(self) -> Self:
        if self.asset == DIAMOND and self.amount > DIAMOND_CASHOUT_MAX:
            raise ValueError(f"a cash-out is at most {DIAMOND_CASHOUT_MAX} whole diamonds")
        return self


class PayoutUpdated(Event):
    """The bank or payout rail reports what happened to a payout."""

    cashout_id: Identifier = Field(description=_CASHOUT_ID, examples=["cashout-01JC9X"])
    status: PayoutStatus = Field(
        description="`paid`; `failed` (never arrived); `returned` (came back after `paid`).",
        examples=["paid"],
    )
    failure_code: FailureCode | None = Field(
        default=None,
        description=_FAILURE_CODE + " Required when failed or returned; absent when paid.",
        examples=["account_closed", "R01", "AC04"],
    )

    @model_validator(mode="after")
    def _failure_code_matches_status(self) -> Self:
        if self.status == "paid" and self.failure_code is not None:
            raise ValueError("a paid payout must not carry failure_code")
        if self.status != "paid" and self.failure_code is None:
            raise ValueError(f"a {self.status} payout needs failure_code")
        return self


class PayoutRequested(Event):
    """An approved cash-out to send to the bank."""

    cashout_id: Identifier = Field(description=_CASHOUT_ID, examples=["cashout-01JC9X"])
    creator_id: Identifier = Field(description=_CREATOR_ID, examples=["creator-42"])
    amount: Amount = Field(
        description="What to pay, in minor units of `currency`.", examples=[1000]
    )
    currency: Currency = Field(description=_CURRENCY, examples=["USD"])
    payout_account_ref: AccountRef = Field(description=_ACCOUNT_REF, examples=["pa_9fK2mQ7x"])


class CashoutUpdated(Event):
    """A cash-out changed state: its amounts, the rates that priced it, and why it failed."""

    cashout_id: Identifier = Field(description=_CASHOUT_ID, examples=["cashout-01JC9X"])
    creator_id: Identifier = Field(description=_CREATOR_ID, examples=["creator-42"])
    status: CashoutStatus = Field(
        description="The new state: requested, held, submitted, paid; or rejected, failed, "
        "returned.",
        examples=["held"],
    )
    asset: CashoutAsset = Field(
        description="What is cashed out: `DIAMOND` or a currency balance.", examples=["DIAMOND"]
    )
    amount: Amount = Field(
        description="How much of `asset`, in its minor units (milli-diamonds for `DIAMOND`).",
        examples=[2000000],
    )
    payout_currency: Currency = Field(
        description="ISO 4217 code of the currency paid out.", examples=["USD"]
    )
    payout_amount: Amount | None = Field(
        default=None,
        description="What the creator receives, in minor units of `payout_currency`, rounded "
        "down; absent until the cash-out is priced.",
        examples=[1000],
    )
    rate_card_version: Annotated[int, Field(ge=1, le=RATE_CARD_VERSION_MAX)] | None = Field(
        default=None,
        description="Version of the rate card that priced the Diamonds; absent when unpriced "
        "or when `asset` is a currency.",
        examples=[3],
    )
    fx_rate: DecimalText | None = Field(
        default=None,
        description="Exchange rate applied, as a decimal string: major units of "
        "`payout_currency` per major unit of USD (Diamonds) or of `asset` (a currency). "
        "Absent until priced.",
        examples=["1", "0.9213"],
    )
    failure_code: FailureCode | None = Field(
        default=None,
        description=_FAILURE_CODE + " Present only when failed or returned.",
        examples=["account_closed"],
    )
    rejected_rule: RuleName | None = Field(
        default=None,
        description="The eligibility rule or limit that refused the cash-out; present only "
        "when rejected.",
        examples=["followers_min"],
    )

    @field_validator("fx_rate")
    @classmethod
    def _fx_rate_positive(cls, value: str | None) -> str | None:
        if value is not None and value.strip("0.") == "":
            raise ValueError("fx_rate must be greater than zero")
        return value

    @model_validator(mode="after")
    def _codes_match_status(self) -> Self:
        failed = self.status in ("failed", "returned")
        if failed and self.failure_code is None:
            raise ValueError(f"a {self.status} cash-out needs failure_code")
        if not failed and self.failure_code is not None:
            raise ValueError(f"a {self.status} cash-out must not carry failure_code")
        rejected = self.status == "rejected"
        if rejected and self.rejected_rule is None:
            raise ValueError("a rejected cash-out needs rejected_rule")
        if not rejected and self.rejected_rule is not None:
            raise ValueError(f"a {self.status} cash-out must not carry rejected_rule")
        return self


CONSUMED_EVENT_MODELS: dict[str, type[Event]] = {
    topics.GIFTS_SENT: GiftSent,
    topics.GIFTS_REVERSED: GiftReversed,
    topics.TIPS_RECEIVED: TipReceived,
    topics.FUND_REWARDED: FundRewarded,
    topics.MARKETPLACE_PAID: MarketplacePaid,
    topics.CREATORS_UPDATED: CreatorUpdated,
    topics.CASHOUTS_REQUESTED: CashoutRequested,
    topics.PAYOUTS_UPDATED: PayoutUpdated,
}

PRODUCED_EVENT_MODELS: dict[str, type[Event]] = {
    topics.PAYOUTS_REQUESTED: PayoutRequested,
    topics.CASHOUTS_UPDATED: CashoutUpdated,
}
