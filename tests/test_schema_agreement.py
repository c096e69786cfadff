"""The exported JSON Schema and the service give every consumed event the same verdict.

Upstream producers validate their events against `giftledger schemas export` with a JSON Schema
validator (here python-jsonschema's `Draft202012Validator`, format checking off, as most run it);
the service reads them with `parse_record`. For events that are valid, broken field by field,
with numbers written as floats, and with keys given twice, the two must agree: both accept, or
both refuse. The exceptions are the rules JSON Schema cannot say, which docs/events.md lists under
"The service also refuses"; they are named in `BEYOND_THE_SCHEMA`, and the service must refuse
every one of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from schemas import topics
from schemas.event_docs import events_markdown
from schemas.events import (
    AMOUNT_MAX,
    BIRTH_DATE_PATTERN,
    CONSUMED_EVENT_MODELS,
    DIAMOND_CASHOUT_MAX,
    OCCURRED_AT_MAX,
    OCCURRED_AT_MIN,
    OCCURRED_AT_PATTERN,
)
from schemas.export import topic_json_schema
from services.ingestion.records import DeadLetter, InputRecord, parse_record
from tests import hostile_strategies as hs
from tests.test_schemas import VALID_EXAMPLES

SCHEMAS = {topic: topic_json_schema(topic, model) for topic, model in CONSUMED_EVENT_MODELS.items()}
VALIDATORS = {topic: Draft202012Validator(schema) for topic, schema in SCHEMAS.items()}
OCCURRED_AT_RE = re.compile(OCCURRED_AT_PATTERN)
BIRTH_DATE_RE = re.compile(BIRTH_DATE_PATTERN)


# --- JSON text, written as a producer may write it ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Number:
    """A JSON number written as `text` (`3.0`, `1e0`): json.dumps would write `3`."""

    text: str


Pairs = list[tuple[str, Any]]


def to_json(pairs: Pairs) -> bytes:
    """One JSON object with these members in this order; a key may come twice."""

    def value(item: Any) -> str:
        return item.text if isinstance(item, Number) else json.dumps(item, allow_nan=False)

    return (
        "{" + ", ".join(f"{json.dumps(key)}: {value(item)}" for key, item in pairs) + "}"
    ).encode()


def example(topic: str, **changes: Any) -> bytes:
    """The valid example of test_schemas with fields changed; `...` drops a field."""
    payload = {**VALID_EXAMPLES[topic], **changes}
    return to_json([(key, item) for key, item in payload.items() if item is not ...])


# --- the two verdicts -----------------------------------------------------------------------------


def schema_accepts(topic: str, value: bytes) -> bool:
    """What a producer's validator says: it reads the JSON (the last of a repeated key wins)."""
    return VALIDATORS[topic].is_valid(json.loads(value))


def service_accepts(topic: str, value: bytes) -> bool:
    return not isinstance(parse_record(topic, InputRecord(topic, 0, 0, None, value)), DeadLetter)


# --- what JSON Schema cannot say (docs/events.md, "The service also refuses") ---------------------

DUPLICATE_KEY = "a key given twice"
WHOLE_FLOAT = "a whole number written with a point or an exponent in an integer field"
OCCURRED_AT_OUT_OF_RANGE_IN_UTC = "an occurred_at the pattern allows, out of the range in UTC"
BIRTH_DATE_AFTER_OCCURRED_AT = "a birth_date after the date of occurred_at"
FEE_NOT_BELOW_AMOUNT = "a platform_fee not less than its amount"
TRAILING_LINE_FEED = "a value ending in a line feed where a pattern ends in $"
BEYOND_THE_SCHEMA = (
    DUPLICATE_KEY,
    WHOLE_FLOAT,
    OCCURRED_AT_OUT_OF_RANGE_IN_UTC,
    BIRTH_DATE_AFTER_OCCURRED_AT,
    FEE_NOT_BELOW_AMOUNT,
    TRAILING_LINE_FEED,
)


def _branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return list(schema.get("anyOf", [schema]))


def _moment(text: str) -> datetime:
    """An occurred_at that matches OCCURRED_AT_PATTERN, as an aware datetime."""
    normal = text[:10] + "T" + text[11:]
    if normal[-1] in "Zz":
        normal = normal[:-1] + "+00:00"
    return datetime.fromisoformat(normal)


