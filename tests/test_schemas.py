"""The event models accept what the contract describes and refuse everything else."""

from __future__ import annotations

import json
import pathlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from schemas import topics
from schemas.assets import ASSET_SCALES, CURRENCIES, format_amount
from schemas.events import (
    CONSUMED_EVENT_MODELS,
    PRODUCED_EVENT_MODELS,
    CashoutRequested,
    CashoutUpdated,
    CreatorUpdated,
    Event,
    GiftSent,
    GiftSurface,
    MarketplacePaid,
    PayoutUpdated,
)
from schemas.export import export_json_schemas, topic_json_schema

OCCURRED_AT = "2026-11-03T18:25:43.511Z"

VALID_EXAMPLES: dict[str, dict[str, Any]] = {
    topics.GIFTS_SENT: {
        "event_id": "gift-1",
        "occurred_at": OCCURRED_AT,
        "sender_id": "fan-1001",
        "creator_id": "creator-42",
        "surface": "live",
        "live_id": "live-5520",
        "gift_id": "rose",
        "coins": 1,
        "count": 5,
    },
    topics.GIFTS_REVERSED: {
        "event_id": "reversal-1",
        "occurred_at": OCCURRED_AT,
        "creator_id": "creator-42",
        "gift_event_id": "gift-1",
        "reason": "chargeback",
    },
    topics.TIPS_RECEIVED: {
        "event_id": "tip-1",
        "occurred_at": "2026-11-03T19:25:43+01:00",
        "sender_id": "fan-1001",
        "creator_id": "creator-42",
        "amount": 500,
        "currency": "USD",
        "fan_fee": 25,
        "processor_fee": 0,
        "charge_id": "ch_3PxQ2b",
    },
    topics.FUND_REWARDED: {
        "event_id": "fund-1",
        "occurred_at": OCCURRED_AT,
        "creator_id": "creator-42",
        "period": "2026-11",
        "amount": 2500,
        "currency": "EUR",
    },
    topics.MARKETPLACE_PAID: {
        "event_id": "deal-1",
        "occurred_at": OCCURRED_AT,
        "creator_id": "creator-42",
        "brand_id": "brand-acme",
        "deal_id": "deal-2026-0917",
        "amount": 150000,
        "currency": "GBP",
        "platform_fee": 15000,
    },
    topics.CREATORS_UPDATED: {
        "event_id": "creator-1",
        "occurred_at": OCCURRED_AT,
        "creator_id": "creator-42",
        "birth_date": "1998-04-17",
        "country": "US",
        "followers": 12500,
        "video_views_30d": 48000,
        "posts_30d": 9,
        "in_good_standing": True,
        "identity_verified": True,
        "payout_account_ref": "pa_9fK2mQ7x",
    },
    topics.CASHOUTS_REQUESTED: {
        "event_id": "cashout-1",
        "occurred_at": OCCURRED_AT,
        "creator_id": "creator-42",
        "asset": "DIAMOND",
        "amount": 2000,
        "payout_currency": "USD",
    },
    topics.PAYOUTS_UPDATED: {
        "event_id": "payout-update-1",
        "occurred_at": OCCURRED_AT,
        "cashout_id": "cashout-1",
        "status": "returned",
        "failure_code": "R01",
    },
    topics.PAYOUTS_REQUESTED: {
        "event_id": "payout-1",
        "occurred_at": OCCURRED_AT,
        "cashout_id": "cashout-1",
        "creator_id": "creator-42",
        "amount": 1000,
        "currency": "USD",
        "payout_account_ref": "pa_9fK2mQ7x",
    },
    topics.CASHOUTS_UPDATED: {
        "event_id": "cashout-1-held",
        "occurred_at": OCCURRED_AT,
        "cashout_id": "cashout-1",
        "creator_id": "creator-42",
        "status": "held",
        "asset": "DIAMOND",
        "amount": 2000000,
        "payout_currency": "EUR",
        "payout_amount": 921,
        "rate_card_version": 1,
        "fx_rate": "0.9213",
    },
}

