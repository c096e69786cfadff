"""Transfer ids: time-ordered ones (UUID version 7 layout, ordered by their timestamp), the
name-based ids of events' legs, and both at once (`timed_transfer_id`)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.ids import (
    TAIL_BITS,
    TRANSFER_ID_NAMESPACE,
    UNIX_MS_MAX,
    time_ordered_id,
    timed_transfer_id,
    transfer_id,
    unix_ms_of,
)

unix_ms = st.integers(min_value=0, max_value=UNIX_MS_MAX)
tails = st.integers(min_value=0, max_value=2**TAIL_BITS - 1)


@given(unix_ms, tails)
def test_the_id_is_a_version_7_uuid_carrying_its_timestamp_and_tail(ms: int, tail: int) -> None:
    value = time_ordered_id(ms, tail)
    assert value.version == 7
    assert value.variant == "specified in RFC 4122"
    assert value.int >> 80 == ms
    rand_a = (value.int >> 64) & 0xFFF
    rand_b = value.int & (2**62 - 1)
    assert (rand_a << 62) | rand_b == tail


@given(unix_ms, unix_ms, tails, tails)
def test_ids_sort_by_their_timestamp(ms_a: int, ms_b: int, tail_a: int, tail_b: int) -> None:
    if ms_a < ms_b:
        assert time_ordered_id(ms_a, tail_a) < time_ordered_id(ms_b, tail_b)


def test_a_timestamp_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        time_ordered_id(UNIX_MS_MAX + 1, 0)
    with pytest.raises(ValueError, match="outside"):
        time_ordered_id(-1, 0)


@given(st.text(max_size=40), st.text(max_size=140), st.text(max_size=20))
def test_an_event_leg_id_is_the_uuid5_of_its_topic_event_and_leg(
    topic: str, event_id: str, leg: str
) -> None:
    expected = uuid.uuid5(TRANSFER_ID_NAMESPACE, f"{topic}\x1f{event_id}\x1f{leg}")
    derived = transfer_id(topic, event_id, leg)
    assert isinstance(derived, uuid.UUID)
    assert derived == expected
    assert (str(derived), derived.int, derived.bytes) == (
        str(expected),
        expected.int,
        expected.bytes,
    )
    assert hash(derived) == hash(expected)


# Time-ordered ids of events' legs.

occurred = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2999, 12, 31),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-8)), timezone(timedelta(hours=5))]),
)
event_ids = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128
)


@given(st.text(max_size=40), event_ids, st.text(max_size=20), occurred)
def test_the_same_event_leg_gives_the_same_timed_id(
    topic: str, event_id: str, leg: str, occurred_at: datetime
) -> None:
    first = timed_transfer_id(topic, event_id, leg, occurred_at)
    same_moment_elsewhere = occurred_at.astimezone(timezone(timedelta(hours=9)))
    again = timed_transfer_id(topic, event_id, leg, same_moment_elsewhere)
    assert isinstance(first, uuid.UUID)
    assert first == again
    assert (str(first), first.int, first.bytes, hash(first)) == (
        str(again),
        again.int,
        again.bytes,
        hash(again),
    )


@given(st.text(max_size=40), event_ids, st.text(max_size=20), occurred)
def test_a_timed_id_is_version_7_with_the_events_millisecond_and_its_name_hash(
    topic: str, event_id: str, leg: str, occurred_at: datetime
) -> None:
    value = timed_transfer_id(topic, event_id, leg, occurred_at)
    assert value.version == 7
    assert value.variant == "specified in RFC 4122"
    since_epoch = occurred_at - datetime(1970, 1, 1, tzinfo=UTC)
    assert value.int >> 80 == since_epoch // timedelta(milliseconds=1)
    name = f"{topic}\x1f{event_id}\x1f{leg}".encode()
    digest = hashlib.sha1(TRANSFER_ID_NAMESPACE.bytes + name, usedforsecurity=False).digest()
    tail = int.from_bytes(digest[:10], "big") >> (80 - TAIL_BITS)
    assert value == time_ordered_id(value.int >> 80, tail)


@given(event_ids, event_ids, occurred, occurred)
def test_a_later_millisecond_sorts_after_whatever_the_event(
    event_a: str, event_b: str, occurred_a: datetime, occurred_b: datetime
) -> None:
    ms_a = unix_ms_of(occurred_a)
    ms_b = unix_ms_of(occurred_b)
    id_a = timed_transfer_id("gifts.sent", event_a, "diamonds", occurred_a)
    id_b = timed_transfer_id("gifts.sent", event_b, "diamonds", occurred_b)
    if ms_a < ms_b:
        assert id_a < id_b
        assert str(id_a) < str(id_b)  # as text too, as PostgreSQL's uuid order has it
    elif ms_b < ms_a:
        assert id_b < id_a


@given(
    st.lists(st.tuples(event_ids, st.sampled_from(["diamonds", "coins"])), unique=True), occurred
)
def test_distinct_event_legs_get_distinct_timed_ids_even_in_one_millisecond(
    legs: list[tuple[str, str]], occurred_at: datetime
) -> None:
    ids = {timed_transfer_id("gifts.sent", event_id, leg, occurred_at) for event_id, leg in legs}
    assert len(ids) == len(legs)


def test_distinct_events_of_one_millisecond_differ_in_74_bits_of_their_hash() -> None:
    occurred_at = datetime(2026, 11, 3, 18, 25, 43, 511_000, tzinfo=UTC)
    values = [
        timed_transfer_id("gifts.sent", f"gift-{n}", "diamonds", occurred_at).int
        for n in range(20_000)
    ]
    assert len(set(values)) == len(values)
    assert {value >> 80 for value in values} == {unix_ms_of(occurred_at)}
    # Every one of the 74 bits below the timestamp but the version and the variant varies.
    varying = 0
    for value in values[1:]:
        varying |= value ^ values[0]
    version_and_variant = (0xF << 76) | (0b11 << 62)
    assert varying == (2**80 - 1) & ~version_and_variant


def test_a_moment_without_a_timezone_is_refused() -> None:
    with pytest.raises(ValueError, match="no timezone"):
        timed_transfer_id("gifts.sent", "gift-1", "diamonds", datetime(2026, 11, 3))


def test_milliseconds_round_down() -> None:
    assert unix_ms_of(datetime(1970, 1, 1, 0, 0, 0, 999, tzinfo=UTC)) == 0
    assert unix_ms_of(datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)) == -1
    assert unix_ms_of(datetime(2026, 11, 3, 18, 25, 43, 511_999, tzinfo=UTC)) == 1_793_730_343_511
    eastern = timezone(timedelta(hours=-5))
    assert unix_ms_of(datetime(2026, 11, 3, 13, 25, 43, 511_000, tzinfo=eastern)) == (
        1_793_730_343_511
    )