def beyond_the_schema(topic: str, value: bytes) -> list[str]:
    """The rules JSON Schema cannot say that this record breaks."""
    found: list[str] = []
    pairs: Pairs = json.loads(value, object_pairs_hook=list)
    if len({key for key, _ in pairs}) < len(pairs):
        found.append(DUPLICATE_KEY)
    payload = dict(pairs)
    properties: dict[str, Any] = SCHEMAS[topic]["properties"]
    for key, item in payload.items():
        branches = _branches(properties.get(key, {}))
        if (
            isinstance(item, float)
            and item.is_integer()
            and any(branch.get("type") == "integer" for branch in branches)
        ):
            found.append(WHOLE_FLOAT)
        if (
            isinstance(item, str)
            and item.endswith("\n")
            and any("pattern" in branch for branch in branches)
        ):
            found.append(TRAILING_LINE_FEED)
    occurred_at = payload.get("occurred_at")
    occurred_ok = isinstance(occurred_at, str) and OCCURRED_AT_RE.fullmatch(occurred_at)
    if occurred_ok:
        assert isinstance(occurred_at, str)
        if not OCCURRED_AT_MIN <= _moment(occurred_at) <= OCCURRED_AT_MAX:
            found.append(OCCURRED_AT_OUT_OF_RANGE_IN_UTC)
        birth_date = payload.get("birth_date")
        if (
            topic == topics.CREATORS_UPDATED
            and isinstance(birth_date, str)
            and BIRTH_DATE_RE.fullmatch(birth_date)
            and birth_date > occurred_at[:10]
        ):
            found.append(BIRTH_DATE_AFTER_OCCURRED_AT)
    fee, amount = payload.get("platform_fee"), payload.get("amount")
    if (
        topic == topics.MARKETPLACE_PAID
        and isinstance(fee, int | float)
        and isinstance(amount, int | float)
        and not isinstance(fee, bool)
        and not isinstance(amount, bool)
        and fee >= amount
    ):
        found.append(FEE_NOT_BELOW_AMOUNT)
    return found


def assert_agreement(topic: str, value: bytes) -> tuple[bool, bool, list[str]]:
    """Both verdicts agree, or the record breaks a rule the schema cannot say and the service
    refuses it."""
    schema, service = schema_accepts(topic, value), service_accepts(topic, value)
    beyond = beyond_the_schema(topic, value)
    if beyond:
        assert not service, (topic, value, beyond, "the service must refuse it")
    else:
        assert schema == service, (topic, value, {"schema": schema, "service": service})
    return schema, service, beyond


# --- generated events -----------------------------------------------------------------------------

OFFSETS = ("Z", "z", "+00:00", "-00:00", "+01:00", "-01:00", "+05:30", "-08:00", "+23:59", "-23:59")
FRACTIONS = ("", ".5", ".511", ".123456", ".1234567", ".123456789", ".1234567890")
BAD_TIMESTAMPS: tuple[Any, ...] = (
    "1762000000",
    "1762000000000",
    "1762000000.5",
    "-1762000000",
    "0",
    1762000000,
    1762000000.5,
    "2026-11-01T17:00Z",
    "2026-11-01T17:00+01:00",
    "2026-11-01 17:00:00Z",
    "2026-11-01_17:00:00Z",
    "2026-11-03T18:25:43",
    "2026-11-03T18:25:43+0100",
    "2026-11-03T18:25:43+01",
    "2026-11-03T18:25:43,5Z",
    "2026-11-03T18:25:43.Z",
    "2026-11-03T18:25:43Z ",
    " 2026-11-03T18:25:43Z",
    "2026-11-03T18:25:43Z\n",
    "2026-11-03T24:00:00Z",
    "2026-12-31T23:59:60Z",
    "2026-11-03T18:25:43+24:00",
    "2026-02-29T00:00:00Z",
    "2100-02-29T00:00:00Z",
    "2026-04-31T00:00:00Z",
    "2026-11-3T18:25:43Z",
    "20261103T182543Z",
    "1999-06-01T00:00:00Z",
    "3000-06-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    "2026-11-03",
    "",
    None,
)
EDGE_TIMESTAMPS = (
    "2000-01-01T00:00:00Z",
    "2000-01-01T00:30:00+01:00",
    "1999-12-31T23:00:00-02:00",
    "1999-12-31T23:00:00Z",
    "2999-12-31T23:59:59Z",
    "2999-12-31T23:59:59.999999999Z",
    "2999-12-31T23:30:00-01:00",
    "3000-01-01T00:30:00+01:00",
    "3000-01-01T00:30:00Z",
    "2024-02-29T12:00:00Z",
    "2000-02-29T12:00:00Z",
    "2400-02-29T12:00:00z",
    "2026-11-03t18:25:43.511z",
)