ALL_EVENT_MODELS = {**CONSUMED_EVENT_MODELS, **PRODUCED_EVENT_MODELS}


def as_json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def example(topic: str, **changes: Any) -> dict[str, Any]:
    """The valid example for `topic` with some fields changed; a value of `...` drops the field."""
    payload = {**VALID_EXAMPLES[topic], **changes}
    return {name: value for name, value in payload.items() if value is not ...}


def parse(topic: str, **changes: Any) -> Event:
    return ALL_EVENT_MODELS[topic].model_validate_json(as_json(example(topic, **changes)))


# Every topic has a model, and every model a valid example.


def test_every_topic_has_a_model() -> None:
    assert set(CONSUMED_EVENT_MODELS) == set(topics.CONSUMED_TOPICS)
    assert set(PRODUCED_EVENT_MODELS) == set(topics.PRODUCED_TOPICS)


@pytest.mark.parametrize("topic", sorted(VALID_EXAMPLES))
def test_a_valid_example_of_every_event_parses_from_json_bytes(topic: str) -> None:
    event = parse(topic)
    assert isinstance(event, ALL_EVENT_MODELS[topic])
    assert event.event_id == VALID_EXAMPLES[topic]["event_id"]
    assert event.occurred_at.utcoffset() is not None


def test_an_rfc_3339_offset_is_kept() -> None:
    event = parse(topics.TIPS_RECEIVED)
    assert event.occurred_at == datetime(2026, 11, 3, 18, 25, 43, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(hours=1)


def test_creator_birth_date_parses_from_an_iso_date_string() -> None:
    event = parse(topics.CREATORS_UPDATED)
    assert isinstance(event, CreatorUpdated)
    assert event.birth_date.isoformat() == "1998-04-17"


def test_gift_count_defaults_to_one() -> None:
    event = parse(topics.GIFTS_SENT, count=...)
    assert isinstance(event, GiftSent)
    assert event.count == 1


def test_events_are_immutable() -> None:
    event = parse(topics.GIFTS_SENT)
    with pytest.raises(ValidationError, match="frozen"):
        event.event_id = "other"  # type: ignore[misc]


# The wire format is strict.


@pytest.mark.parametrize("topic", sorted(VALID_EXAMPLES))
def test_an_unknown_field_is_refused(topic: str) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        parse(topic, note="hello")


def test_a_string_for_an_integer_is_refused() -> None:
    with pytest.raises(ValidationError, match="valid integer"):
        parse(topics.GIFTS_SENT, coins="5")


def test_a_float_for_an_integer_is_refused() -> None:
    with pytest.raises(ValidationError, match="valid integer"):
        parse(topics.TIPS_RECEIVED, amount=500.0)


def test_a_number_for_a_bool_is_refused() -> None:
    with pytest.raises(ValidationError, match="valid boolean"):
        parse(topics.CREATORS_UPDATED, identity_verified=1)


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValidationError, match="occurred_at\n  Input should have timezone info"):
        parse(topics.GIFTS_SENT, occurred_at="2026-11-03T18:25:43")


@pytest.mark.parametrize(
    ("occurred_at", "accepted"),
    [
        ("2000-01-01T00:00:00Z", True),
        ("1999-12-31T23:00:00-02:00", True),  # 2000-01-01 01:00 UTC
        ("2000-01-01T00:30:00+01:00", False),  # 1999-12-31 23:30 UTC
        ("2999-12-31T23:59:59Z", True),
        ("3000-01-01T00:30:00+01:00", True),  # 2999-12-31 23:30 UTC
        ("2999-12-31T23:30:00-01:00", False),  # 3000-01-01 00:30 UTC
    ],
)
def test_occurred_at_bounds_hold_in_utc(occurred_at: str, accepted: bool) -> None:
    if accepted:
        assert parse(topics.GIFTS_SENT, occurred_at=occurred_at).occurred_at.utcoffset() is not None
    else:
        with pytest.raises(ValidationError, match="occurred_at\n  Input should be"):
            parse(topics.GIFTS_SENT, occurred_at=occurred_at)


