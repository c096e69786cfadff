"""Transfer ids: time-ordered ones (UUID version 7 layout, ordered by their timestamp) and the
name-based ids of events' legs."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.ids import TAIL_BITS, TRANSFER_ID_NAMESPACE, UNIX_MS_MAX, time_ordered_id, transfer_id

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