def _stamp(moment: datetime, separator: str, fraction: str, offset: str) -> str:
    return moment.strftime("%Y-%m-%d") + separator + moment.strftime("%H:%M:%S") + fraction + offset


timestamps = st.one_of(
    st.builds(
        _stamp,
        st.datetimes(min_value=datetime(1999, 12, 30), max_value=datetime(3000, 1, 2)),
        st.sampled_from(["T", "T", "t", " "]),
        st.sampled_from(FRACTIONS),
        st.sampled_from(OFFSETS),
    ),
    st.sampled_from(EDGE_TIMESTAMPS),
    st.sampled_from(BAD_TIMESTAMPS),
)
birth_dates = st.one_of(
    st.dates(min_value=datetime(1899, 12, 25).date(), max_value=datetime(3000, 1, 3).date()).map(
        lambda day: day.isoformat()
    ),
    st.sampled_from(
        [
            "0",
            "86400",
            "1762000000",
            "1998-4-17",
            "19980417",
            "1998-02-29",
            "2000-02-29",
            "1900-02-29",
            "1899-12-31",
            "1900-01-01",
            "3000-01-01",
            "3000-01-02",
            "1998-04-17T00:00:00Z",
            "1998-04-17\n",
            "1998-04-17 ",
            19980417,
        ]
    ),
)
visible_text = st.text(alphabet=hs.VISIBLE_ASCII, min_size=1, max_size=128)
odd_strings = st.sampled_from(
    ["", " ", "a b", "a\n", "\n", "a\tb", "x" * 128, "x" * 129, "é", "a\u0000b", "\u202eabc"]
)
digit_strings = st.text(alphabet="0123456789", min_size=1, max_size=20)


def _written(number: int) -> st.SearchStrategy[Any]:
    """`number` as JSON writes it, or as a producer using floats would write it."""
    return st.one_of(
        st.just(number),
        st.sampled_from([f"{number}.0", f"{number}e0", f"{number}E0", f"{number}.000"]).map(Number),
        st.just(Number(f"{number}.5")),
    )