def test_a_unix_timestamp_is_refused() -> None:
    with pytest.raises(ValidationError, match="valid datetime"):
        parse(topics.GIFTS_SENT, occurred_at=1_793_730_343)


def test_a_missing_event_id_is_refused() -> None:
    with pytest.raises(ValidationError, match="event_id"):
        parse(topics.GIFTS_SENT, event_id=...)


# Gifts name the video or the LIVE they were sent on, never both.


def test_gift_on_live_without_live_id_is_refused() -> None:
    with pytest.raises(ValidationError, match="surface 'live' needs live_id"):
        parse(topics.GIFTS_SENT, live_id=...)


def test_gift_on_live_with_a_video_id_is_refused() -> None:
    with pytest.raises(ValidationError, match="surface 'live' must not carry video_id"):
        parse(topics.GIFTS_SENT, video_id="video-7731")


def test_gift_on_video_without_video_id_is_refused() -> None:
    with pytest.raises(ValidationError, match="surface 'video' needs video_id"):
        parse(topics.GIFTS_SENT, surface="video", live_id=...)


def test_gift_on_video_with_a_live_id_is_refused() -> None:
    with pytest.raises(ValidationError, match="surface 'video' must not carry live_id"):
        parse(topics.GIFTS_SENT, surface="video", video_id="video-7731")


def test_gift_on_video_with_video_id_parses() -> None:
    event = parse(topics.GIFTS_SENT, surface="video", video_id="video-7731", live_id=None)
    assert isinstance(event, GiftSent)
    assert (event.video_id, event.live_id) == ("video-7731", None)


def test_a_surface_outside_the_contract_is_refused() -> None:
    with pytest.raises(ValidationError, match="surface"):
        parse(topics.GIFTS_SENT, surface="story")


# Every number and string is bounded.


@pytest.mark.parametrize("coins", [0, -1, 100_001])
def test_coins_outside_one_to_one_hundred_thousand_are_refused(coins: int) -> None:
    with pytest.raises(ValidationError, match="coins"):
        parse(topics.GIFTS_SENT, coins=coins)


@pytest.mark.parametrize("count", [0, 10_001])
def test_gift_count_outside_one_to_ten_thousand_is_refused(count: int) -> None:
    with pytest.raises(ValidationError, match="count"):
        parse(topics.GIFTS_SENT, count=count)


@pytest.mark.parametrize("amount", [-500, 0, 10**12 + 1])
def test_a_tip_amount_outside_bounds_is_refused(amount: int) -> None:
    with pytest.raises(ValidationError, match="amount"):
        parse(topics.TIPS_RECEIVED, amount=amount)


def test_a_negative_fee_is_refused() -> None:
    with pytest.raises(ValidationError, match="processor_fee"):
        parse(topics.TIPS_RECEIVED, processor_fee=-1)


def test_an_overlong_event_id_is_refused() -> None:
    assert parse(topics.GIFTS_SENT, event_id="e" * 128).event_id == "e" * 128
    with pytest.raises(ValidationError, match="at most 128 characters"):
        parse(topics.GIFTS_SENT, event_id="e" * 129)


def test_an_empty_event_id_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 1 character"):
        parse(topics.GIFTS_SENT, event_id="")


@pytest.mark.parametrize("event_id", ["gift 1", "gift-1\n", "gift\t1", "gift\x00"])
def test_an_event_id_with_whitespace_or_control_characters_is_refused(event_id: str) -> None:
    with pytest.raises(ValidationError, match="pattern"):
        parse(topics.GIFTS_SENT, event_id=event_id)


def test_an_overlong_creator_id_is_refused() -> None:
    with pytest.raises(ValidationError, match="creator_id"):
        parse(topics.GIFTS_SENT, creator_id="c" * 129)


