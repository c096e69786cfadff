"""The events on giftledger's Kafka topics, one pydantic model per topic.

The wire format is fixed by the contract: field names are the contract's, unknown fields are
refused, and validation is strict, so `"5"` is not a number and `true` is not `1`. Timestamps are
RFC 3339 strings with seconds and a timezone offset; dates are ISO `YYYY-MM-DD`. Every number and
string is bounded, so a malformed or hostile input fails here, before it can reach the ledger.
Amounts are integers in the minor unit of their asset (see `schemas.assets`); there are no floats.

Every rule is written once, here, and both the service and the exported JSON Schema
(`schemas.export`) take it from here: field bounds and patterns through pydantic, the rules across
fields as `if`/`then` in `json_schema_extra` next to the validator that applies them. What JSON
Schema cannot say is listed in `schemas.event_docs` ("The service also refuses").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

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
OCCURRED_AT_MAX = datetime(2999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)

# Visible ASCII: letters, digits and punctuation; no spaces, no control characters. The event
# store relies on it: a batch of gifts claims its event and creator ids joined by spaces
# (`services.ingestion.event_store._claim_parameters`), which a space in an id would split.
VISIBLE_ASCII_PATTERN = r"^[!-~]+$"
# Visible ASCII with at least one character that is not a digit: an opaque token, never a raw
# account number.
ACCOUNT_REF_PATTERN = r"^[!-~]*[!-/:-~][!-~]*$"

# Dates and times, as regular expressions both pydantic-core (Rust `regex`) and JSON Schema
# validators (ECMA-262, Python `re`) read alike: no `\d`, no look-around (one difference stays:
# Python's `$` also matches before a final line feed; docs/events.md lists it). The calendar is
# exact: months have their days and February 29 exists in leap years only.
_MONTH_DAY = (
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
# Divisible by 4 and not by 100 (1904 .. 2996), or by 400 (2000, 2400, 2800).
_LEAP_YEAR = "(?:(?:19|2[0-9])(?:0[48]|[2468][048]|[13579][26])|2[048]00)"
_LEAP_YEAR_2XXX = "(?:2[0-9](?:0[48]|[2468][048]|[13579][26])|2[048]00)"
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?"
_OFFSET = "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
# The local date of a moment between OCCURRED_AT_MIN and OCCURRED_AT_MAX: 2000 .. 2999, and the
# day either side, which an offset can still bring into range.
_OCCURRED_ON = f"(?:2[0-9]{{3}}-{_MONTH_DAY}|{_LEAP_YEAR_2XXX}-02-29|1999-12-31|3000-01-01)"
# RFC 3339 `date-time` (section 5.6) with seconds and an offset, `T`/`t` and `Z`/`z` as RFC 3339
# allows, no space for `T`, at most 9 digits of a second (the service keeps 6). The contract's
# pattern for `occurred_at`, exported in the JSON Schema.
OCCURRED_AT_PATTERN = f"^{_OCCURRED_ON}[Tt]{_TIME}{_OFFSET}$"
# What the service matches before pydantic parses the text: the same with the offset optional, so
# a timestamp without one fails in pydantic's timezone check, with its message. Together they
# accept exactly what OCCURRED_AT_PATTERN does (and then the bounds hold, in UTC).
OCCURRED_AT_TEXT_PATTERN = f"^{_OCCURRED_ON}[Tt]{_TIME}{_OFFSET}?$"
# ISO `YYYY-MM-DD` from 1900-01-01 to 3000-01-01 (the latest local day of OCCURRED_AT_MAX).
BIRTH_DATE_PATTERN = (
    f"^(?:(?:19[0-9]{{2}}|2[0-9]{{3}})-{_MONTH_DAY}|{_LEAP_YEAR}-02-29|3000-01-01)$"
)


@dataclass(frozen=True, slots=True)
class TextFirst:
    """In JSON, a date or a datetime must first be a string matching `pattern`; then pydantic
    parses it. Without this, pydantic also reads digit strings as Unix time (`"1762000000"`),
    times without seconds, a space or `_` for `T`, `,` for `.` and `+0100` for `+01:00`.

    The check runs in pydantic-core (a Rust regex in a chain), not in a Python validator: a
    gift's validation pays a string step, not a Python call. In Python (a `datetime` given to the
    constructor) the field validates as before. The JSON Schema is the type's own plus
    `schema_pattern`.
    """

    pattern: str
    schema_pattern: str
    message: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        parsed = handler(source)
        assert parsed["type"] in ("date", "datetime"), parsed
        # The text is known to be a string here: the parse after it may be lax (a Python str).
        lax: Any = {**parsed, "strict": False}
        text = core_schema.custom_error_schema(
            core_schema.str_schema(pattern=self.pattern, strict=True),
            custom_error_type=f"{parsed['type']}_format",
            custom_error_message=self.message,
        )
        return core_schema.json_or_python_schema(
            json_schema=core_schema.chain_schema([text, lax]), python_schema=parsed
        )

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        assert schema["type"] == "json-or-python", schema
        return {**handler(schema["python_schema"]), "pattern": self.schema_pattern}


OccurredAt = Annotated[
    AwareDatetime,
    # The bounds hold in pydantic's own validator: a Python validator here cost a third of a
    # gift's validation time.
    Field(ge=OCCURRED_AT_MIN, le=OCCURRED_AT_MAX),
    TextFirst(
        OCCURRED_AT_TEXT_PATTERN,
        OCCURRED_AT_PATTERN,
        "Input should be a valid datetime: RFC 3339 with seconds and an offset,"
        " YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM), in 2000 .. 2999",
    ),
]
BirthDate = Annotated[
    date,
    Field(ge=BIRTH_DATE_MIN),
    TextFirst(
        BIRTH_DATE_PATTERN,
        BIRTH_DATE_PATTERN,
        "Input should be a valid date: YYYY-MM-DD, from 1900-01-01",
    ),
]


def _check_currency(value: str) -> str:
    if value not in CURRENCIES:
        raise ValueError(
            f"unsupported currency {value!r}: one of the {len(CURRENCIES)} ISO 4217 codes"
            " giftledger pays in (docs/events.md), such as 'USD'"
        )
    return value


def _check_cashout_asset(value: str) -> str:
    if value != DIAMOND and value not in CURRENCIES:
        raise ValueError(f"unknown asset {value!r}: expected 'DIAMOND' or a currency such as 'USD'")
    return value


_ACCOUNT_REF_RE = re.compile(ACCOUNT_REF_PATTERN)


def _check_account_ref(value: str) -> str:
    if not _ACCOUNT_REF_RE.fullmatch(value):
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
AccountRef = Annotated[
    Identifier,
    AfterValidator(_check_account_ref),
    Field(json_schema_extra={"pattern": ACCOUNT_REF_PATTERN}),
]
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
DECIMAL_TEXT_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,18})?$"
DECIMAL_TEXT_LENGTH_MAX = 31
DecimalText = Annotated[
    str, Field(max_length=DECIMAL_TEXT_LENGTH_MAX, pattern=DECIMAL_TEXT_PATTERN)
]
# A decimal of zeros only ("0", "0.000"): DecimalText, but not greater than zero.
ZERO_DECIMAL_PATTERN = r"^[0.]+$"
_ZERO_DECIMAL_RE = re.compile(ZERO_DECIMAL_PATTERN)
# DecimalText greater than zero: the JSON Schema says "not zeros only" on the string itself, so
# that it holds whether the field is optional or not (on an optional field's whole schema, a
# null, which no pattern applies to, would fail the "not"). Models check it in a validator.
PositiveDecimalText = Annotated[
    str,
    Field(
        max_length=DECIMAL_TEXT_LENGTH_MAX,
        pattern=DECIMAL_TEXT_PATTERN,
        json_schema_extra={"not": {"pattern": ZERO_DECIMAL_PATTERN}},
    ),
]

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
    occurred_at: OccurredAt = Field(
        description="When it happened: an RFC 3339 timestamp with seconds and a timezone offset"
        " (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`), between 2000-01-01 and 2999-12-31"
        " (UTC).",
        examples=["2026-11-03T18:25:43.511Z"],
    )


def _when(
    field: str, value: str, then: dict[str, Any], otherwise: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A JSON Schema `if`/`then` (and `else`): when `field` is `value`, `then` holds."""
    rule: dict[str, Any] = {
        "if": {"properties": {field: {"const": value}}, "required": [field]},
        "then": then,
    }
    if otherwise is not None:
        rule["else"] = otherwise
    return rule