def integers_for(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    low, high = schema.get("minimum", -(2**63)), schema.get("maximum", 2**63)
    numbers = st.one_of(
        st.integers(low - 2, low + 2),
        st.integers(high - 2, high + 2),
        st.integers(low, high),
        st.sampled_from([0, -1, 1, DIAMOND_CASHOUT_MAX, DIAMOND_CASHOUT_MAX + 1, 2**63, 10**30]),
    )
    return st.one_of(numbers.flatmap(_written), st.sampled_from([Number("-0.0"), Number("0e0")]))


def values_for(name: str, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values for one field: right ones, wrong ones, and right ones written wrongly."""
    if name == "occurred_at":
        return timestamps
    if name == "birth_date":
        return birth_dates
    branches = [branch for branch in _branches(schema) if branch.get("type") != "null"]
    branch = branches[0] if branches else {}
    kinds: list[st.SearchStrategy[Any]] = [st.sampled_from([None, True, False, "5", [], {}, 1.5])]
    if "enum" in branch:
        kinds.append(st.sampled_from([*branch["enum"], "other", branch["enum"][0].lower()]))
    elif branch.get("type") == "integer":
        kinds.append(integers_for(branch))
    elif branch.get("type") == "boolean":
        kinds.append(st.sampled_from([True, False, 0, 1, "true"]))
    elif name == "period":
        kinds.append(st.sampled_from(["2026-11", "0000-01", "2026-13", "2026-1", "2026-11\n"]))
    elif name == "country":
        kinds.append(st.sampled_from(["US", "FR", "us", "USA", "U", "US\n"]))
    else:
        kinds += [visible_text, odd_strings, digit_strings, visible_text.map(lambda t: t + "\n")]
    return st.one_of(*kinds)


ABSENT = object()  # a field left out


def _maybe(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(ABSENT), st.none(), values)


ids = st.sampled_from(["v-1", "live-1"])
near_diamond_max = st.one_of(
    st.integers(DIAMOND_CASHOUT_MAX - 2, DIAMOND_CASHOUT_MAX + 2),
    st.sampled_from([1, AMOUNT_MAX]),
)
# Changes to fields that a rule across fields ties together, so that the rule is near its edge.
TIED_FIELDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    topics.GIFTS_SENT: st.fixed_dictionaries(
        {
            "surface": st.sampled_from(["video", "live"]),
            "video_id": _maybe(ids),
            "live_id": _maybe(ids),
        }
    ),
    topics.CASHOUTS_REQUESTED: st.fixed_dictionaries(
        {
            "asset": st.sampled_from(["DIAMOND", "DIAMOND", "USD", "JPY"]),
            "amount": near_diamond_max.flatmap(_written),
        }
    ),
    topics.PAYOUTS_UPDATED: st.fixed_dictionaries(
        {
            "status": st.sampled_from(["paid", "failed", "returned"]),
            "failure_code": _maybe(st.sampled_from(["R01", "AC04"])),
        }
    ),
    topics.CREATORS_UPDATED: st.fixed_dictionaries(
        {
            "payout_account_ref": _maybe(
                st.one_of(digit_strings, visible_text, digit_strings.map(lambda t: t + "-x"))
            ),
            "birth_date": st.one_of(
                st.sampled_from(["2026-11-02", "2026-11-03", "2026-11-04"]), birth_dates
            ),
            "occurred_at": st.sampled_from(
                ["2026-11-03T23:30:00-01:00", "2026-11-03T00:30:00+01:00", "2026-11-03T12:00:00Z"]
            ),
        }
    ),
    topics.MARKETPLACE_PAID: st.integers(1, AMOUNT_MAX).flatmap(
        lambda amount: st.fixed_dictionaries(
            {"amount": st.just(amount), "platform_fee": st.integers(amount - 1, amount + 1)}
        )
    ),
}


@st.composite
def records(draw: st.DrawFn, topic: str) -> bytes:
    """A valid event of `topic`, maybe changed: fields tied by a rule set near its edge, fields
    set, dropped or added, one key repeated."""
    event_ = draw(hs.valid_event(topic, draw(hs.fresh_id("c"))))
    if draw(st.booleans()):
        event_["occurred_at"] = draw(timestamps)
    if topic in TIED_FIELDS and draw(st.booleans()):
        for name, item in draw(TIED_FIELDS[topic]).items():
            event_[name] = item
        event_ = {name: item for name, item in event_.items() if item is not ABSENT}
    properties: dict[str, Any] = SCHEMAS[topic]["properties"]
    names = sorted(properties)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["set", "set", "set", "drop", "extra"]))
        name = draw(st.sampled_from(names))
        if kind == "set":
            event_[name] = draw(values_for(name, properties[name]))
        elif kind == "drop":
            event_.pop(name, None)
        else:
            event_[draw(st.sampled_from(["note", "Event_Id", "amount ", ""]))] = 1
    pairs: Pairs = list(event_.items())
    if pairs and draw(st.integers(0, 9)) == 0:
        key, item = draw(st.sampled_from(pairs))
        again = draw(st.one_of(st.just(item), values_for(key, properties.get(key, {}))))
        pairs.append((key, again))
    return to_json(pairs)


@pytest.mark.parametrize("topic", topics.CONSUMED_TOPICS)
@settings(
    max_examples=250,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_the_schema_and_the_service_give_every_generated_event_the_same_verdict(
    topic: str, data: st.DataObject
) -> None:
    value = data.draw(records(topic), label="record")
    schema, service, beyond = assert_agreement(topic, value)
    event(
        f"schema {'accepts' if schema else 'refuses'},"
        f" service {'accepts' if service else 'refuses'}"
    )
    for name in beyond:
        event(f"beyond the schema: {name}")


# --- the cases of the issue, one by one -----------------------------------------------------------


def verdicts(topic: str, value: bytes) -> tuple[bool, bool]:
    return schema_accepts(topic, value), service_accepts(topic, value)


@pytest.mark.parametrize("topic", topics.CONSUMED_TOPICS)
def test_every_valid_example_is_accepted_by_both(topic: str) -> None:
    assert verdicts(topic, example(topic)) == (True, True)


@pytest.mark.parametrize("topic", topics.CONSUMED_TOPICS)
def test_every_exported_schema_is_a_valid_draft_2020_12_schema(topic: str) -> None:
    Draft202012Validator.check_schema(SCHEMAS[topic])


@pytest.mark.parametrize(
    "occurred_at",
    [
        "1762000000",
        "1762000000000",
        "2026-11-01T17:00Z",
        "2026-11-01 17:00:00Z",
        "2026-11-01_17:00:00Z",
        "2026-11-03T18:25:43+0100",
        "2026-11-03T18:25:43,5Z",
        "2026-11-03T18:25:43.1234567890Z",
        "2026-02-29T00:00:00Z",
        "1999-06-01T00:00:00Z",
        "3000-06-01T00:00:00Z",
    ],
)
def test_a_timestamp_outside_the_contract_is_refused_by_both(occurred_at: str) -> None:
    assert verdicts(topics.GIFTS_SENT, example(topics.GIFTS_SENT, occurred_at=occurred_at)) == (
        False,
        False,
    )


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2026-11-01T17:00:00Z",
        "2026-11-01t17:00:00z",
        "2026-11-01T17:00:00.123456789-08:00",
        "2024-02-29T00:00:00+00:00",
        "2000-01-01T00:00:00Z",
        "1999-12-31T23:00:00-02:00",
        "2999-12-31T23:59:59.999999Z",
        "3000-01-01T00:30:00+01:00",
    ],
)
def test_a_timestamp_in_the_contract_is_accepted_by_both(occurred_at: str) -> None:
    assert verdicts(topics.GIFTS_SENT, example(topics.GIFTS_SENT, occurred_at=occurred_at)) == (
        True,
        True,
    )


def test_digits_after_the_sixth_of_a_second_are_dropped_not_refused() -> None:
    outcome = parse_record(
        topics.GIFTS_SENT,
        InputRecord(
            topics.GIFTS_SENT,
            0,
            0,
            None,
            example(topics.GIFTS_SENT, occurred_at="2026-11-01T17:00:00.123456789Z"),
        ),
    )
    assert not isinstance(outcome, DeadLetter)
    assert outcome.event.occurred_at == datetime(2026, 11, 1, 17, 0, 0, 123456, tzinfo=UTC)


def test_a_live_gift_without_live_id_is_refused_by_both() -> None:
    value = example(topics.GIFTS_SENT, live_id=...)
    assert verdicts(topics.GIFTS_SENT, value) == (False, False)


def test_a_video_gift_with_both_ids_is_refused_by_both() -> None:
    value = example(topics.GIFTS_SENT, surface="video", video_id="video-7731")
    assert verdicts(topics.GIFTS_SENT, value) == (False, False)


def test_a_video_gift_with_its_video_id_and_a_null_live_id_is_accepted_by_both() -> None:
    value = example(topics.GIFTS_SENT, surface="video", video_id="video-7731", live_id=None)
    assert verdicts(topics.GIFTS_SENT, value) == (True, True)


def test_a_raw_account_number_as_payout_account_ref_is_refused_by_both() -> None:
    value = example(topics.CREATORS_UPDATED, payout_account_ref="000123456789")
    assert verdicts(topics.CREATORS_UPDATED, value) == (False, False)
    value = example(topics.CREATORS_UPDATED, payout_account_ref="0001-23456789")
    assert verdicts(topics.CREATORS_UPDATED, value) == (True, True)


@pytest.mark.parametrize("birth_date", ["1899-12-31", "0", "1998-4-17", "1900-02-29"])
def test_a_birth_date_outside_the_contract_is_refused_by_both(birth_date: str) -> None:
    value = example(topics.CREATORS_UPDATED, birth_date=birth_date)
    assert verdicts(topics.CREATORS_UPDATED, value) == (False, False)


@pytest.mark.parametrize(
    ("asset", "amount", "accepted"),
    [
        ("DIAMOND", DIAMOND_CASHOUT_MAX, True),
        ("DIAMOND", DIAMOND_CASHOUT_MAX + 1, False),
        ("USD", DIAMOND_CASHOUT_MAX + 1, True),
    ],
)
def test_a_diamond_cashout_is_at_most_a_billion_diamonds_for_both(
    asset: str, amount: int, accepted: bool
) -> None:
    value = example(topics.CASHOUTS_REQUESTED, asset=asset, amount=amount)
    assert verdicts(topics.CASHOUTS_REQUESTED, value) == (accepted, accepted)


@pytest.mark.parametrize(
    ("status", "failure_code", "accepted"),
    [("paid", ..., True), ("paid", "R01", False), ("failed", ..., False), ("failed", None, False)],
)
def test_a_payout_update_carries_a_failure_code_exactly_when_it_failed_for_both(
    status: str, failure_code: Any, accepted: bool
) -> None:
    value = example(topics.PAYOUTS_UPDATED, status=status, failure_code=failure_code)
    assert verdicts(topics.PAYOUTS_UPDATED, value) == (accepted, accepted)


# --- what the schema cannot say: the schema accepts, the service refuses --------------------------

BEYOND_EXAMPLES: list[tuple[str, str, bytes]] = [
    (WHOLE_FLOAT, topics.GIFTS_SENT, example(topics.GIFTS_SENT, coins=Number("3.0"))),
    (WHOLE_FLOAT, topics.GIFTS_SENT, example(topics.GIFTS_SENT, count=Number("1e0"))),
    (
        WHOLE_FLOAT,
        topics.TIPS_RECEIVED,
        example(topics.TIPS_RECEIVED, processor_fee=Number("-0.0")),
    ),
    (
        DUPLICATE_KEY,
        topics.GIFTS_SENT,
        example(topics.GIFTS_SENT)[:-1] + b', "coins": 2}',
    ),
    (
        OCCURRED_AT_OUT_OF_RANGE_IN_UTC,
        topics.GIFTS_SENT,
        example(topics.GIFTS_SENT, occurred_at="2000-01-01T00:30:00+01:00"),
    ),
    (
        OCCURRED_AT_OUT_OF_RANGE_IN_UTC,
        topics.GIFTS_SENT,
        example(topics.GIFTS_SENT, occurred_at="2999-12-31T23:30:00-01:00"),
    ),
    (
        BIRTH_DATE_AFTER_OCCURRED_AT,
        topics.CREATORS_UPDATED,
        example(topics.CREATORS_UPDATED, birth_date="2026-11-04"),
    ),
    (
        FEE_NOT_BELOW_AMOUNT,
        topics.MARKETPLACE_PAID,
        example(topics.MARKETPLACE_PAID, platform_fee=150000),
    ),
    (TRAILING_LINE_FEED, topics.GIFTS_SENT, example(topics.GIFTS_SENT, event_id="gift-1\n")),
    (
        TRAILING_LINE_FEED,
        topics.GIFTS_SENT,
        example(topics.GIFTS_SENT, occurred_at="2026-11-03T18:25:43Z\n"),
    ),
]


@pytest.mark.parametrize(
    ("case", "topic", "value"), BEYOND_EXAMPLES, ids=[case for case, _, _ in BEYOND_EXAMPLES]
)
def test_a_rule_the_schema_cannot_say_is_still_applied_by_the_service(
    case: str, topic: str, value: bytes
) -> None:
    assert verdicts(topic, value) == (True, False)
    assert beyond_the_schema(topic, value) == [case]


def test_every_rule_the_schema_cannot_say_has_an_example() -> None:
    assert {case for case, _, _ in BEYOND_EXAMPLES} == set(BEYOND_THE_SCHEMA)


def test_the_events_page_lists_what_the_service_also_refuses() -> None:
    page = events_markdown()
    assert "**The service also refuses**" in page
    for phrase in ["a key given twice", "`3.0`, `1e0`", "`2000-01-01T00:30:00+01:00`"]:
        assert phrase in page
    for phrase in ["`birth_date` after", "`platform_fee` not less than", "line feed"]:
        assert phrase in page


def test_the_occurred_at_pattern_is_the_one_the_service_applies() -> None:
    """Every spelling of the generated and listed timestamps: the pattern (with the bounds in
    UTC) accepts exactly what the service's model accepts."""
    model: Callable[[bytes], Any] = CONSUMED_EVENT_MODELS[topics.GIFTS_SENT].model_validate_json
    base = datetime(2026, 11, 3, 18, 25, 43)
    spellings = [*BAD_TIMESTAMPS, *EDGE_TIMESTAMPS]
    spellings += [
        _stamp(base + timedelta(days=day), separator, fraction, offset)
        for day in (0, 100)
        for separator in ("T", "t", " ", "_")
        for fraction in FRACTIONS
        for offset in OFFSETS
    ]
    for occurred_at in spellings:
        value = example(topics.GIFTS_SENT, occurred_at=occurred_at)
        by_pattern = isinstance(occurred_at, str) and bool(OCCURRED_AT_RE.fullmatch(occurred_at))
        if by_pattern:
            assert isinstance(occurred_at, str)
            by_pattern = OCCURRED_AT_MIN <= _moment(occurred_at) <= OCCURRED_AT_MAX
        try:
            model(value)
        except ValueError:
            accepted = False
        else:
            accepted = True
        assert accepted == by_pattern, occurred_at