@pytest.mark.parametrize("country", ["us", "USA", "U", "1A"])
def test_a_country_other_than_two_capital_letters_is_refused(country: str) -> None:
    with pytest.raises(ValidationError, match="country"):
        parse(topics.CREATORS_UPDATED, country=country)


def test_a_negative_follower_count_is_refused() -> None:
    with pytest.raises(ValidationError, match="followers"):
        parse(topics.CREATORS_UPDATED, followers=-1)


def test_a_birth_date_after_the_event_is_refused() -> None:
    with pytest.raises(ValidationError, match="birth_date is after occurred_at"):
        parse(topics.CREATORS_UPDATED, birth_date="2026-11-04")


def test_a_raw_account_number_as_payout_account_ref_is_refused() -> None:
    with pytest.raises(ValidationError, match="opaque token"):
        parse(topics.CREATORS_UPDATED, payout_account_ref="000123456789")


def test_a_creator_without_a_payout_account_parses() -> None:
    event = parse(topics.CREATORS_UPDATED, payout_account_ref=...)
    assert isinstance(event, CreatorUpdated)
    assert event.payout_account_ref is None


@pytest.mark.parametrize("period", ["2026-13", "2026-00", "2026-1", "202611", "2026-11-01"])
def test_a_fund_period_other_than_a_month_is_refused(period: str) -> None:
    with pytest.raises(ValidationError, match="period"):
        parse(topics.FUND_REWARDED, period=period)


@pytest.mark.parametrize("reason", ["refunded", "REFUND", ""])
def test_a_reversal_reason_outside_the_contract_is_refused(reason: str) -> None:
    with pytest.raises(ValidationError, match="reason"):
        parse(topics.GIFTS_REVERSED, reason=reason)


@pytest.mark.parametrize("platform_fee", [150000, 150001])
def test_a_marketplace_fee_of_the_whole_amount_or_more_is_refused(platform_fee: int) -> None:
    with pytest.raises(ValidationError, match="platform_fee must be less than amount"):
        parse(topics.MARKETPLACE_PAID, platform_fee=platform_fee)


def test_a_marketplace_deal_without_fee_parses() -> None:
    event = parse(topics.MARKETPLACE_PAID, platform_fee=0)
    assert isinstance(event, MarketplacePaid)
    assert event.platform_fee == 0


# Assets and currencies.


@pytest.mark.parametrize("currency", ["XYZ", "usd", "COIN", "DIAMOND", ""])
def test_an_unknown_currency_is_refused(currency: str) -> None:
    with pytest.raises(ValidationError, match="currency"):
        parse(topics.TIPS_RECEIVED, currency=currency)


def test_an_unknown_payout_currency_is_refused() -> None:
    with pytest.raises(ValidationError, match="unsupported currency 'XYZ'"):
        parse(topics.CASHOUTS_REQUESTED, payout_currency="XYZ")


def test_a_cashout_of_coins_is_refused() -> None:
    with pytest.raises(ValidationError, match="expected 'DIAMOND' or a currency"):
        parse(topics.CASHOUTS_REQUESTED, asset="COIN")


def test_a_cashout_of_a_currency_balance_parses() -> None:
    event = parse(topics.CASHOUTS_REQUESTED, asset="EUR", amount=1050, payout_currency="EUR")
    assert isinstance(event, CashoutRequested)
    assert event.asset == "EUR"


# Failure codes and rejected rules follow the status.


def test_a_failed_payout_without_failure_code_is_refused() -> None:
    with pytest.raises(ValidationError, match="a failed payout needs failure_code"):
        parse(topics.PAYOUTS_UPDATED, status="failed", failure_code=...)


def test_a_returned_payout_without_failure_code_is_refused() -> None:
    with pytest.raises(ValidationError, match="a returned payout needs failure_code"):
        parse(topics.PAYOUTS_UPDATED, failure_code=None)


def test_a_paid_payout_with_failure_code_is_refused() -> None:
    with pytest.raises(ValidationError, match="paid payout must not carry failure_code"):
        parse(topics.PAYOUTS_UPDATED, status="paid")