def _present(*fields: str) -> dict[str, Any]:
    """JSON Schema: every one of `fields` is there and not null."""
    return {
        "required": list(fields),
        "properties": {field: {"not": {"type": "null"}} for field in fields},
    }


def _absent(*fields: str) -> dict[str, Any]:
    """JSON Schema: none of `fields` is there, except as null."""
    return {"properties": {field: {"type": "null"} for field in fields}}


class GiftSent(Event):
    """A fan sent `count` gifts of `coins` coins each to a creator, on a video or a LIVE."""

    # The rule of `_surface_names_its_target`, for the JSON Schema.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                _when("surface", "video", {"allOf": [_present("video_id"), _absent("live_id")]}),
                _when("surface", "live", {"allOf": [_present("live_id"), _absent("video_id")]}),
            ]
        }
    )

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
        description=(
            "The card processor's charge reference. A charge is credited once: another event"
            " naming it is dead-lettered (`charge_already_applied`)."
        ),
        examples=["ch_3PxQ2b"],
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
    birth_date: BirthDate = Field(
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

    # The rule of `_diamonds_fit_in_milli_diamonds`, for the JSON Schema.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                _when(
                    "asset",
                    DIAMOND,
                    {"properties": {"amount": {"maximum": DIAMOND_CASHOUT_MAX}}},
                )
            ]
        }
    )

    creator_id: Identifier = Field(description=_CREATOR_ID, examples=["creator-42"])
    asset: CashoutAsset = Field(
        description="What to cash out: `DIAMOND` or a currency balance.", examples=["DIAMOND"]
    )
    amount: Amount = Field(
        description="How much: whole diamonds when `asset` is `DIAMOND` (not milli-diamonds), "
        f"at most {DIAMOND_CASHOUT_MAX:,}; minor units of `asset` when it is a currency.",
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

    # The rule of `_failure_code_matches_status`, for the JSON Schema.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [_when("status", "paid", _absent("failure_code"), _present("failure_code"))]
        }
    )

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

    # The rules of `_codes_match_status`, for the JSON Schema.
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {
                    "if": {
                        "properties": {"status": {"enum": ["failed", "returned"]}},
                        "required": ["status"],
                    },
                    "then": _present("failure_code"),
                    "else": _absent("failure_code"),
                },
                _when("status", "rejected", _present("rejected_rule"), _absent("rejected_rule")),
            ]
        }
    )

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
    fx_rate: PositiveDecimalText | None = Field(
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
        if value is not None and _ZERO_DECIMAL_RE.fullmatch(value):
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


OPERATOR_NAME_LENGTH_MAX = 64
ACTION_TARGET_LENGTH_MAX = 300
ACTION_REASON_LENGTH_MAX = 1_000
ACTION_ID_MAX = 2**63 - 1
# A person's name as `API_TOKENS` or `--as` gives it: letters, digits and `._@-`.
OPERATOR_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"
ACTION_NAME_PATTERN = r"^[a-z][a-z_]*$"
# Text for people to read, on one line: no control characters (C0, DEL and C1), no Unicode line
# or paragraph separator, and no bidirectional override or isolate, which would show the reason
# (in a log line, the console) in another order than it was written.
ONE_LINE_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+$"
SHA256_HEX_PATTERN = r"^[0-9a-f]{64}$"

OperatorName = Annotated[
    str,
    Field(min_length=1, max_length=OPERATOR_NAME_LENGTH_MAX, pattern=OPERATOR_NAME_PATTERN),
]
ActionName = Annotated[str, Field(min_length=1, max_length=64, pattern=ACTION_NAME_PATTERN)]
ActionTarget = Annotated[
    str, Field(min_length=1, max_length=ACTION_TARGET_LENGTH_MAX, pattern=VISIBLE_ASCII_PATTERN)
]
ActionReason = Annotated[
    str, Field(min_length=1, max_length=ACTION_REASON_LENGTH_MAX, pattern=ONE_LINE_PATTERN)
]
Sha256Hex = Annotated[str, Field(min_length=64, max_length=64, pattern=SHA256_HEX_PATTERN)]


class OperatorActionRecorded(Event):
    """An operator action, as appended to the hash-chained `operator_actions` log."""

    action_id: Annotated[int, Field(ge=1, le=ACTION_ID_MAX)] = Field(
        description="The action's position in the log (ascending, not necessarily contiguous);"
        " the event_id is `operator-action:<action_id>`.",
        examples=[42],
    )
    idempotency_key: Identifier = Field(
        description="The key the operator's client gave the action: the same key with the same "
        "content is the same action.",
        examples=["adjust-creator-42-2026-11-03"],
    )
    actor: OperatorName = Field(
        description="Who acted: the name of the API token (or the command line's `--as`).",
        examples=["alice"],
    )
    role: Literal["finance", "operator"] = Field(
        description="The role the actor acted in.", examples=["operator"]
    )
    action: ActionName = Field(
        description="What was done: `adjustment_proposed`, `adjustment_approved`, "
        "`creator_frozen`, `creator_unfrozen`, or another operator action.",
        examples=["creator_frozen"],
    )
    target: ActionTarget = Field(
        description="What it was done to: a creator id, a dead letter or a cash-out id. The "
        "message's key is the creator it is about (a re-driven dead letter: its source record's "
        "key).",
        examples=["creator-42"],
    )
    reason: ActionReason = Field(
        description="Why, in the operator's words (one line).",
        examples=["chargeback fraud under investigation"],
    )
    ticket: Identifier | None = Field(
        default=None,
        description="The ticket the action belongs to, when one was given.",
        examples=["OPS-1234"],
    )
    details: dict[str, Any] = Field(
        description="What the action needs beyond its target (amounts in minor units as "
        "integers, ids), as recorded in the log.",
        examples=[{"adjustment_id": 7, "asset": "DIAMOND", "amount_minor": -5000}],
    )
    previous_hash: Sha256Hex = Field(
        description="SHA-256 (hex) of the log entry before this one; 64 zeros for the first.",
        examples=["0" * 64],
    )
    hash: Sha256Hex = Field(
        description="SHA-256 (hex) of `previous_hash` and this entry's canonical content: "
        "the chain `giftledger verify` recomputes, published so that a copy outside the "
        "database can vouch for it.",
        examples=["9f2c" * 16],
    )


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
    topics.OPERATOR_ACTIONS: OperatorActionRecorded,
}