def test_a_paid_payout_without_failure_code_parses() -> None:
    event = parse(topics.PAYOUTS_UPDATED, status="paid", failure_code=...)
    assert isinstance(event, PayoutUpdated)
    assert event.failure_code is None


def test_an_overlong_failure_code_is_refused() -> None:
    with pytest.raises(ValidationError, match="at most 64 characters"):
        parse(topics.PAYOUTS_UPDATED, failure_code="x" * 65)


def test_a_failed_cashout_update_without_failure_code_is_refused() -> None:
    with pytest.raises(ValidationError, match="a failed cash-out needs failure_code"):
        parse(topics.CASHOUTS_UPDATED, status="failed")


def test_a_held_cashout_update_with_failure_code_is_refused() -> None:
    with pytest.raises(ValidationError, match="held cash-out must not carry failure_code"):
        parse(topics.CASHOUTS_UPDATED, failure_code="R01")


def test_a_rejected_cashout_update_names_the_rule() -> None:
    with pytest.raises(ValidationError, match="a rejected cash-out needs rejected_rule"):
        parse(topics.CASHOUTS_UPDATED, status="rejected")
    event = parse(topics.CASHOUTS_UPDATED, status="rejected", rejected_rule="age_min")
    assert isinstance(event, CashoutUpdated)
    assert event.rejected_rule == "age_min"


def test_a_held_cashout_update_with_a_rejected_rule_is_refused() -> None:
    with pytest.raises(ValidationError, match="held cash-out must not carry rejected_rule"):
        parse(topics.CASHOUTS_UPDATED, rejected_rule="age_min")


@pytest.mark.parametrize("fx_rate", [0.9213, "0", "0.000", "-1", "1e3", "1.", ".5", "1,5"])
def test_an_fx_rate_that_is_not_a_positive_decimal_string_is_refused(fx_rate: object) -> None:
    with pytest.raises(ValidationError, match="fx_rate"):
        parse(topics.CASHOUTS_UPDATED, fx_rate=fx_rate)


def test_an_unpriced_cashout_update_parses() -> None:
    event = parse(
        topics.CASHOUTS_UPDATED,
        status="requested",
        payout_amount=...,
        rate_card_version=...,
        fx_rate=...,
    )
    assert isinstance(event, CashoutUpdated)
    assert (event.payout_amount, event.rate_card_version, event.fx_rate) == (None, None, None)


def test_the_exported_schema_takes_an_unpriced_cashout_update_and_refuses_a_zero_fx_rate() -> None:
    """The JSON Schema says what the model says of `fx_rate`: absent (null) until priced, else a
    decimal greater than zero. Its "not zeros only" stood on the whole optional field, where it
    refused the null of every unpriced cash-out (a requested one, or one rejected before
    pricing), which the API's own responses then broke."""
    validator = Draft202012Validator(
        topic_json_schema(topics.CASHOUTS_UPDATED, PRODUCED_EVENT_MODELS[topics.CASHOUTS_UPDATED])
    )
    document = {
        **VALID_EXAMPLES[topics.CASHOUTS_UPDATED],
        "status": "requested",
        "payout_amount": None,
        "rate_card_version": None,
        "fx_rate": None,
    }
    assert list(validator.iter_errors(document)) == []
    for rate, valid in (("0.9213", True), ("0", False), ("0.000", False)):
        priced = {**VALID_EXAMPLES[topics.CASHOUTS_UPDATED], "fx_rate": rate}
        assert validator.is_valid(priced) is valid, rate


# Amounts as text.


def test_currencies_are_the_assets_other_than_coin_and_diamond() -> None:
    assert frozenset(ASSET_SCALES) - CURRENCIES == {"COIN", "DIAMOND"}
    assert all(len(code) == 3 and code.isupper() for code in CURRENCIES)


@pytest.mark.parametrize(
    ("asset", "scale"),
    [("COIN", 0), ("DIAMOND", 3), ("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3)],
)
def test_asset_scales_follow_iso_4217(asset: str, scale: int) -> None:
    assert ASSET_SCALES[asset] == scale


@pytest.mark.parametrize(
    ("amount_minor", "asset", "text"),
    [
        (12500, "DIAMOND", "12.500 DIAMOND"),
        (1, "DIAMOND", "0.001 DIAMOND"),
        (1000, "USD", "10.00 USD"),
        (-5, "USD", "-0.05 USD"),
        (-1050, "EUR", "-10.50 EUR"),
        (0, "USD", "0.00 USD"),
        (7, "COIN", "7 COIN"),
        (-7, "COIN", "-7 COIN"),
        (1500, "JPY", "1500 JPY"),
        (1234, "KWD", "1.234 KWD"),
        (10**30 + 1, "USD", "10000000000000000000000000000.01 USD"),
    ],
)
def test_format_amount_writes_the_major_unit_exactly(
    amount_minor: int, asset: str, text: str
) -> None:
    assert format_amount(amount_minor, asset) == text


def test_format_amount_refuses_an_unknown_asset() -> None:
    with pytest.raises(ValueError, match="unknown asset 'XYZ'"):
        format_amount(1, "XYZ")


# JSON Schema export.


def test_export_writes_a_parseable_json_schema_for_every_topic(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "schemas" / "out"
    written = export_json_schemas(directory)
    expected = {directory / f"{topic}.schema.json" for topic in ALL_EVENT_MODELS}
    assert set(written) == expected
    for path in written:
        schema = json.loads(path.read_text(encoding="utf-8"))
        topic = path.name.removesuffix(".schema.json")
        assert "event_id" in schema["required"]
        assert "occurred_at" in schema["required"]
        assert schema["$id"].endswith(topic)
        assert ALL_EVENT_MODELS[topic].__name__ in schema["title"]
        assert schema["additionalProperties"] is False


def test_export_is_deterministic(tmp_path: pathlib.Path) -> None:
    first = export_json_schemas(tmp_path / "first")
    second = export_json_schemas(tmp_path / "second")
    for one, other in zip(first, second, strict=True):
        text = one.read_text(encoding="utf-8")
        assert text == other.read_text(encoding="utf-8")
        assert text.endswith("}\n")


def test_every_exported_field_has_a_description_and_examples(tmp_path: pathlib.Path) -> None:
    for path in export_json_schemas(tmp_path):
        schema = json.loads(path.read_text(encoding="utf-8"))
        for name, field in schema["properties"].items():
            assert field.get("description"), f"{path.name}: {name} has no description"
            assert field.get("examples"), f"{path.name}: {name} has no examples"


# Round trip.

visible_ascii = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
identifiers = st.text(alphabet=visible_ascii, min_size=1, max_size=128)
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# A day inside the accepted range (2000-01-01 .. 2999-12-31 UTC) at each end: a local time on
# 2000-01-01 with a positive offset is still 1999 in UTC.
aware_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2100, 1, 1), timezones=offsets
)


@st.composite
def gifts(draw: st.DrawFn) -> GiftSent:
    surfaces: tuple[GiftSurface, ...] = ("video", "live")
    surface = draw(st.sampled_from(surfaces))
    target = draw(identifiers)
    return GiftSent(
        event_id=draw(identifiers),
        occurred_at=draw(aware_datetimes),
        sender_id=draw(identifiers),
        creator_id=draw(identifiers),
        surface=surface,
        video_id=target if surface == "video" else None,
        live_id=target if surface == "live" else None,
        gift_id=draw(identifiers),
        coins=draw(st.integers(min_value=1, max_value=100_000)),
        count=draw(st.integers(min_value=1, max_value=10_000)),
    )


@given(gifts())
def test_a_gift_survives_a_json_round_trip(gift: GiftSent) -> None:
    again = GiftSent.model_validate_json(gift.model_dump_json())
    assert again == gift
    assert again.occurred_at.utcoffset() == gift.occurred_at.utcoffset()
